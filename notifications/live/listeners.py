"""On-commit hooks that turn news into live events (events.publish). Imported by
NotificationsConfig.ready() after notifications.listeners, so on one commit the in-app
notification is written before the socket says so. Each hook logs its own failure: a move that
committed is never undone by its push.

Who gets a trade's events: its buyer and seller, and the moderator its dispute is assigned to
(no other moderator: they reach a trade only through an assigned dispute). A loan's: its
borrower and lenders. A notification's: its owner."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.contrib.auth.signals import user_logged_out
from django.db import transaction

from accounts.services import revocation
from disputes.models import Dispute
from escrow.models import EscrowEvent, Trade, TradeMessage
from escrow.services import announced_trades
from escrow.services.room import message_listeners
from lending.models import Loan, LoanEvent
from lending.selectors import loan_parties
from lending.services import transitions as lending_hooks
from marketplace.models import Offer
from marketplace.services import offer_changed_listeners, offer_closed_listeners
from notifications.live import events

logger = logging.getLogger(__name__)
S = Trade.State
# Moves that change what an offer has left (a take, or the amount coming back).
BOOK_STATES = frozenset({S.FUNDED, S.CANCELLED, S.EXPIRED})


# Moves that show their trade was never disputed (a dispute is opened only by the move into
# `disputed`, and none of these can follow it): no moderator can be assigned to it.
UNDISPUTED_MOVES = frozenset(
    {
        ("", S.FUNDED),
        (S.FUNDED, S.PAID),
        (S.FUNDED, S.CANCELLED),
        (S.FUNDED, S.EXPIRED),
        (S.PAID, S.RELEASING),
    }
)


def _watchers(
    trades: Iterable[Trade], *, undisputed: set[int] | None = None
) -> dict[int, set[int]]:
    """Each trade's buyer, seller and assigned moderator (user ids), in one query (none when
    all the trades are known `undisputed`)."""
    found = {t.pk: {t.buyer_id, t.seller_id} for t in trades}
    asked = [pk for pk in found if pk not in (undisputed or ())]
    if not asked:
        return found
    assigned = Dispute.objects.filter(trade_id__in=asked, assigned_to__isnull=False).values_list(
        "trade_id", "assigned_to_id"
    )
    for trade_id, moderator_id in assigned:
        found[trade_id].add(moderator_id)
    return found


def on_trade_transitions(events_: list[EscrowEvent]) -> None:
    """Escrow moves: `trade.<event>` (the webhook's name and body) to everyone watching the
    trade; passing states (refunding, splitting) as `trade.updated` without a body, so the
    room still redraws. The book of the pair learns of takes and returns. Called by
    notifications.listeners (a request's move: as it commits, before its news, which the worker
    writes) and notifications.tasks (a settlement batch: after its news)."""
    from notifications.services import EVENT_FOR_STATE, webhook_payload

    try:
        trades = announced_trades(events_)
        moves: dict[int, set[tuple[str, str]]] = {}
        for event in events_:
            moves.setdefault(event.trade_id, set()).add((event.old_state, event.new_state))
        undisputed = {pk for pk, seen in moves.items() if seen <= UNDISPUTED_MOVES}
        watchers = _watchers(trades.values(), undisputed=undisputed)
        pairs: set[tuple[str, str]] = set()
        for event in sorted(events_, key=lambda e: e.pk):
            trade = trades.get(event.trade_id)
            if trade is None:
                continue
            name = EVENT_FOR_STATE.get(event.new_state)
            body = webhook_payload(trade=trade, event=event, name=name) if name else None
            events.publish(
                user_ids=watchers[trade.pk],
                event={"event": name or "trade.updated", "trade": trade.pk, "body": body},
            )
            if event.new_state in BOOK_STATES:
                pairs.add((trade.asset.code, trade.fiat.code))
        for asset, fiat in sorted(pairs):
            events.publish_book(asset=asset, fiat=fiat)
    except Exception:
        logger.exception("live events of %s trade move(s) failed", len(events_))


def on_trade_message(message: TradeMessage) -> None:
    """A chat message (or attachment): the trade's watchers' rooms redraw their chat."""
    try:
        trade = Trade.objects.only("pk", "buyer_id", "seller_id").get(pk=message.trade_id)
        events.publish(
            user_ids=_watchers([trade])[trade.pk],
            event={"event": "trade.message", "trade": trade.pk},
        )
    except Exception:
        logger.exception("live event of message %s failed", message.pk)


def announce_notifications(rows: list[Any]) -> None:
    """Called by the Notification manager for rows it wrote: once the transaction commits, each
    owner's badge gets their unread count (one query), and a trade's room redraws (a dispute's
    news changes its panel)."""
    targets = [(n.user_id, n.trade_id, n.loan_id) for n in rows if n.user_id]
    if targets:
        transaction.on_commit(lambda: _publish_notifications(targets), robust=True)


def _publish_notifications(targets: list[tuple[int, int | None, int | None]]) -> None:
    from notifications.selectors import UNREAD_BADGE_CAP, notification_unread_counts

    try:
        # Up to the badge's cap ("99+" past it): bounded for a reader who never reads them.
        unread = notification_unread_counts(
            user_ids=(user_id for user_id, _, _ in targets), cap=UNREAD_BADGE_CAP
        )
        events.publish_each(
            [
                (
                    user_id,
                    {
                        "event": "notification",
                        "trade": trade_id,
                        "loan": loan_id,
                        "unread": unread.get(user_id, 0),
                    },
                )
                for user_id, trade_id, loan_id in dict.fromkeys(targets)
            ]
        )
    except Exception:
        logger.exception("live badge events for %s user(s) failed", len(targets))


# --- loans: the webhook events of notifications.loans, to the bot stream ----------------------


def on_loan_events(events_: list[LoanEvent]) -> None:
    from notifications import loans as loan_news

    try:
        wanted = [(e, news) for e in events_ if (news := loan_news._news(e)) is not None]
        ids = {e.request_id for e, _ in wanted}
        if not ids:
            return
        loans = loan_news._loans(ids)
        parties = loan_parties(loan_ids=list(ids))
        for event, news in wanted:
            loan = loans.get(event.request_id)
            if loan is None:
                continue
            name = loan_news.WEBHOOK_EVENT.get(news)
            body = None
            if name is not None:
                found = loan_news._INSTALLMENT.match(event.reason)
                extra = {"installment": int(found.group(1))} if found else {}
                body = loan_news._payload(loan, name, event.created_at, **extra)
            events.publish(
                user_ids=parties.get(loan.pk, [loan.borrower_id]),
                event={"event": name or f"loan.{news}", "loan": loan.pk, "body": body},
            )
    except Exception:
        logger.exception("live events of %s loan event(s) failed", len(events_))


def on_margin_call(calls: list[tuple[Loan, Decimal]]) -> None:
    from django.utils import timezone

    from notifications import loans as loan_news

    try:
        ltvs = {loan.pk: ltv for loan, ltv in calls}
        loans = loan_news._loans(set(ltvs))
        parties = loan_parties(loan_ids=list(loans))
        name, now = loan_news.WEBHOOK_EVENT[loan_news.MARGIN_CALL], timezone.now()
        for loan_id, loan in sorted(loans.items()):
            body = loan_news._payload(loan, name, now, ltv=f"{ltvs[loan_id]:.4f}")
            events.publish(
                user_ids=parties.get(loan_id, [loan.borrower_id]),
                event={"event": name, "loan": loan_id, "body": body},
            )
    except Exception:
        logger.exception("live margin-call events for %s loan(s) failed", len(calls))


# --- the order book ---------------------------------------------------------------------------


def on_offer_changed(offer: Offer) -> None:
    try:
        pair = Offer.objects.filter(pk=offer.pk).values_list("asset__code", "fiat__code").first()
        if pair:
            events.publish_book(asset=pair[0], fiat=pair[1])
    except Exception:
        logger.exception("live book event of offer #%s failed", offer.pk)


def on_sessions_ended(session_keys: list[str]) -> None:
    events.close_sockets([events.session_group(k) for k in session_keys])


def on_credentials_revoked(hashes: list[str]) -> None:
    events.close_sockets([events.credential_group(h) for h in hashes])


def on_logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """A logout (sent before the session is flushed): the tabs of this session stop now,
    once the request's transaction, if any, commits."""
    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        revocation.sessions_ended([key])


def _register(hooks: list[Any], listener: Any, *, first: bool = False) -> None:
    if listener not in hooks:
        hooks.insert(0, listener) if first else hooks.append(listener)


# A request's trade move goes out as it commits (the other party's room is what must be fast):
# notifications.listeners calls on_trade_transitions, then hands the in-app, email and webhook
# work to the worker, whose badges wake the sockets again. A chat message goes out first too.
_register(message_listeners, on_trade_message, first=True)
_register(lending_hooks.event_listeners, on_loan_events)
_register(lending_hooks.margin_call_listeners, on_margin_call)
_register(offer_changed_listeners, on_offer_changed)
_register(offer_closed_listeners, on_offer_changed)
# A socket does not outlive its session or credential.
_register(revocation.session_end_listeners, on_sessions_ended)
_register(revocation.credential_revoke_listeners, on_credentials_revoked)
user_logged_out.connect(on_logged_out, dispatch_uid="notifications.live.on_logged_out")
