"""Loan disputes, judged by moderators as trade disputes are.

A party of a loan (its borrower or one of its lenders) opens a dispute while the loan is open or
within LENDING_DISPUTE_DAYS of its closing; one open dispute per loan. The parties add statements;
a moderator who is not a party takes it and decides: rejected (nothing changes), or upheld with
a compensation that one party pays the other, posted on the ledger (kind loan_compensate, the
loan's id as reference). A compensation is bounded by what the payer received from this loan in
that asset, so a decision can only move value that the loan moved. The loan row is locked first,
then the dispute; everything a decision does is one transaction, announced after commit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from django.utils.translation import gettext

from accounts.selectors import is_moderator
from common.errors import Conflict, InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from common.money import fmt, parse_amount
from common.transactions import durable_atomic
from ledger import services as ledger
from ledger.models import Transfer
from lending.models import Loan, LoanDispute, LoanDisputeStatement
from lending.services.loans import _lenders, _lock_loan
from lending.services.transitions import event, loan_role

D = LoanDispute
MODERATOR = "moderator"
TEXT_MIN, TEXT_MAX = 10, 4000
OPENED, STATEMENT, ASSIGNED, DECIDED = "opened", "statement", "assigned", "decided"

# Who hears of a dispute's news (notifications registers itself in its AppConfig.ready()): each
# is called after commit with the dispute and one of OPENED, STATEMENT, ASSIGNED, DECIDED.
dispute_listeners: list[Callable[[LoanDispute, str], None]] = []


def _announce(dispute: LoanDispute, news: str) -> None:
    for listener in dispute_listeners:
        transaction.on_commit(
            lambda listener=listener: listener(dispute, news),  # type: ignore[misc]
            robust=True,
        )


def _text(value: Any, field: str = "text") -> str:
    text = str(value or "").strip()
    if len(text) < TEXT_MIN:
        raise ValidationFailed.for_field(
            field,
            gettext("Say what happened in at least {TEXT_MIN} characters.").format(
                TEXT_MIN=TEXT_MIN
            ),
        )
    if len(text) > TEXT_MAX:
        raise ValidationFailed.for_field(
            field, gettext("At most {TEXT_MAX} characters.").format(TEXT_MAX=TEXT_MAX)
        )
    return text


def _party_role(loan: Loan, actor: Any) -> str:
    """borrower or lender; a stranger is told the loan does not exist."""
    if actor is None or not getattr(actor, "is_authenticated", False):
        raise NotFound(
            gettext("Loan #{pk} not found.").format(pk=loan.pk),
            fields={"loan": [gettext("Not found.")]},
        )
    return loan_role(loan, actor, {lender_id for lender_id, _ in _lenders(loan)})


def _locked_dispute(dispute_id: int) -> tuple[Loan, LoanDispute]:
    """The dispute's loan locked, then the dispute (the order every lending move uses)."""
    loan_id = LoanDispute.objects.filter(pk=dispute_id).values_list("loan_id", flat=True).first()
    if loan_id is None:
        raise NotFound(
            gettext("Dispute #{dispute_id} not found.").format(dispute_id=dispute_id),
            fields={"dispute": [gettext("Not found.")]},
        )
    loan = _lock_loan(loan_id)
    dispute = LoanDispute.objects.select_for_update().get(pk=dispute_id)
    return loan, dispute


def _require_open(dispute: LoanDispute) -> None:
    if dispute.status != D.Status.OPEN:
        raise InvalidTransition(
            gettext("Dispute #{pk} is {status}.").format(
                pk=dispute.pk, status=dispute.get_status_display()
            ),
            fields={"status": [dispute.status]},
        )


def _require_judge(loan: Loan, actor: Any) -> None:
    """A moderator who is no party of the loan."""
    if not is_moderator(actor):
        raise PermissionDenied(gettext("Only a moderator can do this."))
    if actor.pk == loan.borrower_id or actor.pk in {lid for lid, _ in _lenders(loan)}:
        raise PermissionDenied(
            gettext("You are a party of loan #{pk}: another moderator must judge it.").format(
                pk=loan.pk
            )
        )


def loan_dispute_open(*, loan_id: int, actor: Any, category: Any, text: Any) -> LoanDispute:
    """A party opens a dispute about a loan."""
    with durable_atomic():
        loan = _lock_loan(loan_id)
        role = _party_role(loan, actor)
        if category not in D.Category.values:
            raise ValidationFailed.for_field(
                "category",
                gettext("One of: {v1}.").format(v1=", ".join(D.Category.values)),
                code="invalid_choice",
            )
        body = _text(text)
        window = timedelta(days=settings.LENDING_DISPUTE_DAYS)
        if loan.closed_at is not None and timezone.now() > loan.closed_at + window:
            raise Conflict(
                gettext(
                    "Loan #{pk} closed more than {LENDING_DISPUTE_DAYS} days ago: it can no longer be disputed."
                ).format(pk=loan.pk, LENDING_DISPUTE_DAYS=settings.LENDING_DISPUTE_DAYS),
                code="dispute_window_over",
            )
        if LoanDispute.objects.filter(loan=loan, status=D.Status.OPEN).exists():
            raise Conflict(
                gettext("Loan #{pk} already has an open dispute.").format(pk=loan.pk),
                code="dispute_open",
            )
        dispute = LoanDispute.objects.create(
            loan=loan, opened_by=actor, opener_role=role, category=category, text=body
        )
        event(request_id=loan.pk, subject="loan", old=loan.state, new=loan.state, actor=actor,
              role=role, reason=f"dispute #{dispute.pk} opened ({category})")  # fmt: skip
        _announce(dispute, OPENED)
    return dispute


def loan_dispute_statement(*, dispute_id: int, actor: Any, text: Any) -> LoanDisputeStatement:
    """A party, or the moderator who holds the dispute, adds a statement while it is open."""
    with durable_atomic():
        loan, dispute = _locked_dispute(dispute_id)
        if is_moderator(actor) and dispute.assigned_to_id == actor.pk:
            role = MODERATOR
        else:
            role = _party_role(loan, actor)
        _require_open(dispute)
        row = LoanDisputeStatement.objects.create(
            dispute=dispute, author=actor, role=role, text=_text(text)
        )
        _announce(dispute, STATEMENT)
    return row


def loan_dispute_assign(*, dispute_id: int, actor: Any) -> LoanDispute:
    """A moderator takes an open dispute (taking it from another moderator is allowed: the
    audit trail names both)."""
    with durable_atomic():
        loan, dispute = _locked_dispute(dispute_id)
        _require_judge(loan, actor)
        _require_open(dispute)
        if dispute.assigned_to_id == actor.pk:
            return dispute
        before = dispute.assigned_to
        dispute.assigned_to = actor
        dispute.save(update_fields=["assigned_to"])
        event(request_id=loan.pk, subject="loan", old=loan.state, new=loan.state, actor=actor,
              role=MODERATOR, reason=f"dispute #{dispute.pk} taken by {actor.username}"
              + (f" from {before.username}" if before else ""))  # fmt: skip
        _announce(dispute, ASSIGNED)
    return dispute


def _received(loan: Loan, user_id: int, asset_id: int) -> Decimal:
    """What a party's wallet received from this loan in this asset, all kinds together."""
    got = Transfer.objects.filter(
        reference=loan.pk,
        asset_id=asset_id,
        credit_account__user_id=user_id,
        kind__in=[
            Transfer.Kind.LOAN_FUNDING, Transfer.Kind.LOAN_INSTALLMENT,
            Transfer.Kind.LOAN_LIQUIDATION, Transfer.Kind.LOAN_COLLATERAL,
            Transfer.Kind.LOAN_COMPENSATION,
        ],
        flags__in=[Transfer.Flags.SINGLE, Transfer.Flags.POST_PENDING],
    ).aggregate(total=Sum("amount"))["total"]  # fmt: skip
    return got or Decimal(0)


def loan_dispute_decide(
    *,
    dispute_id: int,
    actor: Any,
    outcome: Any,
    reason: Any,
    compensation_asset: Any = None,
    compensation_amount: Any = None,
    payer_id: Any = None,
    payee_id: Any = None,
) -> LoanDispute:
    """The moderator who holds the dispute (taken on the way when nobody does) decides it.
    `compensate` needs the asset (the loan's or its collateral's code), the amount, and the payer
    and payee, two different parties of the loan; the payer pays from their wallet, at most what
    they received from this loan in that asset."""
    with durable_atomic():
        loan, dispute = _locked_dispute(dispute_id)
        _require_judge(loan, actor)
        _require_open(dispute)
        if dispute.assigned_to_id not in (None, actor.pk):
            raise Conflict(
                gettext("Dispute #{pk} is held by another moderator: take it first.").format(
                    pk=dispute.pk
                ),
                code="dispute_assigned",
            )
        if outcome not in D.Outcome.values:
            raise ValidationFailed.for_field(
                "outcome",
                gettext("One of: {v1}.").format(v1=", ".join(D.Outcome.values)),
                code="invalid_choice",
            )
        why = _text(reason, "reason")
        note = ""
        if outcome == D.Outcome.COMPENSATE:
            assets = {
                loan.asset.code: loan.asset,
                loan.collateral_asset.code: loan.collateral_asset,
            }
            asset = assets.get(str(compensation_asset or ""))
            if asset is None:
                raise ValidationFailed.for_field(
                    "compensation_asset",
                    gettext("One of this loan's assets: {v1}.").format(v1=", ".join(assets)),
                )
            amount = parse_amount(
                compensation_amount, precision=asset.precision, field="compensation_amount"
            )
            parties = {loan.borrower_id} | {lid for lid, _ in _lenders(loan)}
            ids: list[int] = []
            for field, value in (("payer", payer_id), ("payee", payee_id)):
                try:
                    pk = int(value)
                except (TypeError, ValueError):
                    pk = 0
                if pk not in parties:
                    raise ValidationFailed.for_field(
                        field, gettext("Must be a party of this loan.")
                    )
                ids.append(pk)
            if ids[0] == ids[1]:
                raise ValidationFailed.for_field("payee", gettext("Must differ from the payer."))
            bound = _received(loan, ids[0], asset.pk)
            if amount > bound:
                raise ValidationFailed.for_field(
                    "compensation_amount",
                    gettext(
                        "At most what the payer received from this loan in {code}: {v1}."
                    ).format(code=asset.code, v1=fmt(bound, asset.precision)),
                )
            users = get_user_model()
            payer, payee = users(pk=ids[0]), users(pk=ids[1])
            ledger.transfer_post(
                idempotency_key=f"loan:{loan.pk}:dispute:{dispute.pk}:compensation",
                debit=ledger.account_for_user(user=payer, asset=asset),
                credit=ledger.account_for_user(user=payee, asset=asset),
                amount=amount,
                kind=Transfer.Kind.LOAN_COMPENSATION,
                reference=loan.pk,
            )
            dispute.compensation_asset, dispute.compensation_amount = asset, amount
            dispute.payer_id, dispute.payee_id = ids
            note = (
                f": user #{ids[0]} pays user #{ids[1]} {fmt(amount, asset.precision)} {asset.code}"
            )
        dispute.status, dispute.outcome, dispute.decision_reason = D.Status.DECIDED, outcome, why
        dispute.assigned_to = dispute.decided_by = actor
        dispute.decided_at = timezone.now()
        dispute.save()
        event(request_id=loan.pk, subject="loan", old=loan.state, new=loan.state, actor=actor,
              role=MODERATOR, reason=f"dispute #{dispute.pk} decided: {outcome}{note}")  # fmt: skip
        _announce(dispute, DECIDED)
    return dispute
