from django.apps import AppConfig


class EscrowConfig(AppConfig):
    name = "escrow"

    def ready(self) -> None:
        # The order book (marketplace, a layer below) shows makers' stats and checks offers'
        # requirements with figures counted from trades, which escrow owns.
        from accounts import selectors as accounts
        from escrow.selectors import stats
        from marketplace import selectors as market

        market.trader_figures_register(
            stats_fresh=stats.trader_stats_for_users,
            stats_recent=stats.trader_stats_recent,
            taker_facts=stats.taker_facts,
        )
        # The settings page (accounts) shows how much of the 30-day limit trades used.
        accounts.trade_volume_reader_register(stats.trade_volume_eur)
