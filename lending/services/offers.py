"""Lender offers: a lender posts an offer (its amount held from their wallet at once), a
borrower takes part of it in one step and one transaction, which makes a request already fully
funded by that lender and activates it, and the lender may withdraw what is left.

Ledger: posting holds `available` from the lender's wallet into `loan:offer:{id}` (pending).
A take voids that hold, holds what is left again (the next `hold_seq`), and funds the new
request through the normal commitment path (`loan:{id}:fund:*`, posted by the activation).
The offer row is locked first, so racing takers queue on it and never overdraw it."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext

from common.errors import (
    Conflict,
    InsufficientFunds,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from common.money import fmt, parse_amount
from common.transactions import durable_atomic
from ledger import services as ledger
from ledger.models import Transfer
from ledger.selectors import asset_get
from lending.models import Loan, LoanOffer, LoanOfferCollateral, LoanRequest
from lending.services.requests import (
    _commit,
    _insert_request,
    _parse_rate,
    _parse_term,
    loan_ltv_quote,
)

K = Transfer.Kind
LTV_PRECISION = 4


def offer_account(offer_id: int, asset: Any) -> Any:
    return ledger.account_hold(code=f"loan:offer:{offer_id}", asset=asset)


def _parse_collateral(value: object, loan_asset: Any) -> list[tuple[Any, Decimal]]:
    """A non-empty list of {"asset": code, "max_ltv": "0.5"}: known assets, each once, not
    the asset lent, 0 < max_ltv ≤ 1; anything else is refused naming `collateral`."""
    if not isinstance(value, list | tuple) or not value:
        raise ValidationFailed.for_field(
            "collateral", gettext('A non-empty list of {"asset": ..., "max_ltv": ...}.')
        )
    out: list[tuple[Any, Decimal]] = []
    seen: set[int] = set()
    for item in value:
        if not isinstance(item, dict) or set(item) != {"asset", "max_ltv"}:
            raise ValidationFailed.for_field(
                "collateral", gettext('Each item is exactly {"asset": ..., "max_ltv": ...}.')
            )
        try:
            asset = asset_get(code=item["asset"])
        except ValidationFailed:
            raise ValidationFailed.for_field(
                "collateral", gettext("Unknown asset {v1!r}.").format(v1=item["asset"])
            ) from None
        if asset.pk == loan_asset.pk:
            raise ValidationFailed.for_field(
                "collateral", gettext("A collateral asset must differ from the asset lent.")
            )
        if asset.pk in seen:
            raise ValidationFailed.for_field(
                "collateral", gettext("{code} is listed twice.").format(code=asset.code)
            )
        seen.add(asset.pk)
        raw = item["max_ltv"]
        try:
            ltv = Decimal(str(raw).strip()) if isinstance(raw, str | int) else None
        except InvalidOperation:
            ltv = None
        if (
            ltv is None
            or isinstance(raw, bool)
            or not ltv.is_finite()
            or not Decimal(0) < ltv <= 1
            or ltv != ltv.quantize(Decimal(1).scaleb(-LTV_PRECISION))
        ):
            raise ValidationFailed.for_field(
                "collateral",
                gettext("{code}: max_ltv is a fraction in (0, 1], e.g. 0.5.").format(
                    code=asset.code
                ),
            )
        out.append((asset, ltv))
    return out


def _term(value: object, field: str) -> int:
    try:
        return _parse_term(value)
    except ValidationFailed:
        raise ValidationFailed.for_field(
            field, gettext("A whole number of months from 1 to 24.")
        ) from None


def loan_offer_create(
    *, lender: Any, asset: Any, amount: Any, annual_rate: Any, term_min: Any, term_max: Any,
    collateral: Any,
) -> LoanOffer:  # fmt: skip
    """Post an offer; its whole amount is held from the lender's wallet now."""
    loan_asset = asset_get(code=asset)
    value = parse_amount(amount, precision=loan_asset.precision, field="amount")
    rate = _parse_rate(annual_rate)
    low, high = _term(term_min, "term_min"), _term(term_max, "term_max")
    if low > high:
        raise ValidationFailed.for_field("term_max", gettext("At least term_min."))
    accepted = _parse_collateral(collateral, loan_asset)
    with durable_atomic():
        offer = LoanOffer.objects.create(
            lender=lender, asset=loan_asset, amount=value, available=value, annual_rate=rate,
            term_min=low, term_max=high, hold_seq=1,
        )  # fmt: skip
        LoanOfferCollateral.objects.bulk_create(
            LoanOfferCollateral(offer=offer, asset=a, max_ltv=ltv) for a, ltv in accepted
        )
        try:
            offer.hold = _hold(offer, value)
        except InsufficientFunds as exc:
            raise InsufficientFunds(
                exc.message, fields={"amount": [gettext("Insufficient balance.")]}
            ) from None
        offer.save(update_fields=["hold"])
    return offer


def _hold(offer: LoanOffer, value: Decimal) -> Transfer:
    return ledger.transfer_post(
        idempotency_key=f"loan:offer:{offer.pk}:hold:{offer.hold_seq}",
        debit=ledger.account_for_user(user=offer.lender, asset=offer.asset),
        credit=offer_account(offer.pk, offer.asset),
        amount=value,
        kind=K.LOAN_FUNDING,
        pending=True,
    )


def _release(offer: LoanOffer) -> None:
    """Void the offer's current hold (the caller holds the row locked)."""
    if offer.hold is not None:
        ledger.transfer_void_pending(
            idempotency_key=f"loan:offer:{offer.pk}:hold:{offer.hold_seq}:void", pending=offer.hold
        )
        offer.hold = None


def _lock_offer(offer_id: int) -> LoanOffer:
    try:
        return (
            # Not the hold: a row joined to a locked one may be read from before the wait.
            LoanOffer.objects.select_for_update(of=("self",))
            .select_related("asset", "lender")
            .get(pk=offer_id)
        )
    except LoanOffer.DoesNotExist:
        raise NotFound(
            gettext("Loan offer #{offer_id} not found.").format(offer_id=offer_id),
            fields={"offer": [gettext("Not found.")]},
        ) from None


def _require_open(offer: LoanOffer) -> None:
    if offer.state != LoanOffer.State.OPEN:
        raise Conflict(
            gettext("Loan offer #{pk} is {state}.").format(
                pk=offer.pk, state=offer.get_state_display()
            ),
            code="invalid_transition",
            fields={"state": [offer.state]},
        )


def loan_offer_take(
    *, offer_id: int, borrower: Any, amount: Any, term_months: Any, plan: Any,
    collateral_asset: Any, collateral_amount: Any,
) -> Loan:  # fmt: skip
    """Borrow from an offer in one transaction: a request fully funded by its lender, active
    at once. Nothing changes on any error."""
    with durable_atomic():
        offer = _lock_offer(offer_id)
        if borrower.pk == offer.lender_id:
            raise PermissionDenied(
                gettext("You can't take your own loan offer."),
                fields={"offer": [gettext("This is your own offer.")]},
            )
        _require_open(offer)
        p = offer.asset.precision
        value = parse_amount(amount, precision=p, field="amount")
        if value > offer.available:
            left = fmt(offer.available, p)
            raise ValidationFailed.for_field(
                "amount",
                gettext("Only {left} {code} is available; at most {left}.").format(
                    left=left, code=offer.asset.code
                ),
            )
        term = _parse_term(term_months)
        if not offer.term_min <= term <= offer.term_max:
            raise ValidationFailed.for_field(
                "term_months",
                gettext("This offer lends for {term_min} to {term_max} months.").format(
                    term_min=offer.term_min, term_max=offer.term_max
                ),
            )
        if plan not in LoanRequest.Plan.values:
            raise ValidationFailed.for_field(
                "plan", gettext("One of {v1}.").format(v1=", ".join(LoanRequest.Plan.values))
            )
        try:
            coll_asset = asset_get(code=collateral_asset)
        except ValidationFailed:
            raise ValidationFailed.for_field(
                "collateral_asset", gettext("Unknown asset.")
            ) from None
        accepted = offer.collaterals.filter(asset=coll_asset).first()
        if accepted is None:
            codes = ", ".join(c.asset.code for c in offer.collaterals.select_related("asset"))
            raise ValidationFailed.for_field(
                "collateral_asset", gettext("This offer accepts only {codes}.").format(codes=codes)
            )
        collateral = parse_amount(
            collateral_amount, precision=coll_asset.precision, field="collateral_amount"
        )
        limit = min(accepted.max_ltv, settings.LENDING_INITIAL_LTV)
        ltv, _ = loan_ltv_quote(
            asset=offer.asset, collateral_asset=coll_asset, principal=value,
            annual_rate=offer.annual_rate, term_months=term, plan=plan,
            collateral_amount=collateral,
        )  # fmt: skip
        if ltv > limit:
            raise ValidationFailed.for_field(
                "collateral_amount",
                gettext(
                    "LTV {ltv:.4f} is above {limit} (this offer's and the platform's limit): {v1} {code} or more is needed."
                ).format(
                    ltv=ltv,
                    limit=limit,
                    v1=fmt(collateral * ltv / limit, coll_asset.precision),
                    code=coll_asset.code,
                ),
            )
        # The offer's hold shrinks by the amount taken: void it, hold the rest again.
        _release(offer)
        offer.available -= value
        if offer.available > 0:
            offer.hold_seq += 1
            offer.hold = _hold(offer, offer.available)
        else:
            offer.state = LoanOffer.State.TAKEN
        offer.save(update_fields=["available", "hold", "hold_seq", "state", "updated_at"])
        request = _insert_request(
            borrower=borrower, asset=offer.asset, amount=value, annual_rate=offer.annual_rate,
            term_months=term, plan=plan, collateral_asset=coll_asset,
            collateral_amount=collateral, funding_deadline=timezone.now(), offer=offer,
            reason=f"offer #{offer.pk} taken, LTV {ltv:.4f}",
        )  # fmt: skip
        _commit(request, offer.lender, value)  # the whole amount: activates the loan
        return Loan.objects.get(pk=request.pk)


def loan_offer_cancel(*, offer_id: int, actor: Any) -> LoanOffer:
    """The lender withdraws the offer: what is left goes back to their wallet."""
    with durable_atomic():
        offer = _lock_offer(offer_id)
        if actor.pk != offer.lender_id:
            raise PermissionDenied(
                gettext("Only the lender can withdraw a loan offer."),
                fields={"offer": [gettext("Not your offer.")]},
            )
        _require_open(offer)
        _release(offer)
        offer.state = LoanOffer.State.CANCELLED
        offer.save(update_fields=["hold", "state", "updated_at"])
    return offer
