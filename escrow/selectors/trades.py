"""Reads of trades for their parties and moderators: lists, one trade, its chat."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext

from accounts.selectors import is_moderator
from common.errors import NotFound
from common.prepared import PreparedRead
from escrow.models import EscrowEvent, Settlement, Trade, TradeMessage
from escrow.selectors.settlement import settlement_status_for_trade
from escrow.services.transitions import allowed_moves, dispute_opens_at


def trade_list_for_user(*, user: Any, state: str | None = None) -> QuerySet[Trade]:
    qs = Trade.objects.filter(Q(buyer=user) | Q(seller=user)).select_related(
        "asset", "fiat", "buyer", "seller", "payment_method"
    )
    if state:
        qs = qs.filter(state=state)
    return qs.order_by("-created_at", "-pk")


# Who besides the parties may read a trade and its chat: disputes registers "the impartial
# moderator assigned to its dispute" in DisputesConfig.ready() (staff alone read nothing).
trade_readers: list[Callable[[Trade, Any], bool]] = []


def may_read_trade(trade: Trade, user: Any) -> bool:
    """Its parties, and whoever a higher layer vouches for (the assigned moderator)."""
    if trade.role_of(user) is not None:
        return True
    return is_moderator(user) and any(reader(trade, user) for reader in trade_readers)


def _not_found(trade_id: int) -> NotFound:
    """What a stranger (or anyone, for a trade that does not exist) is told: never a hint."""
    return NotFound(gettext("Trade #{trade_id} not found.").format(trade_id=trade_id))


def trade_get_for_user(
    *, trade_id: int, user: Any, queryset: QuerySet[Trade] | None = None
) -> Trade:
    """A trade its parties (or its assigned moderator) may see; anyone else gets not-found, not
    a hint it exists. `queryset`: the caller's joins and prefetches, read in the same query."""
    if queryset is None:
        queryset = Trade.objects.select_related(
            "asset", "fiat", "buyer", "seller", "offer", "payment_method"
        )
    trade = queryset.filter(pk=trade_id).first()
    if trade is None or not may_read_trade(trade, user):
        raise _not_found(trade_id)
    return trade


# What a trade's answer (the API's TradeOut) shows besides its events, read with it.
ANSWER_RELATED = ("asset", "fiat", "buyer", "seller", "payment_method", "payment_account")

# The two reads of every trading request's answer, built once per process (common.prepared).
_ANSWERED = PreparedRead(
    lambda trade_id: Trade.objects.select_related(*ANSWER_RELATED).filter(pk=trade_id)
)
_EVENTS = PreparedRead(
    lambda trade_id: EscrowEvent.objects.select_related("actor").filter(trade_id=trade_id)
)


_PARTIES = PreparedRead(
    lambda trade_id: Trade.objects.only(
        "pk", "buyer_id", "seller_id", "maker_id", "taker_id"
    ).filter(pk=trade_id)
)


def trade_events_load(trade: Trade) -> Trade:
    """Read the trade's events (with their actors, oldest first) into `trade.events.all()`, as
    prefetch_related would, in one prepared statement. The cache is the relation's own queryset
    (filtered to the trade), so a later `trade.events.filter(...)` still reads only its events."""
    events = _EVENTS(trade.pk)
    field = EscrowEvent._meta.get_field("trade")
    for event in events:
        field.set_cached_value(event, trade)
    prefetched = getattr(trade, "_prefetched_objects_cache", None)
    if prefetched is None:
        prefetched = trade._prefetched_objects_cache = {}  # type: ignore[attr-defined]
    prefetched.pop("events", None)
    cached = trade.events.all()
    cached._result_cache = events
    cached._prefetch_done = True  # type: ignore[attr-defined]
    prefetched["events"] = cached
    return trade


def trade_for_answer(*, trade_id: int, user: Any = None) -> Trade:
    """A trade with all its answer shows (ANSWER_RELATED and its events), in two prepared
    statements. With `user`: only one they may read (trade_get_for_user's rule), else not
    found."""
    trade = _ANSWERED.first(int(trade_id))
    if trade is None or (user is not None and not may_read_trade(trade, user)):
        raise _not_found(trade_id)
    return trade_events_load(trade)


def trade_ensure_readable(*, trade_id: int, user: Any) -> None:
    """trade_get_for_user's check alone, for a caller that needs no trade (an action's 404 for
    strangers before its service runs): one narrow query, no joins."""
    trade = _PARTIES.first(int(trade_id))
    if trade is None or not may_read_trade(trade, user):
        raise _not_found(trade_id)


def trade_messages(*, trade: Trade) -> QuerySet[Any]:
    return (
        TradeMessage.objects.filter(trade=trade)
        .select_related("sender")
        .order_by("created_at", "id")
    )


def trade_message_attachment(*, trade_id: int, message_id: int, user: Any) -> Any:
    """A chat attachment for the trade's parties and moderators only; anyone else: not found."""
    trade = Trade.objects.filter(pk=trade_id).first()
    allowed = trade is not None and may_read_trade(trade, user)
    message = (
        TradeMessage.objects.filter(pk=message_id, trade_id=trade_id).exclude(attachment="").first()
    )
    if not allowed or message is None:
        raise NotFound(gettext("Attachment not found."))
    return message


SETTLING_STATES = frozenset({Trade.State.RELEASING, Trade.State.REFUNDING, Trade.State.SPLITTING})


@dataclass(frozen=True)
class TradeRoomState:
    """What a trade's room offers this user now: the rules, not their wording."""

    role: str | None  # buyer, seller, or None (a moderator or staff looking on)
    counterparty: Any
    moves: list[str]  # the states this user may move the trade to from the page, now
    deadline_passed: bool  # the payment window ran out (the sweeper expires it shortly)
    dispute_opens_at: datetime | None  # a paid trade's dispute delay, while it runs
    settlement_delayed: bool  # its settlement failed and waits for a moderator


def trade_room_state(*, trade: Trade, user: Any, now: datetime | None = None) -> TradeRoomState:
    """The trade room's rules for this user: the moves the state machine allows them, less
    marking paid once the window ran out and a dispute while the dispute delay runs."""
    now = now or timezone.now()
    role = trade.role_of(user)
    deadline_passed = trade.state == Trade.State.FUNDED and now >= trade.payment_deadline
    opens_at = dispute_opens_at(trade, now=now)
    moves = [
        to
        for to in (allowed_moves(trade=trade, role=role) if role else [])
        if not (to == Trade.State.PAID and deadline_passed)
        and not (to == Trade.State.DISPUTED and opens_at)
    ]
    delayed = (
        trade.state in SETTLING_STATES
        and settlement_status_for_trade(trade_id=trade.pk) == Settlement.Status.FAILED
    )
    counterparty = {"buyer": trade.seller, "seller": trade.buyer}.get(role or "")
    return TradeRoomState(
        role=role,
        counterparty=counterparty,
        moves=moves,
        deadline_passed=deadline_passed,
        dispute_opens_at=opens_at,
        settlement_delayed=delayed,
    )
