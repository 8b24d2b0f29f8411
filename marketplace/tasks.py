"""Periodic work of the marketplace: the sweep that closes offers too small to take."""

from __future__ import annotations

from celery import shared_task

from marketplace import services


@shared_task(acks_late=True)
def close_dust_offers() -> int:
    """Close every active offer whose remainder can't cover its minimum at today's price (a take
    closes its own offer at once; this catches price moves and offers from before the rule)."""
    return services.offers_close_dust()
