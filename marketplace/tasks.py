"""Periodic work of the marketplace: the sweep that closes offers too small to take, and the price
feed."""

from __future__ import annotations

from celery import shared_task

from marketplace import services


@shared_task(acks_late=True)
def close_dust_offers() -> int:
    """Close every active offer whose remainder can't cover its minimum at today's price (a take
    closes its own offer at once; this catches price moves and offers from before the rule)."""
    return services.offers_close_dust()


@shared_task(acks_late=True)
def refresh_prices() -> dict[str, int]:
    """The price feed (PRICE_SOURCES; beat, every PRICE_POLL_SECONDS): price every pair at the
    sources' median, mark stale the pairs it can't, prune the history."""
    return services.prices_refresh()
