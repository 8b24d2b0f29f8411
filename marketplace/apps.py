from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"

    def ready(self) -> None:
        # The wallet (ledger, a layer below) shows balances' approximate fiat value at the
        # index, which marketplace owns.
        from ledger import selectors as ledger
        from marketplace import selectors

        ledger.wallet_valuer_register(selectors.asset_values, selectors.active_fiat_codes)
