"""Hooks into escrow.services.transition_listeners and settlement_failed_listeners, the trade
chat's message_listeners, marketplace's offer_closed_listeners and price_stale_listeners, and
lending's event, margin-call and liquidation-blocked listeners (each called on commit)."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from disputes.services import party_notice_listeners
from escrow.models import EscrowEvent, Settlement, TradeMessage
from escrow.services import settlement_failed_listeners, transition_listeners
from escrow.services.room import message_listeners
from ledger import alerts as ledger_alerts
from lending.models import Loan, LoanDispute, LoanEvent
from lending.services import disputes as lending_dispute_hooks
from lending.services import transitions as lending_hooks
from marketplace.models import Offer, PriceIndex
from marketplace.services import offer_closed_listeners, price_stale_listeners

logger = logging.getLogger(__name__)


def on_trade_transitions(events: list[EscrowEvent]) -> None:
    # Runs after the transaction committed, in the caller's request or task (one move, or a
    # settlement batch): whatever goes wrong here is logged, never raised into moves that
    # already happened. The news (notifications, email, webhooks) is the worker's, in batches:
    # the events are its promise (EscrowEvent.announced; a sweeper writes what a lost message
    # never did). One move (a user's request) has its live event sent at once, and its news
    # merged with that of the process's other requests; a settlement batch is one task, which
    # sends its live events after its news (inline if the broker cannot take it).
    from notifications import tasks
    from notifications.live import listeners as live

    if len(events) == 1:
        live.on_trade_transitions(events)
        _announce_later([events[0].pk])
        return
    try:
        if _queued(events):
            return
        tasks.notify_trade_events([e.pk for e in events])
    except Exception:
        first = events[0] if events else None
        logger.exception(
            "notifications for trade #%s (%s) and %s other move(s) failed",
            getattr(first, "trade_id", None),
            getattr(first, "new_state", None),
            max(len(events) - 1, 0),
        )


def _announce_later(event_ids: list[int]) -> None:
    """The news of a request's move, to the worker (merged with the process's other requests');
    never raises, never waits on the broker (common.outbox; the sweeper has what it drops)."""
    from common.outbox import publish_after_commit
    from notifications import tasks

    publish_after_commit(tasks.announce_trade_moves, event_ids)


def _queued(events: list[EscrowEvent]) -> bool:
    from notifications.tasks import notify_trade_events

    try:
        notify_trade_events.apply_async(([e.pk for e in events],), retry=False)
    except Exception:
        logger.warning("could not queue notifications of %s moves", len(events), exc_info=True)
        return False
    return True


if on_trade_transitions not in transition_listeners:
    transition_listeners.append(on_trade_transitions)


def on_settlements_failed(settlements: list[Settlement]) -> None:
    """Settlements that have just become failed: the parties and the moderators are told, once.
    Inline (a failure is rare, and a lost broker message would lose the news)."""
    from notifications.services import notify_settlement_failed

    try:
        notify_settlement_failed(settlement_ids=[s.pk for s in settlements])
    except Exception:
        logger.exception(
            "notifications about failed settlements %s failed", [s.pk for s in settlements]
        )


if on_settlements_failed not in settlement_failed_listeners:
    settlement_failed_listeners.append(on_settlements_failed)


def on_trade_message(message: TradeMessage) -> None:
    """A chat message tells the other party: in-app, and by email or Telegram only if they
    asked for chat there (notifications.preferences; off by default)."""
    from notifications import services

    try:
        who = (
            "A moderator"
            if message.is_moderator
            else (message.sender.username if message.sender else "System")
        )
        text = f"{who} wrote in trade #{message.trade_id}: {message.text[:200] or 'an attachment'}"
        services.notify_parties(
            trade=message.trade,
            text=text,
            kind="message",
            except_user_id=message.sender_id,
            coalesce=True,
            email=True,
        )
    except Exception:
        logger.exception("notifying about message %s failed", message.pk)


if on_trade_message not in message_listeners:
    message_listeners.append(on_trade_message)


def on_dispute_notice(**notice: object) -> None:
    from notifications.services import notify_parties

    notify_parties(**notice)  # type: ignore[arg-type]


party_notice_listeners.append(on_dispute_notice)


def on_offer_closed(offer: Offer) -> None:
    """An offer the platform closed (too little left to take): its maker is told."""
    from notifications.services import notify_offer_closed

    try:
        notify_offer_closed(offer_id=offer.pk)
    except Exception:
        logger.exception("telling the maker that offer #%s closed failed", offer.pk)


if on_offer_closed not in offer_closed_listeners:
    offer_closed_listeners.append(on_offer_closed)


def on_price_stale(price: PriceIndex, stale: bool) -> None:
    """A pair's price went stale (once per episode: the moderators' alert) or recovered."""
    from notifications.services import notify_moderators_price

    # Lazy: written out in each moderator's language. The stale reason is the feed's own
    # diagnostic (source names and errors), kept as it is.
    pair = f"{price.asset.code}/{price.fiat.code}"
    subject: Any
    text: Any
    if stale:
        subject = format_lazy(_("Price alert: {pair} is stale"), pair=pair)
        text = format_lazy(
            _(
                "The {pair} price is stale: {reason}. Its floating offers are out of the order "
                "book and liquidations on it are paused until a fresh price comes in. Check the "
                "price sources (PRICE_SOURCES), or set the price in the admin: "
                "/admin/marketplace/priceindex/"
            ),
            pair=pair,
            reason=price.stale_reason or _("no current price"),
        )
    else:
        subject = format_lazy(_("Price recovered: {pair}"), pair=pair)
        text = format_lazy(
            _("The {pair} price is current again ({price} from {source})."),
            pair=pair,
            price=price.price,
            source=price.source,
        )
    try:
        notify_moderators_price(text=text, subject=subject)
    except Exception:
        logger.exception(
            "telling moderators that %s is %s failed", pair, "stale" if stale else "ok"
        )


if on_price_stale not in price_stale_listeners:
    price_stale_listeners.append(on_price_stale)


# --- loans (lending) ---------------------------------------------------------------------------
# Each logs its own failure: a loan move that committed is never undone by its news.


def on_loan_events(events: list[LoanEvent]) -> None:
    from notifications.loans import notify_loan_events

    try:
        notify_loan_events(events=events)
    except Exception:
        logger.exception("notifications about loan events %s failed", [e.pk for e in events])


def on_margin_call(calls: list[tuple[Loan, Decimal]]) -> None:
    from notifications.loans import notify_margin_calls

    try:
        notify_margin_calls(calls=[(loan.pk, ltv) for loan, ltv in calls])
    except Exception:
        logger.exception("margin call notifications for %s loan(s) failed", len(calls))


def on_liquidation_blocked(loan: Loan, why: str) -> None:
    from notifications.loans import notify_liquidation_blocked
    from notifications.services import _moderators

    try:
        notify_liquidation_blocked(loan_id=loan.pk, why=why, moderators=_moderators())
    except Exception:
        logger.exception("telling moderators that loan #%s can't be liquidated failed", loan.pk)


def on_loan_dispute(dispute: LoanDispute, news: str) -> None:
    from notifications.loans import notify_loan_dispute
    from notifications.services import _moderators

    try:
        notify_loan_dispute(dispute=dispute, news=news, moderators=_moderators())
    except Exception:
        logger.exception("notifications about loan dispute #%s (%s) failed", dispute.pk, news)


if on_loan_dispute not in lending_dispute_hooks.dispute_listeners:
    lending_dispute_hooks.dispute_listeners.append(on_loan_dispute)
if on_loan_events not in lending_hooks.event_listeners:
    lending_hooks.event_listeners.append(on_loan_events)
if on_margin_call not in lending_hooks.margin_call_listeners:
    lending_hooks.margin_call_listeners.append(on_margin_call)
if on_liquidation_blocked not in lending_hooks.liquidation_blocked_listeners:
    lending_hooks.liquidation_blocked_listeners.append(on_liquidation_blocked)


def on_moderator_alert(*, key: str, text: Any) -> None:
    from notifications.services import notify_moderators_funds

    notify_moderators_funds(text=text)


def on_funds_news(*, user_id: int, text: Any) -> None:
    from notifications.services import notify_user_funds

    notify_user_funds(user_id=user_id, text=text)


if on_moderator_alert not in ledger_alerts.moderator_alert_listeners:
    ledger_alerts.moderator_alert_listeners.append(on_moderator_alert)
if on_funds_news not in ledger_alerts.funds_news_listeners:
    ledger_alerts.funds_news_listeners.append(on_funds_news)
