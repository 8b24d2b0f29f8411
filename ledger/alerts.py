"""News of money moving on the chain, for the layers above the ledger: alerts for moderators (a
hot wallet too low to pay withdrawals, a reserve shortfall) and a user's own funds news (a
deposit seen or credited, a withdrawal sent). notifications registers the listeners in its
AppConfig.ready(); they run after the transaction commits, and a failing listener is logged,
never raised into the move that happened."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.cache import cache
from django.db import transaction
from django.utils.functional import Promise

logger = logging.getLogger(__name__)

# Each is called with key= (what the alert is about, stable: "hot-wallet-low:ETH") and text=:
# a lazy translation (format_lazy of a gettext_lazy), written out in each recipient's language
# by the listener (notifications.email.in_language), or a plain str.
moderator_alert_listeners: list[Callable[..., None]] = []
# Each is called with user_id= and text=.
funds_news_listeners: list[Callable[..., None]] = []


def moderators_alert(*, key: str, text: str | Promise, every_seconds: int = 3600) -> bool:
    """Tell the moderators, at most once per `every_seconds` for the same key (a condition that
    lasts is not re-announced on every run of the task that finds it). True if sent."""
    if not cache.add(f"ledger-alert:{key}", 1, timeout=every_seconds):
        return False
    transaction.on_commit(lambda: _call(moderator_alert_listeners, key=key, text=text))
    return True


def moderators_alert_clear(*, key: str) -> None:
    """The condition is over: the next time it happens it is announced at once."""
    cache.delete(f"ledger-alert:{key}")


def user_funds_news(*, user_id: int, text: str | Promise) -> None:
    transaction.on_commit(lambda: _call(funds_news_listeners, user_id=user_id, text=text))


def _call(listeners: list[Callable[..., None]], **kwargs: object) -> None:
    for listener in listeners:
        try:
            listener(**kwargs)
        except Exception:
            logger.exception("ledger news listener %r failed", listener)
