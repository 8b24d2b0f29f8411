"""The escrow state machine of a trade. Every transition goes through _escrow_transition: one
transaction, the trade row locked, the actor and the source state checked, an audit event
written, the ledger asked to post, side effects queued on commit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.fields.mixins import FieldCacheMixin
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy, gettext_noop

from accounts import services as accounts
from accounts.models import Profile
from accounts.selectors import is_moderator
from common.errors import Conflict, InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from common.outbox import publish_after_commit
from common.prepared import PreparedRead, insert, save_fields
from common.transactions import durable_atomic
from escrow.models import EscrowEvent, Settlement, Trade
from escrow.services import cancellations, volumes
from ledger import services as ledger
from ledger.models import Transfer
from marketplace import book_cache
from marketplace.models import Offer

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

logger = logging.getLogger(__name__)

S = Trade.State
BUYER, SELLER, SYSTEM, MODERATOR = "buyer", "seller", "system", "moderator"

# (from, to) -> who may make that move. Anything not here is an illegal move.
TRANSITIONS: dict[tuple[str, str], frozenset[str]] = {
    (S.FUNDED, S.PAID): frozenset({BUYER}),
    (S.FUNDED, S.CANCELLED): frozenset({BUYER, MODERATOR}),
    (S.FUNDED, S.EXPIRED): frozenset({SYSTEM}),
    (S.FUNDED, S.DISPUTED): frozenset({BUYER}),
    (S.PAID, S.RELEASING): frozenset({SELLER}),
    (S.PAID, S.DISPUTED): frozenset({BUYER, SELLER}),
    (S.RELEASING, S.COMPLETED): frozenset({SYSTEM}),
    (S.DISPUTED, S.RELEASING): frozenset({MODERATOR}),
    (S.DISPUTED, S.REFUNDING): frozenset({MODERATOR}),
    (S.DISPUTED, S.SPLITTING): frozenset({MODERATOR}),
    (S.REFUNDING, S.REFUNDED): frozenset({SYSTEM}),
    (S.SPLITTING, S.SPLIT): frozenset({SYSTEM}),
}
FINAL_STATES = frozenset({S.COMPLETED, S.CANCELLED, S.EXPIRED, S.REFUNDED, S.SPLIT})

# Why a move is refused, as whole sentences (a translator can't build one from an English role
# and verb): who may make a move at all, by its target state...
ONLY_WHO: dict[str, StrOrPromise] = {
    S.PAID: gettext_lazy("Only the buyer can mark it paid."),
    S.CANCELLED: gettext_lazy("Only the buyer can cancel it."),
    S.EXPIRED: gettext_lazy("Only the system can expire it."),
    S.DISPUTED: gettext_lazy("Only the buyer or seller can open a dispute."),
    S.RELEASING: gettext_lazy("Only the seller can release it."),
    S.COMPLETED: gettext_lazy("Only the system can complete it."),
    S.REFUNDING: gettext_lazy("Only the moderator can refund it."),
    S.SPLITTING: gettext_lazy("Only the moderator can split it."),
    S.REFUNDED: gettext_lazy("Only the system can finish the refund."),
    S.SPLIT: gettext_lazy("Only the system can finish the split."),
}
# ...a move the trade's state no longer allows ({pk}, {state}: the state's label)...
NO_LONGER: dict[str, StrOrPromise] = {
    S.PAID: gettext_lazy("Trade #{pk} is {state}: it can no longer be marked paid."),
    S.CANCELLED: gettext_lazy("Trade #{pk} is {state}: it can no longer be cancelled."),
    S.EXPIRED: gettext_lazy("Trade #{pk} is {state}: it can no longer expire."),
    S.DISPUTED: gettext_lazy("Trade #{pk} is {state}: a dispute can no longer be opened."),
    S.RELEASING: gettext_lazy("Trade #{pk} is {state}: it can no longer be released."),
    S.COMPLETED: gettext_lazy("Trade #{pk} is {state}: it can no longer be completed."),
    S.REFUNDING: gettext_lazy("Trade #{pk} is {state}: it can no longer be refunded."),
    S.SPLITTING: gettext_lazy("Trade #{pk} is {state}: it can no longer be split."),
    S.REFUNDED: gettext_lazy("Trade #{pk} is {state}: the refund can no longer be finished."),
    S.SPLIT: gettext_lazy("Trade #{pk} is {state}: the split can no longer be finished."),
}
# ...and a move another party makes from this state: (from, to) where some role that may make
# the move elsewhere may not make it here (test_transitions checks every such pair is here).
ONLY_NOW: dict[tuple[str, str], StrOrPromise] = {
    (S.FUNDED, S.DISPUTED): gettext_lazy("Only the buyer can open a dispute now."),
    (S.PAID, S.RELEASING): gettext_lazy("Only the seller can release it now."),
    (S.DISPUTED, S.RELEASING): gettext_lazy("Only the moderator can release it now."),
}

# Hooks other apps (notifications, webhooks) register; called on commit with the events of the
# moves that committed together (one, or a whole settlement batch).
transition_listeners: list[Callable[[list[EscrowEvent]], None]] = []


def announce(trade: Trade, event: EscrowEvent) -> None:
    """Tell the listeners once the transaction commits; a failing listener is logged, never
    turned into an error for a move that already happened."""
    event.trade = trade
    announce_many([event])


def announce_many(events: list[EscrowEvent]) -> None:
    announced_together(events)
    for listener in transition_listeners:
        # mypy cannot type a lambda's default argument; a partial has no __qualname__ for the
        # robust hook's error log.
        transaction.on_commit(lambda listener=listener: listener(events), robust=True)  # type: ignore[misc]


# What listeners show of a trade (asset, fiat and the parties), and what a move's API answer
# shows besides: a move made from a request reads them with the row it locks (one query), so
# that neither its listeners nor its answer read the trade again.
ANNOUNCED_RELATED = ("asset", "fiat", "buyer", "seller", "maker", "taker")
SHOWN_RELATED = (*ANNOUNCED_RELATED, "payment_method", "payment_account")


# The row a move locks, alone or with what its listeners and answer show (common.prepared: the
# statement is built once per process). NO KEY: the rows that point at the trade (events,
# notifications, a settlement) check their foreign key with KEY SHARE, which this lock does not
# block. OF: the trade's row alone, not the rows joined to it.
_LOCKED = PreparedRead(
    lambda trade_id: Trade.objects.select_for_update(no_key=True, of=("self",)).filter(pk=trade_id)
)
_LOCKED_SHOWN = PreparedRead(
    lambda trade_id: (
        Trade.objects.select_related(*SHOWN_RELATED)
        .select_for_update(no_key=True, of=("self",))
        .filter(pk=trade_id)
    )
)


def trade_has_related(trade: Trade, names: tuple[str, ...]) -> bool:
    """Whether these related objects of the trade are already loaded (none is read again)."""
    return all(cast(FieldCacheMixin, Trade._meta.get_field(n)).is_cached(trade) for n in names)


def announced_together(events: list[EscrowEvent]) -> None:
    """These events are read together (every listener of one announcement, or a task that
    handles them at once): announced_trades reads their trades once for all of them."""
    shared: dict[str, Any] = {}
    for event in events:
        event._announced = shared  # type: ignore[attr-defined]


def announced_trades(events: list[EscrowEvent]) -> dict[int, Trade]:
    """The trades of announced moves, as they are after the commit, with what listeners show
    (asset, fiat and the parties). A move that announced the trade it wrote, with those loaded
    (a request's move: the committed row as it wrote it), costs no query; the others are read
    in one query for all the listeners of one announcement (the first that asks fetches them),
    one for each call otherwise (events loaded by a task)."""
    shared = getattr(events[0], "_announced", None) if events else None
    if shared is not None and "trades" in shared:
        return cast(dict[int, Trade], shared["trades"])
    trades: dict[int, Trade] = {}
    trade_of = EscrowEvent._meta.get_field("trade")
    for event in events:
        if trade_of.is_cached(event) and trade_has_related(event.trade, ANNOUNCED_RELATED):
            trades[event.trade_id] = event.trade
    missing = {e.trade_id for e in events} - trades.keys()
    if missing:
        trades.update(Trade.objects.select_related(*ANNOUNCED_RELATED).in_bulk(missing))
    if shared is not None:
        shared["trades"] = trades
    return trades


# Hooks other apps (notifications) register; called on commit with the settlements that have
# just become `failed`: once per failure, not once per attempt (a moderator's retry that fails
# again is a new failure, announced again).
settlement_failed_listeners: list[Callable[[list[Settlement]], None]] = []


def _announce_failed(settlements: list[Settlement]) -> None:
    for listener in settlement_failed_listeners:
        transaction.on_commit(lambda listener=listener: listener(settlements), robust=True)  # type: ignore[misc]


def allowed_moves(*, trade: Trade, role: str) -> list[str]:
    """The states this role may move the trade to right now (the table plus the timers)."""
    now = timezone.now()
    moves = []
    for (frm, to), roles in TRANSITIONS.items():
        if frm != trade.state or role not in roles:
            continue
        if to == S.PAID and now >= trade.payment_deadline:
            continue
        if to == S.DISPUTED and dispute_opens_at(trade, now=now) is not None:
            continue
        moves.append(to)
    return moves


def dispute_opens_at(trade: Trade, *, now: datetime | None = None) -> datetime | None:
    """When the parties of a paid trade may open a dispute (DISPUTE_DELAY after payment), while
    that is still ahead; None when they may now, or when the trade isn't paid. The one home of
    the dispute delay: the state machine, the trade room and the API read it here."""
    if trade.state != S.PAID or not trade.paid_at:
        return None
    opens_at: datetime = trade.paid_at + settings.DISPUTE_DELAY
    return opens_at if (now or timezone.now()) < opens_at else None


def _require_moderator(actor: Any) -> None:
    if not is_moderator(actor):
        raise PermissionDenied(gettext("Only a moderator can do this."))


def require_impartial_moderator(*, trade: Trade, actor: Any) -> None:
    """A moderator acts as moderator only on trades they are no party to: they can't be
    assigned, read the file as moderator or decide where they would judge their own trade."""
    _require_moderator(actor)
    if trade.role_of(actor) is not None:
        raise PermissionDenied(
            gettext("You are a party to trade #{pk}: another moderator must handle it.").format(
                pk=trade.pk
            ),
            code="conflict_of_interest",
        )


def _role(trade: Trade, actor: Any, as_moderator: bool) -> str:
    if actor is None:
        return SYSTEM
    if as_moderator:
        require_impartial_moderator(trade=trade, actor=actor)
        return MODERATOR
    role = trade.role_of(actor)
    if role is None:
        raise NotFound(gettext("Trade #{pk} not found.").format(pk=trade.pk))
    return role


def _escrow_transition(
    *,
    trade_id: int,
    to: str,
    actor: Any,
    reason: str = "",
    as_moderator: bool = False,
    guard: Callable[[Trade], None] | None = None,
    split_buyer_amount: Decimal | None = None,
    cancel_reason: str = "",
    joined: bool = True,
    savepoint: bool = True,
) -> Trade:
    """Every move, in a savepoint of the caller's transaction: a caller may go on after a
    refused move. `savepoint=False`: a move that is its transaction's whole work (a public
    move in its own durable_atomic, a settlement in its batch's savepoint), two round trips
    fewer. `joined`: read what the move's listeners and its answer show with the locked row
    (SHOWN_RELATED; the trade returned has them); not worth it for a settlement batch, whose
    listeners read its trades in one query."""
    with transaction.atomic(savepoint=savepoint):
        try:
            trade = (_LOCKED_SHOWN if joined else _LOCKED).one(int(trade_id))
        except Trade.DoesNotExist:
            raise NotFound(
                gettext("Trade #{trade_id} not found.").format(trade_id=trade_id)
            ) from None
        role = _role(trade, actor, as_moderator)
        old = trade.state
        roles = TRANSITIONS.get((old, to))
        ever = frozenset().union(*(r for (_, dest), r in TRANSITIONS.items() if dest == to))
        if role not in ever:
            # A move this party can never make is a permission matter, whatever the state.
            raise PermissionDenied(str(ONLY_WHO.get(to, gettext("You can't make this move."))))
        if roles is None:
            raise InvalidTransition(
                str(NO_LONGER[to]).format(pk=trade.pk, state=S(old).label),
                fields={"state": [old]},
            )
        if role not in roles:
            raise PermissionDenied(
                str(ONLY_NOW.get((old, to), gettext("You can't make this move now.")))
            )
        if guard:
            guard(trade)
        now = timezone.now()
        trade.state = to
        fields = ["state", "updated_at"]
        buyer_profile: Profile | None = None
        if to == S.PAID:
            trade.paid_at = now
            fields.append("paid_at")
        elif to in (S.CANCELLED, S.EXPIRED):
            # The daily cancellation limit (escrow.services.cancellations): the buyer's reason
            # is kept; a counted close locks the buyer's profile before the ledger's accounts.
            trade.cancel_reason = cancel_reason if role == BUYER else ""
            trade.cancel_counted = cancellations.cancellation_counts(
                to=to, role=role, cancel_reason=trade.cancel_reason
            )
            fields += ["cancel_reason", "cancel_counted"]
            buyer_profile = _return_hold(trade, lock_buyer=trade.cancel_counted)
            # ... and no longer counts against either party's 30-day limit (the move's last lock)
            volumes.trade_volume_count(trade=trade, counted=False)
        elif to in (S.RELEASING, S.REFUNDING, S.SPLITTING):
            if to == S.RELEASING:
                trade.released_at = now
                fields.append("released_at")
            _queue_settlement(trade, to, split_buyer_amount)
        if to in FINAL_STATES:
            trade.closed_at = now
            fields.append("closed_at")
        save_fields(trade, fields)
        if buyer_profile is not None:
            cancellations.buying_suspension_refresh(profile=buyer_profile, now=now)
        (event,) = insert(
            [
                EscrowEvent(
                    trade=trade,
                    old_state=old,
                    new_state=to,
                    actor=actor,
                    actor_role=role,
                    reason=reason[:200],
                )
            ]
        )
        announce(trade, event)
    return trade


def _return_hold(trade: Trade, *, lock_buyer: bool = False) -> Profile | None:
    """Cancelled or expired: the hold goes back to the seller and the amount back to the offer.
    The offer row is locked before the accounts, in the order offer_take takes them, so a take
    and a cancel on one offer queue instead of deadlocking; likewise the buyer's profile, when
    the close counts against their daily limit (returned, locked)."""
    offer = (Offer.objects.select_for_update().only("pk", "side", "asset_id", "fiat_id")).get(
        pk=trade.offer_id
    )
    profile = None
    if lock_buyer:
        profile = accounts.profiles_lock(user_ids=[trade.buyer_id])[trade.buyer_id]
    ledger.transfer_void_pending(
        idempotency_key=f"trade:{trade.pk}:void", pending=cast(Transfer, trade.escrow_hold)
    )
    Offer.objects.filter(pk=offer.pk).update(available=F("available") + trade.amount)
    book_cache.offer_changed(offer)  # its depth is back in the book
    return profile


def _queue_settlement(trade: Trade, to: str, split_buyer_amount: Decimal | None) -> None:
    kinds: dict[str, str] = {
        S.RELEASING: Settlement.Kind.RELEASE,
        S.REFUNDING: Settlement.Kind.REFUND,
    }
    kind = kinds.get(to, Settlement.Kind.SPLIT)
    if kind != Settlement.Kind.REFUND:
        # The accounts the settlement pays into exist before it is queued (created here once per
        # user and asset, else only read, in one query): were a first-time buyer's account
        # created inside a settlement batch, every worker whose batch also pays that buyer would
        # wait for the whole batch to commit.
        ledger.accounts_ensure(
            users={(trade.buyer_id, trade.asset_id)},
            fees={trade.asset_id} if kind == Settlement.Kind.RELEASE else set(),
        )
    (settlement,) = insert(
        [
            Settlement(
                trade=trade, kind=kind, buyer_amount=split_buyer_amount, queued_at=timezone.now()
            )
        ]
    )
    transaction.on_commit(lambda: _enqueue(settlement.pk))


def _enqueue(settlement_id: int) -> None:
    # settle_many: the publisher merges the ids of the releases waiting in it into one message.
    from escrow.tasks import settle_many

    publish_after_commit(settle_many, [settlement_id])


# --- public transitions -----------------------------------------------------------------------


def trade_mark_paid(*, trade_id: int, actor: Any) -> Trade:
    """The buyer says the fiat was sent; only before the payment deadline."""

    def before_deadline(trade: Trade) -> None:
        if timezone.now() >= trade.payment_deadline:
            raise InvalidTransition(
                gettext("Trade #{pk}: the payment window has ended.").format(pk=trade.pk)
            )

    with durable_atomic():
        return _escrow_transition(
            trade_id=trade_id,
            to=S.PAID,
            actor=actor,
            reason=gettext_noop("buyer marked paid"),
            guard=before_deadline,
            savepoint=False,
        )


def escrow_release(*, trade_id: int, actor: Any) -> Trade:
    """The seller confirms the fiat arrived: the release is queued for settlement. (The trade
    room and the release API confirm the seller's fund password first: accounts.services.
    funds_confirm.)"""
    with durable_atomic():
        return _escrow_transition(
            trade_id=trade_id,
            to=S.RELEASING,
            actor=actor,
            reason=gettext_noop("seller released"),
            savepoint=False,
        )


def trade_cancel(*, trade_id: int, actor: Any, cancel_reason: str = "", reason: str = "") -> Trade:
    """The buyer cancels before paying: the hold goes back to the seller. The buyer's
    `cancel_reason` (a CancelReason; none is `other`) decides whether it counts against their
    daily cancellation limit (escrow.services.cancellations); `reason` is a free note."""
    code = cancellations.cancel_reason_clean(cancel_reason)
    with durable_atomic():
        return _escrow_transition(
            trade_id=trade_id,
            to=S.CANCELLED,
            actor=actor,
            reason=reason or f"buyer cancelled: {code}",
            cancel_reason=code,
            savepoint=False,
        )


def trade_cancellation_review(*, trade_id: int, actor: Any, counted: bool) -> Trade:
    """A moderator counts a buyer's cancellation against their daily limit after all (a
    seller-fault reason the buyer abused), or un-counts one; the buyer's pause follows at once
    (for the buyer's current day)."""
    with durable_atomic():
        try:
            trade = Trade.objects.select_for_update(no_key=True).get(pk=trade_id)
        except Trade.DoesNotExist:
            raise NotFound(f"Trade #{trade_id} not found.") from None
        require_impartial_moderator(trade=trade, actor=actor)
        if trade.state != S.CANCELLED or not trade.cancel_reason:
            raise InvalidTransition(
                f"Trade #{trade.pk} was not cancelled by its buyer: nothing to count.",
                fields={"state": [trade.state]},
            )
        if trade.cancel_counted != counted:
            trade.cancel_counted = counted
            trade.save(update_fields=["cancel_counted", "updated_at"])
            profile = accounts.profiles_lock(user_ids=[trade.buyer_id])[trade.buyer_id]
            cancellations.buying_suspension_refresh(profile=profile, now=timezone.now())
    return trade


def escrow_expire(*, trade_id: int) -> Trade:
    """The payment window ran out before `paid`: the hold goes back to the seller."""

    def deadline_passed(trade: Trade) -> None:
        if timezone.now() < trade.payment_deadline:
            raise InvalidTransition(
                gettext("Trade #{pk}: the payment window is still open.").format(pk=trade.pk)
            )

    with durable_atomic():
        return _escrow_transition(
            trade_id=trade_id,
            to=S.EXPIRED,
            actor=None,
            reason=gettext_noop("payment window ended"),
            guard=deadline_passed,
            savepoint=False,
        )


def _dispute_delay_passed(trade: Trade) -> None:
    if (opens_at := dispute_opens_at(trade)) is not None:
        raise Conflict(
            gettext(
                "A dispute can be opened from {opens_at:%H:%M:%S} UTC, {v1} minutes after payment."
            ).format(opens_at=opens_at, v1=int(settings.DISPUTE_DELAY.total_seconds() // 60)),
            code="dispute_too_early",
        )


def escrow_dispute(*, trade_id: int, actor: Any, reason: str = "") -> Trade:
    """Move to `disputed` inside the caller's transaction (disputes.services.dispute_open owns
    it and records the dispute in the same one): from paid after the dispute delay, or the
    buyer from funded."""
    return _escrow_transition(
        trade_id=trade_id,
        to=S.DISPUTED,
        actor=actor,
        reason=reason or "dispute opened",
        guard=_dispute_delay_passed,
    )


def trade_dispute(*, trade_id: int, actor: Any, reason: str = "") -> Trade:
    """A party opens a dispute (the escrow move alone; the product goes through
    disputes.services.dispute_open, which also records the dispute)."""
    with durable_atomic():
        return escrow_dispute(trade_id=trade_id, actor=actor, reason=reason)


DECISIONS = {"release": S.RELEASING, "refund": S.REFUNDING, "split": S.SPLITTING}


def escrow_decide(
    *, trade_id: int, actor: Any, outcome: str, reason: str, buyer_amount: Decimal | None = None
) -> Trade:
    """A moderator settles a disputed trade (release to the buyer, refund to the seller, or a
    split giving the buyer `buyer_amount`), inside the caller's transaction; the settlement is
    queued like any release."""
    to = DECISIONS.get(outcome)
    if to is None:
        raise ValidationFailed(
            gettext("outcome: release, refund or split."),
            fields={"outcome": [gettext("Choose release, refund or split.")]},
        )

    def split_fits(trade: Trade) -> None:
        if to == S.SPLITTING and (buyer_amount is None or not 0 < buyer_amount < trade.amount):
            raise ValidationFailed(
                gettext(
                    "buyer_amount: a split gives the buyer more than 0 and less than {v1:f}."
                ).format(v1=trade.amount.normalize()),
                fields={
                    "buyer_amount": [gettext("Between 0 and the trade amount, both excluded.")]
                },
            )

    return _escrow_transition(
        trade_id=trade_id,
        to=to,
        actor=actor,
        reason=reason,
        as_moderator=True,
        guard=split_fits,
        split_buyer_amount=buyer_amount if to == S.SPLITTING else None,
    )


def trades_expire_overdue() -> int:
    """Expire every funded trade past its deadline, each through the locked transition."""
    ids = list(
        Trade.objects.filter(state=S.FUNDED, payment_deadline__lte=timezone.now()).values_list(
            "pk", flat=True
        )[:1000]
    )
    expired = 0
    for trade_id in ids:
        try:
            escrow_expire(trade_id=trade_id)
            expired += 1
        except InvalidTransition:
            pass  # paid or cancelled meanwhile: the other side won the race, as it should
    return expired
