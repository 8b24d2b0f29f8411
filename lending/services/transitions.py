"""The state machine of loan requests and loans: one table, one transition function.

Every move happens inside its service's durable transaction, on a row the service locked
(`select_for_update`), is checked against TRANSITIONS by role and source state, saved with
update_fields, audited with a LoanEvent and announced to the listeners after the commit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy

from common.errors import InvalidTransition, NotFound, PermissionDenied
from lending.models import Loan, LoanEvent, LoanRequest

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

logger = logging.getLogger(__name__)

R, L = LoanRequest.State, Loan.State
BORROWER, LENDER, SYSTEM = "borrower", "lender", "system"

# (subject, from, to) -> who may make that move. Anything not here is an illegal move.
TRANSITIONS: dict[tuple[str, str, str], frozenset[str]] = {
    # the last lender's funding activates it; the deadline sweeper activates a partial fill
    ("request", R.OPEN, R.ACTIVE): frozenset({LENDER, SYSTEM}),
    ("request", R.OPEN, R.CANCELLED): frozenset({BORROWER}),
    ("request", R.OPEN, R.EXPIRED): frozenset({SYSTEM}),
    ("loan", L.ACTIVE, L.LATE): frozenset({SYSTEM}),  # an installment could not be collected
    ("loan", L.LATE, L.ACTIVE): frozenset({SYSTEM}),  # cured: every overdue one collected
    ("loan", L.ACTIVE, L.REPAID): frozenset({BORROWER, SYSTEM}),  # early, or the last one
    # early by the borrower, or the system collecting the last overdue installment
    ("loan", L.LATE, L.REPAID): frozenset({BORROWER, SYSTEM}),
    ("loan", L.LATE, L.DEFAULTED): frozenset({SYSTEM}),  # LENDING_GRACE_HOURS ran out
    ("loan", L.ACTIVE, L.LIQUIDATED): frozenset({SYSTEM}),  # LTV at the liquidation line
    ("loan", L.LATE, L.LIQUIDATED): frozenset({SYSTEM}),
    ("loan", L.DEFAULTED, L.LIQUIDATED): frozenset({SYSTEM}),
}

# Why a move is refused, as whole sentences (a translator can't build one from an English role,
# subject and state), by (subject, to): who may make the move at all...
ONLY_WHO: dict[tuple[str, str], StrOrPromise] = {
    ("request", R.ACTIVE): gettext_lazy("Only a lender can activate a loan request."),
    ("request", R.CANCELLED): gettext_lazy("Only the borrower can cancel a loan request."),
    ("request", R.EXPIRED): gettext_lazy("Only the system can expire a loan request."),
    ("loan", L.LATE): gettext_lazy("Only the system can mark a loan late."),
    ("loan", L.ACTIVE): gettext_lazy("Only the system can make a loan active again."),
    ("loan", L.REPAID): gettext_lazy("Only the borrower can repay a loan."),
    ("loan", L.DEFAULTED): gettext_lazy("Only the system can mark a loan defaulted."),
    ("loan", L.LIQUIDATED): gettext_lazy("Only the system can liquidate a loan."),
}
# ...and a move its state no longer allows ({pk}, {state}: the state's label).
NO_LONGER: dict[tuple[str, str], StrOrPromise] = {
    ("request", R.ACTIVE): gettext_lazy("Loan request #{pk} is {state}: it can't be activated."),
    ("request", R.CANCELLED): gettext_lazy("Loan request #{pk} is {state}: it can't be cancelled."),
    ("request", R.EXPIRED): gettext_lazy("Loan request #{pk} is {state}: it can't expire."),
    ("loan", L.LATE): gettext_lazy("Loan #{pk} is {state}: it can't become late."),
    ("loan", L.ACTIVE): gettext_lazy("Loan #{pk} is {state}: it can't become active again."),
    ("loan", L.REPAID): gettext_lazy("Loan #{pk} is {state}: it can't be repaid."),
    ("loan", L.DEFAULTED): gettext_lazy("Loan #{pk} is {state}: it can't default."),
    ("loan", L.LIQUIDATED): gettext_lazy("Loan #{pk} is {state}: it can't be liquidated."),
}

# Hooks higher apps (notifications, webhooks) register; called on commit, never raising into a
# move that already happened.
# Every committed move of a request or loan, and every margin call and refused liquidation.
event_listeners: list[Callable[[list[LoanEvent]], None]] = []
# Loans whose LTV has just crossed LENDING_MARGIN_CALL_LTV (once per crossing), with their LTV:
# one call per check, however many loans crossed.
margin_call_listeners: list[Callable[[list[tuple[Loan, Decimal]]], None]] = []
# A liquidation refused because the price index was stale (for the moderators).
liquidation_blocked_listeners: list[Callable[[Loan, str], None]] = []


def _on_commit(listeners: list[Callable[..., None]], *args: Any) -> None:
    for listener in listeners:
        # A default argument binds each listener; the robust hook logs a failing one.
        transaction.on_commit(lambda listener=listener: listener(*args), robust=True)  # type: ignore[misc]


def announce(events: list[LoanEvent]) -> None:
    _on_commit(event_listeners, events)


def announce_margin_calls(calls: list[tuple[Loan, Decimal]]) -> None:
    if calls:
        _on_commit(margin_call_listeners, calls)


def announce_liquidation_blocked(loan: Loan, why: str) -> None:
    logger.error("loan #%s: liquidation blocked: %s", loan.pk, why)
    _on_commit(liquidation_blocked_listeners, loan, why)


def request_role(request: LoanRequest, actor: Any) -> str:
    if actor is None:
        return SYSTEM
    return BORROWER if actor.pk == request.borrower_id else LENDER


def loan_role(loan: Loan, actor: Any, lender_ids: set[int]) -> str:
    """The actor's part in a loan; a stranger is told the loan does not exist (404)."""
    if actor is None:
        return SYSTEM
    if actor.pk == loan.borrower_id:
        return BORROWER
    if actor.pk in lender_ids:
        return LENDER
    raise NotFound(
        gettext("Loan #{pk} not found.").format(pk=loan.pk),
        fields={"loan": [gettext("Not found.")]},
    )


def _check(subject: str, pk: int, old: str, to: str, role: str) -> None:
    roles = TRANSITIONS.get((subject, old, to))
    ever = frozenset().union(
        *(r for (s, _, d), r in TRANSITIONS.items() if (s, d) == (subject, to))
    )
    if role not in ever:
        raise PermissionDenied(
            str(ONLY_WHO.get((subject, to), gettext("You can't make this move.")))
        )
    if roles is None:
        state = (R if subject == "request" else L)(old).label
        raise InvalidTransition(
            str(NO_LONGER[(subject, to)]).format(pk=pk, state=state),
            fields={"state": [old]},
        )
    if role not in roles:
        raise PermissionDenied(gettext("You can't make this move now."))


def event(
    *, request_id: int, subject: str, old: str, new: str, actor: Any, role: str, reason: str
) -> LoanEvent:
    row = LoanEvent.objects.create(
        request_id=request_id,
        subject=subject,
        old_state=old,
        new_state=new,
        actor=actor,
        actor_role=role,
        reason=reason[:300],
    )
    announce([row])
    return row


def system_event(
    *, loan_id: int, state: str, reason: str, new: str | None = None, at: Any = None
) -> LoanEvent:
    """An unsaved audit row of the system about a loan: a move (`new`) or a note (the state
    stays), for a batch's bulk_create."""
    extra = {"created_at": at} if at is not None else {}
    return LoanEvent(
        request_id=loan_id, subject="loan", old_state=state, new_state=new or state, actor=None,
        actor_role=SYSTEM, reason=reason[:300], **extra,
    )  # fmt: skip


def system_notes(notes: list[tuple[Loan, str]]) -> list[LoanEvent]:
    """The system's notes on these loans (their state unchanged), written in one statement and
    announced on commit."""
    events = LoanEvent.objects.bulk_create(
        system_event(loan_id=loan.pk, state=loan.state, reason=reason) for loan, reason in notes
    )
    announce(events)
    return events


def _request_transition(
    *, request: LoanRequest, to: str, actor: Any, role: str, reason: str = ""
) -> LoanEvent:
    """Move a request the caller holds locked."""
    old = request.state
    _check("request", request.pk, old, to, role)
    request.state = to
    request.save(update_fields=["state", "funded", "updated_at"])
    return event(
        request_id=request.pk, subject="request", old=old, new=to, actor=actor, role=role,
        reason=reason,
    )  # fmt: skip


def _loan_transition(*, loan: Loan, to: str, actor: Any, role: str, reason: str = "") -> LoanEvent:
    """Move a loan the caller holds locked; the timestamps follow the state."""
    old = loan.state
    _check("loan", loan.pk, old, to, role)
    loan.state = to
    if to == L.LATE:
        loan.late_since = timezone.now()
    elif to in (L.ACTIVE, L.REPAID, L.LIQUIDATED):
        loan.late_since = None
    if to in (L.REPAID, L.LIQUIDATED):
        loan.closed_at = timezone.now()
    loan.save(
        update_fields=[
            "state", "late_since", "closed_at", "collateral_amount", "shortfall", "updated_at"
        ]
    )  # fmt: skip
    return event(
        request_id=loan.pk, subject="loan", old=old, new=to, actor=actor, role=role, reason=reason
    )
