"""Trade events to the people and bots that follow them: in-app notifications, email for the
moments that need someone to act, and signed webhooks sent through an outbox (WebhookDelivery)
by Celery, at least once (receivers de-duplicate on X-Delivery-Id)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _

from common.errors import NotFound
from common.money import fmt
from common.templatetags.money import amount_shown
from escrow.models import EscrowEvent, Settlement, Trade
from escrow.services import FEEDBACK_STATES, announced_together, announced_trades
from marketplace.models import Offer
from notifications import webhooks
from notifications.email import in_language, recipient_languages
from notifications.models import Notification, NotificationPreference, WebhookDelivery
from notifications.outbound import Outgoing, outgoing_send
from notifications.recipients import Recipient, recipients_forget, recipients_of
from notifications.webhooks import (  # the public webhook services, importable from here too
    EVENT_FOR_STATE,
    WEBHOOK_EVENTS,
    backoff_delay,
    webhook_create,
    webhook_delete,
    webhook_deliver,
    webhook_deliveries_requeue_due,
    webhook_signature,
)

logger = logging.getLogger(__name__)

S = Trade.State
K = Notification.Kind
E = WebhookDelivery.Error

KIND_FOR_STATE: dict[str, str] = {
    S.FUNDED: K.CREATED,
    S.PAID: K.PAID,
    S.RELEASING: K.RELEASING,
    S.COMPLETED: K.COMPLETED,
    S.CANCELLED: K.CANCELLED,
    S.EXPIRED: K.EXPIRED,
    S.DISPUTED: K.DISPUTED,
    S.REFUNDED: K.RESOLVED,
    S.SPLIT: K.RESOLVED,
}

# Lazy: each text is written in its recipient's language (notifications.email.in_language).
TEXT_FOR_STATE: dict[str, Any] = {
    S.FUNDED: _(
        "{taker} opened trade #{n} on your offer #{offer}: {amount} {asset} for "
        "{fiat_amount} {fiat}."
    ),
    S.PAID: _(
        "{buyer} marked trade #{n} paid: check that {fiat_amount} {fiat} arrived, then "
        "release the {asset}."
    ),
    S.RELEASING: _("Trade #{n}: {amount} {asset} released to {buyer}; settling now."),
    S.COMPLETED: _("Trade #{n} completed: {buyer} received {buyer_receives} {asset}."),
    S.CANCELLED: _("Trade #{n} was cancelled; the {asset} in escrow went back to {seller}."),
    S.EXPIRED: _(
        "Trade #{n} expired: it was not marked paid in time; the {asset} went back to {seller}."
    ),
    S.DISPUTED: _("{actor} opened a dispute on trade #{n}; a moderator will review it."),
    S.REFUNDED: _("Trade #{n} was resolved by a moderator: the {asset} went back to {seller}."),
    S.SPLIT: _(
        "Trade #{n} was resolved by a moderator: the {asset} was split between {buyer} "
        "and {seller}."
    ),
}
# The word an email's subject names a notification's kind by ("Trade #7: paid").
KIND_WORD: dict[str, Any] = {
    K.CREATED: pgettext_lazy("notification kind", "created"),
    K.PAID: pgettext_lazy("notification kind", "paid"),
    K.RELEASING: pgettext_lazy("notification kind", "releasing"),
    K.COMPLETED: pgettext_lazy("notification kind", "completed"),
    K.CANCELLED: pgettext_lazy("notification kind", "cancelled"),
    K.EXPIRED: pgettext_lazy("notification kind", "expired"),
    K.DISPUTED: pgettext_lazy("notification kind", "disputed"),
    K.RESOLVED: pgettext_lazy("notification kind", "resolved"),
    K.MESSAGE: pgettext_lazy("notification kind", "message"),
}
TRADE_SUBJECT = _("Trade #{n}: {kind}")

# Which preference (NotificationPreference.Category) decides where a move's email goes.
C = NotificationPreference.Category
CATEGORY_FOR_STATE: dict[str, str] = {
    S.FUNDED: C.TRADE_OPENED,
    S.PAID: C.TRADE_PAID,
    S.RELEASING: C.TRADE_COMPLETED,
    S.COMPLETED: C.TRADE_COMPLETED,
    S.DISPUTED: C.DISPUTES,
}
CATEGORY_FOR_KIND: dict[str, str] = {K.DISPUTED: C.DISPUTES, K.MESSAGE: C.CHAT}

FEEDBACK_PROMPT_TEXT = _(
    "Trade #{n} is done: how was trading with {other}? Leave your feedback in the trade room."
)

__all__ = [
    "EVENT_FOR_STATE",
    "WEBHOOK_EVENTS",
    "backoff_delay",
    "webhook_create",
    "webhook_delete",
    "webhook_deliver",
    "webhook_deliveries_requeue_due",
    "webhook_signature",
]


# --- in-app notifications -----------------------------------------------------------------------


def notification_mark_read(*, notification_id: int, user: Any) -> Notification:
    """Mark one of the user's notifications read; reading it again keeps the first time."""
    notification = Notification.objects.filter(pk=notification_id, user=user).first()
    if notification is None:
        raise NotFound(
            gettext("Notification #{notification_id} not found.").format(
                notification_id=notification_id
            )
        )
    if notification.read_at is None:
        notification.read_at = timezone.now()
        Notification.objects.filter(pk=notification.pk, read_at__isnull=True).update(
            read_at=notification.read_at
        )
    return notification


def _context(trade: Trade, event: EscrowEvent) -> dict[str, Any]:
    asset, fiat = trade.asset, trade.fiat
    # A party's move names them from the trade (loaded with it): no query for the actor of
    # each of a batch's events; only a moderator is read.
    who = None
    if event.actor_id is not None:
        parties = {trade.buyer_id: trade.buyer, trade.seller_id: trade.seller}
        who = parties.get(event.actor_id) or event.actor
    actor = getattr(who, "username", None) or (
        _("A moderator") if event.actor_role == "moderator" else _("The system")
    )
    return {
        "n": trade.pk,
        "offer": trade.offer_id,
        # As the browser shows them (the display precision); the room has the exact amounts.
        "amount": amount_shown(trade.amount, asset),
        "buyer_receives": amount_shown(trade.buyer_receives, asset),
        "asset": asset.code,
        "fiat_amount": fmt(trade.fiat_amount, fiat.precision),
        "fiat": fiat.code,
        "buyer": trade.buyer.username,
        "seller": trade.seller.username,
        "taker": trade.taker.username,
        "actor": actor,
    }


def _email_recipients(trade: Trade, state: str) -> list[Any]:
    """Who gets the news outside the site too (email, Telegram, as they chose): whoever must
    act next, or is waiting for the coins."""
    if state == S.FUNDED:
        return [trade.maker]
    if state == S.PAID:
        return [trade.seller]
    if state in (S.RELEASING, S.COMPLETED):
        return [trade.buyer]
    if state == S.DISPUTED:
        return [trade.buyer, trade.seller]
    return []


def webhook_payload(*, trade: Trade, event: EscrowEvent, name: str) -> dict[str, Any]:
    """The JSON body of a trade event (without delivery_id, which is added per delivery)."""
    return {
        "event": name,
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
        "trade": {
            "id": trade.pk,
            "state": event.new_state,
            "asset": trade.asset.code,
            "fiat": trade.fiat.code,
            "amount": fmt(trade.amount, trade.asset.precision),
            "fiat_amount": fmt(trade.fiat_amount, trade.fiat.precision),
            "buyer": trade.buyer.username,
            "seller": trade.seller.username,
        },
    }


def notify_trade_event(*, trade: Trade, event: EscrowEvent) -> None:
    """One escrow move: see notify_trade_events."""
    notify_trade_events(events=[event])


def notify_trade_events(*, events: list[EscrowEvent]) -> None:
    """Escrow moves that committed (a batch of moves, or one): tell both parties (in-app: all
    but the actor), queue email and Telegram for the ones who must act (as they chose), and
    queue a signed webhook for every active endpoint of either party that wants the event; the
    events are marked announced in the same transaction. The worker calls it through
    trade_news_write, which writes each move's news once."""
    _news_written(lambda: events)


def trade_news_write(*, event_ids: Iterable[int]) -> list[EscrowEvent]:
    """The news of these moves, once each (the worker's batches: a task's ids, or the sweeper's):
    of these events, the ones not yet announced that no other call holds are locked, their news
    written and they are marked announced, in one transaction. Returns those events (in order),
    with their trades loaded; the others are another call's."""
    ids = list(event_ids)

    def locked() -> list[EscrowEvent]:
        events = list(
            EscrowEvent.objects.select_for_update(skip_locked=True)
            .filter(pk__in=ids, announced=False)
            .order_by("pk")
        )
        announced_together(events)  # their trades: one read for the news and the live events
        return events

    return _news_written(locked)


def _news_written(load: Callable[[], list[EscrowEvent]]) -> list[EscrowEvent]:
    """One transaction: the events `load` gives (called inside it), their news, their mark. The
    parties' settings come from notifications.recipients (Redis; the database for the ones not
    cached). A cached setting that proved stale (an endpoint deleted since it was cached, whose
    forget could not reach Redis) fails the commit (a deferred foreign key): the entries are
    forgotten and the whole transaction runs again with the settings from the database."""
    fresh = False
    while True:
        party_ids: set[int] = set()
        cached = False
        try:
            with transaction.atomic():
                events = load()
                wanted = [e for e in events if e.new_state in KIND_FOR_STATE]
                if wanted:
                    trades = announced_trades(events)
                    party_ids = {uid for t in trades.values() for uid in (t.buyer_id, t.seller_id)}
                    recipients, cached = recipients_of(party_ids, fresh=fresh)
                    _write_trade_news(wanted, trades, recipients)
                if events:
                    EscrowEvent.objects.filter(
                        pk__in=[e.pk for e in events], announced=False
                    ).update(announced=True)
            for event in events:
                event.announced = True
            return events
        except IntegrityError:
            if fresh or not cached:
                raise
            logger.warning("stale cached settings of users %s; reading them again", party_ids)
            recipients_forget(party_ids)
            fresh = True


# A move's news waits this long for the sweeper (its broker message lost, or the broker down):
# well past the time its task takes when all is well.
TRADE_NEWS_OVERDUE_SECONDS = 10.0
TRADE_NEWS_SWEEP_BATCH = 500


def trade_news_overdue(*, older_than: float = TRADE_NEWS_OVERDUE_SECONDS) -> list[EscrowEvent]:
    """The sweeper: writes the news of moves that have waited longer than `older_than` seconds
    (TRADE_NEWS_SWEEP_BATCH of them, oldest first). Returns the events it wrote."""
    cutoff = timezone.now() - timedelta(seconds=older_than)
    waiting = EscrowEvent.objects.filter(announced=False, created_at__lt=cutoff)
    ids = waiting.order_by("created_at").values_list("pk", flat=True)[:TRADE_NEWS_SWEEP_BATCH]
    return trade_news_write(event_ids=list(ids))


def _write_trade_news(
    wanted: list[EscrowEvent], trades: dict[int, Trade], recipients: dict[int, Recipient]
) -> None:
    """Inside _news_written's transaction."""
    known = {code for code, _ in django_settings.LANGUAGES}
    langs = {uid: r.language for uid, r in recipients.items() if r.language in known}
    notes: list[Notification] = []
    deliveries: list[WebhookDelivery] = []
    outside: list[Outgoing] = []
    now = timezone.now()
    for event in wanted:
        trade = trades.get(event.trade_id)
        if trade is None:
            continue
        state = event.new_state
        kind = KIND_FOR_STATE[state]
        text = format_lazy(TEXT_FOR_STATE[state], **_context(trade, event))
        parties = {trade.buyer_id: trade.buyer, trade.seller_id: trade.seller}
        notes += [
            Notification(user=user, trade=trade, kind=kind, text=in_language(langs, user_id, text))
            for user_id, user in parties.items()
            if user_id != event.actor_id
        ]
        if state in FEEDBACK_STATES:
            # The trade's one move into a final, rateable state: each party is asked once.
            notes += [
                Notification(
                    user=user,
                    trade=trade,
                    kind=K.FEEDBACK,
                    text=in_language(
                        langs,
                        user.pk,
                        format_lazy(FEEDBACK_PROMPT_TEXT, n=trade.pk, other=other.username),
                    ),
                )
                for user, other in ((trade.buyer, trade.seller), (trade.seller, trade.buyer))
            ]
        name = EVENT_FOR_STATE[state]
        payload = webhook_payload(trade=trade, event=event, name=name)
        deliveries += [
            WebhookDelivery(
                endpoint_id=endpoint_id, event=name, payload=payload, next_attempt_at=now
            )
            for user_id in parties
            for endpoint_id, wants in recipients[user_id].endpoints
            if not wants or name in wants
        ]
        outside += [
            Outgoing(user.pk, CATEGORY_FOR_STATE[state], _trade_subject(trade.pk, kind), text)
            for user in _email_recipients(trade, state)
        ]
    Notification.objects.bulk_create(notes)
    webhooks.webhook_deliveries_queue(deliveries)
    people = {u.pk: u for t in trades.values() for u in (t.buyer, t.seller)}
    outgoing_send(outside, users=people, languages=langs, recipients=recipients)


def _trade_subject(n: int, kind: str) -> Any:
    return format_lazy(TRADE_SUBJECT, n=n, kind=KIND_WORD.get(kind, kind))


# --- settlements that failed ----------------------------------------------------------------------

SETTLEMENT_DELAYED_TEXT = _(
    "Trade #{n}: the settlement is delayed. Staff have been notified and will retry it; the "
    "{asset} stays in escrow meanwhile."
)
SETTLEMENT_FAILED_STAFF_TEXT = _(
    "Settlement of trade #{n} ({kind}) failed {attempts} times: {error} Fix the cause, then "
    "retry it: /admin/escrow/settlement/?status__exact=failed"
)
SETTLEMENT_DELAYED_SUBJECT = _("Trade #{n}: settlement delayed")


def _moderators() -> list[Any]:
    """Who can retry a settlement: active staff with the moderators' permission (superusers too)."""
    # The one backend that knows permissions (axes' backend is listed too, so with_perm must be
    # told which to ask).
    users = get_user_model().objects.with_perm(
        "escrow.decide_trade", backend="django.contrib.auth.backends.ModelBackend"
    )
    return list(users.filter(is_staff=True).order_by("pk"))


def notify_moderators_funds(*, text: Any) -> None:
    """A chain alert (ledger.alerts): every moderator gets it in-app, and by email and Telegram
    as each chose (a lazy text is written in each one's language)."""
    moderators = _moderators()
    langs = recipient_languages(m.pk for m in moderators)
    with transaction.atomic():
        Notification.objects.bulk_create(
            [
                Notification(
                    user=m, kind=Notification.Kind.FUNDS, text=in_language(langs, m.pk, text)
                )
                for m in moderators
            ]
        )
        outgoing_send(Outgoing(m.pk, C.FUNDS, _("Funds alert"), text) for m in moderators)


def notify_moderators_price(*, text: Any, subject: Any) -> None:
    """A price pair went stale or recovered (marketplace.services.prices): every moderator gets
    it in-app, and by email and Telegram as each chose (the outbox: never inline); a lazy text
    is written in each one's language."""
    moderators = _moderators()
    langs = recipient_languages(m.pk for m in moderators)
    with transaction.atomic():
        Notification.objects.bulk_create(
            [
                Notification(
                    user=m, kind=Notification.Kind.PRICE, text=in_language(langs, m.pk, text)
                )
                for m in moderators
            ]
        )
        outgoing_send(Outgoing(m.pk, C.FUNDS, subject, text) for m in moderators)


def notify_user_funds(*, user_id: int, text: Any) -> None:
    """A user's own deposit or withdrawal news (ledger.alerts): in-app, and outside as chosen."""
    langs = recipient_languages([user_id])
    with transaction.atomic():
        Notification.objects.create(
            user_id=user_id, kind=Notification.Kind.FUNDS, text=in_language(langs, user_id, text)
        )
        outgoing_send([Outgoing(user_id, C.FUNDS, _("Deposits and withdrawals"), text)])


def notify_settlement_failed(*, settlement_ids: list[int]) -> None:
    """Settlements that have just failed: both parties are told it is delayed (in-app and email),
    the moderators what failed and where to retry it. Once per failure (the caller calls it when
    a settlement becomes failed, not per attempt)."""
    settlements = list(
        Settlement.objects.select_related("trade__asset", "trade__buyer", "trade__seller")
        .filter(pk__in=settlement_ids, status=Settlement.Status.FAILED)
        .order_by("pk")
    )
    if not settlements:
        return
    moderators = _moderators()
    langs = recipient_languages(
        {m.pk for m in moderators}
        | {uid for s in settlements for uid in (s.trade.buyer_id, s.trade.seller_id)}
    )
    notes: list[Notification] = []
    outside: list[Outgoing] = []
    for settlement in settlements:
        trade = settlement.trade
        context = {
            "n": trade.pk,
            "asset": trade.asset.code,
            "kind": settlement.kind,
            "attempts": settlement.attempts,
            # Short enough that the admin's address stays in the 500 characters of a note.
            "error": settlement.last_error[:240].rstrip(".") + ".",
        }
        subject = format_lazy(SETTLEMENT_DELAYED_SUBJECT, n=trade.pk)
        for users, text in (
            ({trade.buyer_id: trade.buyer, trade.seller_id: trade.seller}, SETTLEMENT_DELAYED_TEXT),
            ({m.pk: m for m in moderators}, SETTLEMENT_FAILED_STAFF_TEXT),
        ):
            body = format_lazy(text, **context)
            for user in users.values():
                notes.append(
                    Notification(
                        user=user,
                        trade=trade,
                        kind=K.SETTLEMENT,
                        text=in_language(langs, user.pk, body),
                    )
                )
                outside.append(Outgoing(user.pk, C.TRADE_COMPLETED, subject, body))
    # A moderator who is also a party of the trade gets both texts: they say different things.
    with transaction.atomic():
        Notification.objects.bulk_create(notes)
        outgoing_send(outside)


def notify_parties(
    *,
    trade: Trade,
    text: str,
    kind: str,
    except_user_id: int | None = None,
    email: bool = False,
    coalesce: bool = False,
) -> None:
    """Tell both parties of a trade about something that is not an escrow move (a dispute step,
    a chat message): in-app, and when `email` (it may leave the site) by email and Telegram as
    each chose for its kind. `coalesce`: not again to a party who
    has not yet read the last one of this kind on this trade (a burst of chat is one bell)."""
    trade = Trade.objects.select_related("buyer", "seller").get(pk=trade.pk)
    users = [u for u in (trade.buyer, trade.seller) if u.pk != except_user_id]
    if coalesce:
        unread = set(
            Notification.objects.filter(
                trade=trade, kind=kind, read_at__isnull=True, user__in=users
            ).values_list("user_id", flat=True)
        )
        users = [u for u in users if u.pk not in unread]
    category = CATEGORY_FOR_KIND.get(kind, C.DISPUTES)
    langs = recipient_languages(u.pk for u in users)
    with transaction.atomic():
        Notification.objects.bulk_create(
            Notification(user=u, trade=trade, kind=kind, text=in_language(langs, u.pk, text))
            for u in users
        )
        if email:
            outgoing_send(
                Outgoing(u.pk, category, _trade_subject(trade.pk, kind), text) for u in users
            )


def notify_offer_closed(*, offer_id: int) -> None:
    """The platform closed a maker's offer because what is left can't cover its minimum: the
    maker is told in-app (and by email), with what to do about it."""
    offer = Offer.objects.select_related("maker", "asset", "fiat").get(pk=offer_id)
    text = format_lazy(
        _(
            "Your offer #{n} was closed: {left} {asset} is left, less than its minimum of "
            "{min_fiat} {fiat} per trade, so nobody could take it. Top it up or lower the "
            "minimum to reopen it."
        ),
        n=offer.pk,
        left=amount_shown(offer.available, offer.asset),
        asset=offer.asset.code,
        min_fiat=fmt(offer.min_fiat, offer.fiat.precision),
        fiat=offer.fiat.code,
    )
    subject = format_lazy(_("Offer #{n} closed"), n=offer.pk)
    langs = recipient_languages([offer.maker_id])
    with transaction.atomic():
        Notification.objects.create(
            user=offer.maker,
            offer=offer,
            kind=K.OFFER,
            text=in_language(langs, offer.maker_id, text),
        )
        outgoing_send([Outgoing(offer.maker_id, C.OFFERS, subject, text)])
