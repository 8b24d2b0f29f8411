"""Lending in the browser: Borrow (a request with a live LTV and schedule preview, or a lender's
offer taken at once), Lend (open requests, filtered, funded for a chosen amount) and My loans
(schedule, LTV gauge, top-ups, early repayment). Thin: each view parses a form and calls one
service of lending.services (the same ones the API calls) or a selector; every figure shown is
computed there, in Decimal, never in JavaScript."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext, gettext_lazy, gettext_noop
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from common.errors import ApplicationError, NotFound, ValidationFailed
from common.forms import add_application_error
from common.l10n import delocalize_number
from common.money import fmt, parse_amount, parse_decimal
from common.templatetags.money import amount as amount_text
from ledger import selectors as ledger_selectors
from ledger.models import Asset
from lending import selectors, services
from lending.forms import (
    BorrowForm,
    CollateralForm,
    DisputeForm,
    FundForm,
    LendFilterForm,
    RepayForm,
    StatementForm,
    TakeOfferForm,
)
from lending.models import Installment, Loan, LoanOffer, LoanRequest

LEND_PAGE = 20
RATE_PRECISION = 4  # annual rates in percent, as lending.services stores them
R, L = LoanRequest.State, Loan.State

LOAN_STATE_LABELS: dict[str, Any] = {
    L.ACTIVE: gettext_lazy("Active"),
    L.LATE: gettext_lazy("Late"),
    L.REPAID: gettext_lazy("Repaid"),
    L.DEFAULTED: gettext_lazy("Defaulted"),
    L.LIQUIDATED: gettext_lazy("Liquidated"),
}
REQUEST_STATE_LABELS: dict[str, Any] = {
    R.OPEN: gettext_lazy("Open for funding"),
    R.ACTIVE: gettext_lazy("Funded · loan active"),
    R.CANCELLED: gettext_lazy("Cancelled"),
    R.EXPIRED: gettext_lazy("Expired"),
}

# The words of the loan page's timeline (LoanEvent's subject and states, as stored); the
# template translates them when it shows an event.
TIMELINE_WORDS = (
    gettext_noop("request"),
    gettext_noop("loan"),
    gettext_noop("open"),
    gettext_noop("active"),
    gettext_noop("cancelled"),
    gettext_noop("expired"),
    gettext_noop("late"),
    gettext_noop("repaid"),
    gettext_noop("defaulted"),
    gettext_noop("liquidated"),
)


# --- helpers ----------------------------------------------------------------------------------


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def _percent(value: Decimal) -> str:
    """A fraction as a percent with two places: 0.6512 -> "65.12%"."""
    return f"{value * 100:.2f}%"


def ltv_gauge(ltv: Decimal | None, *, initial_line: bool = False) -> dict[str, Any]:
    """What the CSS-only LTV gauge draws: the fill (whole percent, 0-100, as a class), its zone
    and the lines of settings.LENDING_MARGIN_CALL_LTV and LENDING_LIQUIDATION_LTV (and, for a
    new request, LENDING_INITIAL_LTV)."""
    margin, liquidation = settings.LENDING_MARGIN_CALL_LTV, settings.LENDING_LIQUIDATION_LTV
    lines = [("initial", gettext("Initial"), settings.LENDING_INITIAL_LTV)] if initial_line else []
    lines += [
        ("margin", gettext("Margin call"), margin),
        ("liquidation", gettext("Liquidation"), liquidation),
    ]
    gauge: dict[str, Any] = {
        "ltv": ltv,
        "lines": [
            {"kind": kind, "label": label, "text": _percent(v), "at": int(v * 100)}
            for kind, label, v in lines
        ],
    }
    # What a screen reader says of it, in the reader's language.
    said = {
        "initial": gettext("initial at {value}"),
        "margin": gettext("margin call at {value}"),
        "liquidation": gettext("liquidation at {value}"),
    }
    shown = _percent(ltv) if ltv is not None else "—"
    gauge["aria"] = "; ".join(
        [gettext("LTV {value}").format(value=shown)]
        + [said[kind].format(value=_percent(v)) for kind, _label, v in lines]
    )
    if ltv is None:
        return gauge | {"text": "—", "fill": 0, "zone": "none"}
    zone = "danger" if ltv >= liquidation else "warn" if ltv >= margin else "ok"
    if initial_line and ltv > settings.LENDING_INITIAL_LTV and zone == "ok":
        zone = "warn"
    fill = max(0, min(100, int(ltv * 100)))
    return gauge | {"text": _percent(ltv), "fill": fill, "zone": zone}


def _request_or_404(request_id: int) -> LoanRequest:
    try:
        return selectors.loan_request_get(request_id=request_id)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _loan_or_404(loan_id: int, user: Any) -> Loan:
    """The loan if the user is its borrower or one of its lenders; anyone else gets a 404."""
    try:
        return selectors.loan_get_for_user(loan_id=loan_id, user=user)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _balances(user: Any) -> dict[str, str]:
    return {
        w.asset.code: fmt(w.available, w.asset.precision)
        for w in ledger_selectors.wallet_list_for_user(user=user)
    }


# --- borrow -----------------------------------------------------------------------------------


def _first_error(exc: ApplicationError, field: str) -> str:
    messages_ = (exc.fields or {}).get(field)
    if isinstance(messages_, list | tuple) and messages_:
        return str(messages_[0])
    return exc.message


def borrow_preview_context(data: Mapping[str, Any], user: Any = None) -> dict[str, Any]:
    """The live preview of a would-be request: every installment from loan_schedule, the LTV and
    the collateral needed from loan_ltv_quote (the services the request itself goes through).
    A field typed wrong is named; a field not typed yet is only asked for."""
    errors: dict[str, str] = {}
    missing: list[str] = []

    def text(name: str) -> str:
        value = data.get(name)
        return str(value).strip() if value is not None else ""

    def asset(name: str) -> Asset | None:
        if not text(name):
            missing.append(name)
            return None
        try:
            return ledger_selectors.asset_get(code=text(name))
        except ApplicationError:
            errors[name] = "Unknown asset."
            return None

    def amount(name: str, precision: int) -> Decimal | None:
        if not text(name):
            missing.append(name)
            return None
        try:
            # Typed in the reader's language, like the form's fields (common.forms.AmountField).
            typed = delocalize_number(text(name), field=name)
            return parse_amount(typed, precision=precision, field=name)
        except ApplicationError as exc:
            errors[name] = _first_error(exc, name)
            return None

    loan_asset, coll_asset = asset("asset"), asset("collateral_asset")
    if loan_asset and coll_asset and loan_asset.pk == coll_asset.pk:
        errors["collateral_asset"] = "Must differ from the asset borrowed."
    principal = amount("amount", loan_asset.precision) if loan_asset else None
    rate = amount("annual_rate", RATE_PRECISION)
    if rate is not None and rate > 100:
        errors["annual_rate"] = "At most 100 (percent per year)."
    term_text = text("term_months")
    term = int(term_text) if term_text.isdigit() and 1 <= int(term_text) <= 24 else None
    if term is None:
        errors["term_months"] = gettext("A whole number of months from 1 to 24.")
    plan = text("plan") or LoanRequest.Plan.AMORTIZED
    if plan not in LoanRequest.Plan.values:
        errors["plan"] = f"One of {', '.join(LoanRequest.Plan.values)}."
    collateral = amount("collateral_amount", coll_asset.precision) if coll_asset else None
    context: dict[str, Any] = {
        "errors": errors,
        "missing": [m for m in missing if m != "collateral_amount"],
        "loan_asset": loan_asset,
        "coll_asset": coll_asset,
        "initial_ltv": _percent(settings.LENDING_INITIAL_LTV),
        "balance": (
            ledger_selectors.balance_available(user=user, asset_code=coll_asset.code)
            if coll_asset is not None and user is not None
            else None
        ),
    }
    if (
        errors
        or loan_asset is None
        or coll_asset is None
        or principal is None
        or rate is None
        or term is None
    ):
        return context
    rows = services.loan_schedule(
        principal=principal, annual_rate=rate, term_months=term, plan=plan,
        precision=loan_asset.precision, start=timezone.now(),
    )  # fmt: skip
    interest = sum((r.interest for r in rows), Decimal(0))
    context.update(rows=rows, principal=principal, interest=interest, total=principal + interest)
    try:
        ltv, needed = services.loan_ltv_quote(
            asset=loan_asset, collateral_asset=coll_asset, principal=principal,
            annual_rate=rate, term_months=term, plan=plan,
            # Without an amount yet only `needed` is shown; one unit keeps the quote defined.
            collateral_amount=collateral or Decimal(1),
        )  # fmt: skip
    except ApplicationError as exc:
        context["quote_error"] = _first_error(exc, "collateral_asset")
        return context
    context["needed"] = needed
    if collateral is not None:
        context["collateral"] = collateral
        context["gauge"] = ltv_gauge(ltv, initial_line=True)
        context["meets_initial"] = ltv <= settings.LENDING_INITIAL_LTV
    return context


def _take_forms(user: Any, bound: tuple[int, TakeOfferForm] | None = None) -> list[dict[str, Any]]:
    """The open lender offers this user could take, each with its own take form."""
    offers = [o for o in selectors.loan_offer_list(state="open") if o.lender_id != user.pk][:10]
    out = []
    for offer in offers:
        form = bound[1] if bound and bound[0] == offer.pk else _take_form(offer)
        out.append({"offer": offer, "form": form})
    return out


def _take_form(offer: LoanOffer, data: Any = None) -> TakeOfferForm:
    form = TakeOfferForm(data, prefix=f"offer{offer.pk}", initial={"term_months": offer.term_max})
    terms = [(n, f"{n} months") for n in range(offer.term_min, offer.term_max + 1)]
    form.fields["term_months"].choices = terms  # type: ignore[attr-defined]
    codes = [
        (c.asset.code, f"{c.asset.code} (LTV ≤ {_percent(c.max_ltv)})")
        for c in offer.collaterals.all()
    ]
    form.fields["collateral_asset"].choices = codes  # type: ignore[attr-defined]
    return form


def _borrow_page(
    request: HttpRequest,
    form: BorrowForm,
    *,
    status: int = 200,
    take: tuple[int, TakeOfferForm] | None = None,
) -> HttpResponse:
    data = form.data if form.is_bound else {k: form[k].value() for k in form.fields}
    context = {
        "form": form,
        "preview": borrow_preview_context(data, request.user),
        "balances": _balances(request.user),
        "offers": _take_forms(request.user, take),
    }
    return render(request, "lending/borrow.html", context, status=status)


BORROW_DEFAULTS = {
    "asset": "ETH",
    "annual_rate": "5",
    "term_months": 6,
    "plan": LoanRequest.Plan.AMORTIZED,
    "collateral_asset": "USDT",
    "funding_window": 72,
}


@login_required
@require_http_methods(["GET", "POST"])
def borrow(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        initial = {
            **BORROW_DEFAULTS,
            **{k: v for k, v in request.GET.items() if k in BORROW_DEFAULTS or k == "amount"},
        }
        return _borrow_page(request, BorrowForm(initial=initial))
    form = BorrowForm(request.POST)
    status = 400
    if form.is_valid():
        try:
            created = services.loan_request_create(borrower=request.user, **form.service_values())
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            messages.success(
                request,
                gettext(
                    "Loan request #{pk} is open for funding; your collateral is held until it is funded, cancelled or expires."
                ).format(pk=created.pk),
            )
            return redirect("lending:request_detail", pk=created.pk)
    return _borrow_page(request, form, status=status)


@login_required
@require_GET
def borrow_preview(request: HttpRequest) -> HttpResponse:
    """The preview part of the Borrow page, which htmx swaps in as the form changes. Always a
    200: a field typed wrong is part of the preview, not a failed request."""
    context = {"preview": borrow_preview_context(request.GET, request.user)}
    return render(request, "lending/_borrow_preview.html", context)


@login_required
@require_POST
def offer_take(request: HttpRequest, offer_id: int) -> HttpResponse:
    try:
        offer = selectors.loan_offer_get(offer_id=offer_id)
    except NotFound as exc:
        raise Http404(exc.message) from None
    form = _take_form(offer, request.POST)
    status = 400
    if form.is_valid():
        try:
            loan = services.loan_offer_take(
                offer_id=offer.pk, borrower=request.user, **form.cleaned_data
            )
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            messages.success(
                request,
                gettext("Loan #{pk} is active: the funds are in your wallet.").format(pk=loan.pk),
            )
            return redirect("lending:loan_detail", pk=loan.pk)
    return _borrow_page(
        request, BorrowForm(initial=BORROW_DEFAULTS), status=status, take=(offer.pk, form)
    )


# --- lend -------------------------------------------------------------------------------------


@login_required
@require_GET
def lend(request: HttpRequest) -> HttpResponse:
    """Open requests with filters on asset, least rate, longest term and highest LTV."""
    filters = LendFilterForm(request.GET)
    filters.is_valid()  # a bad choice just doesn't filter; its error is shown
    chosen = getattr(filters, "cleaned_data", {})
    min_rate: Decimal | None = None
    max_ltv: Decimal | None = None
    if chosen.get("min_rate"):
        try:
            min_rate = parse_decimal(chosen["min_rate"], field="min_rate")
        except ValidationFailed as exc:
            add_application_error(filters, exc)
    if chosen.get("max_ltv"):
        try:
            max_ltv = parse_decimal(chosen["max_ltv"], field="max_ltv") / 100
        except ValidationFailed as exc:
            add_application_error(filters, exc)
    found = selectors.loan_request_list_open(
        asset=chosen.get("asset") or None, min_rate=min_rate,
        max_term=chosen.get("max_term") or None, max_ltv=max_ltv,
    )  # fmt: skip
    page = Paginator(found, LEND_PAGE).get_page(request.GET.get("page"))
    ltvs = selectors.loan_request_ltvs(page)
    rows = [
        {
            "req": r,
            "gauge": ltv_gauge(ltvs.get(r.pk)),
            "funded_pct": int(r.funded * 100 / r.amount),
            "mine": r.borrower_id == request.user.pk,
        }
        for r in page
    ]
    return render(request, "lending/lend.html", {"filters": filters, "page": page, "rows": rows})


def _request_page(
    request: HttpRequest, req: LoanRequest, *, fund_form: FundForm | None = None, status: int = 200
) -> HttpResponse:
    user = request.user
    commitments = list(selectors.loan_commitment_list(request_id=req.pk))
    mine = next((c for c in commitments if c.lender_id == user.pk), None)
    is_borrower = req.borrower_id == user.pk
    schedule = services.loan_schedule(
        principal=req.amount, annual_rate=req.annual_rate, term_months=req.term_months,
        plan=req.plan, precision=req.asset.precision, start=timezone.now(),
    )  # fmt: skip
    interest = sum((r.interest for r in schedule), Decimal(0))
    ltv = selectors.loan_request_ltvs([req]).get(req.pk)
    is_open = req.state == R.OPEN and timezone.now() < req.funding_deadline
    has_loan = req.state == R.ACTIVE and (is_borrower or mine is not None)
    context = {
        "req": req,
        "state_label": REQUEST_STATE_LABELS.get(req.state, req.state),
        "schedule": schedule,
        "interest": interest,
        "total": req.amount + interest,
        "gauge": ltv_gauge(ltv, initial_line=True),
        "commitments": commitments,
        "mine": mine,
        "is_borrower": is_borrower,
        "is_open": is_open,
        "has_loan": has_loan,
        "funded_pct": int(req.funded * 100 / req.amount),
        "can_fund": is_open and not is_borrower and mine is None,
        "fund_form": fund_form or FundForm(),
        "balance": _balances(user).get(req.asset.code, "0"),
    }
    return render(request, "lending/request_detail.html", context, status=status)


@login_required
@require_GET
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A request's terms, its full schedule, what is funded and by whom, and the fund form (or,
    for its borrower, the cancel button)."""
    return _request_page(request, _request_or_404(pk))


@login_required
@require_POST
def request_fund(request: HttpRequest, pk: int) -> HttpResponse:
    req = _request_or_404(pk)
    form = FundForm(request.POST)
    status = 400
    if form.is_valid():
        try:
            services.loan_request_fund(
                request_id=req.pk, lender=request.user, amount=form.cleaned_data["amount"]
            )
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            req = _request_or_404(pk)
            if req.state == R.ACTIVE:
                messages.success(
                    request, gettext("Fully funded: loan #{pk} is active.").format(pk=req.pk)
                )
                return redirect("lending:loan_detail", pk=req.pk)
            messages.success(
                request,
                gettext(
                    "You committed {v1} {code}; it is held until the request activates or ends."
                ).format(
                    v1=amount_text(form.cleaned_data["amount"], req.asset.precision),
                    code=req.asset.code,
                ),
            )
            return redirect("lending:request_detail", pk=req.pk)
    return _request_page(request, _request_or_404(pk), fund_form=form, status=status)


@login_required
@require_POST
def request_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    req = _request_or_404(pk)
    if req.borrower_id != request.user.pk:
        raise Http404(f"Loan request #{pk} not found.")
    try:
        services.loan_request_cancel(request_id=req.pk, actor=request.user)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(
            request, gettext("Loan request #{pk} cancelled: your collateral and every lender's commitment went back.").format(pk=req.pk),
        )  # fmt: skip
    return redirect(_safe_next(request, reverse("lending:request_detail", kwargs={"pk": req.pk})))


# --- my loans ---------------------------------------------------------------------------------


def _grace_deadline(loan: Loan) -> datetime | None:
    if loan.late_since is None:
        return None
    return loan.late_since + timedelta(hours=settings.LENDING_GRACE_HOURS)


def loan_context(
    loan: Loan,
    user: Any,
    *,
    collateral_form: CollateralForm | None = None,
    repay_form: RepayForm | None = None,
    shares: dict[int, Decimal] | None = None,
) -> dict[str, Any]:
    """What a loan's card shows: schedule (paid, due, missed), next due date, LTV gauge, state
    and, for the borrower of an open loan, the top-up and early-repayment forms with the
    payoff quote."""
    rows: list[Installment] = list(loan.installments.order_by("n"))
    unpaid = [r for r in rows if r.status in (Installment.Status.DUE, Installment.Status.MISSED)]
    is_open = loan.state in (L.ACTIVE, L.LATE)
    is_borrower = loan.borrower_id == user.pk
    context: dict[str, Any] = {
        "loan": loan,
        "role": "borrower" if is_borrower else "lender",
        "state_label": LOAN_STATE_LABELS.get(loan.state, loan.state),
        "rows": rows,
        "next_due": unpaid[0] if unpaid and is_open else None,
        "paid_count": sum(1 for r in rows if r.status == Installment.Status.PAID),
        "outstanding": sum((r.total for r in unpaid), Decimal(0)) if is_open else Decimal(0),
        "gauge": ltv_gauge(selectors.loan_ltv(loan) if is_open else None),
        "grace_deadline": _grace_deadline(loan),
        "is_open": is_open,
        "my_share": (shares or {}).get(loan.pk),
    }
    if is_borrower and is_open:
        payoff = services.loan_payoff_quote(loan)
        context.update(
            payoff=payoff,
            collateral_form=collateral_form or CollateralForm(),
            repay_form=repay_form
            or RepayForm(initial={"quoted_total": fmt(payoff.total, loan.asset.precision)}),
        )
    return context


@login_required
@require_GET
def my_loans(request: HttpRequest) -> HttpResponse:
    """The user's loans as borrower and as lender, their open requests and their commitments."""
    user = request.user
    loans = list(selectors.loan_list_for_user(user=user).select_related("borrower"))
    commitments = list(
        selectors.loan_commitment_list_for_lender(user=user, request_states=[R.OPEN, R.ACTIVE])
    )
    shares = {c.request_id: c.amount for c in commitments}
    context = {
        "borrowed": [loan_context(x, user) for x in loans if x.borrower_id == user.pk],
        "lent": [loan_context(x, user, shares=shares) for x in loans if x.borrower_id != user.pk],
        "requests": selectors.loan_request_list_for_borrower(user=user, states=[R.OPEN]),
        "commitments": [c for c in commitments if c.request.state == R.OPEN],
    }
    return render(request, "lending/my_loans.html", context)


def _loan_page(
    request: HttpRequest, loan: Loan, *, status: int = 200, **forms: Any
) -> HttpResponse:
    shares = {
        c.request_id: c.amount
        for c in selectors.loan_commitment_list(request_id=loan.pk)
        if c.lender_id == request.user.pk
    }
    card_forms = {k: v for k, v in forms.items() if k not in ("dispute_form", "statement_form")}
    context = {
        "loan": loan,
        "card": loan_context(loan, request.user, shares=shares, **card_forms),
        "events": selectors.loan_events(loan_id=loan.pk),
        "disputes": selectors.loan_disputes_for_user(loan_id=loan.pk, user=request.user),
        "dispute_form": forms.get("dispute_form") or DisputeForm(),
        "statement_form": forms.get("statement_form") or StatementForm(),
        # Who lent what: the borrower sees every lender, a lender only their own share.
        "commitments": (
            selectors.loan_commitment_list(request_id=loan.pk)
            if loan.borrower_id == request.user.pk
            else None
        ),
    }
    return render(request, "lending/loan_detail.html", context, status=status)


@login_required
@require_GET
def loan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _loan_page(request, _loan_or_404(pk, request.user))


@login_required
@require_POST
def loan_add_collateral(request: HttpRequest, pk: int) -> HttpResponse:
    loan = _loan_or_404(pk, request.user)
    form = CollateralForm(request.POST)
    status = 400
    if form.is_valid():
        try:
            services.loan_add_collateral(
                loan_id=loan.pk, actor=request.user, amount=form.cleaned_data["amount"]
            )
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            messages.success(request, gettext("Collateral added to loan #{pk}.").format(pk=loan.pk))
            return redirect(_safe_next(request, reverse("lending:loan_detail", kwargs={"pk": pk})))
    return _loan_page(request, _loan_or_404(pk, request.user), status=status, collateral_form=form)


@login_required
@require_POST
def loan_repay(request: HttpRequest, pk: int) -> HttpResponse:
    """Early repayment of the quote the borrower saw; a quote that moved since is shown again."""
    loan = _loan_or_404(pk, request.user)
    form = RepayForm(request.POST)
    status = 400
    if form.is_valid() and loan.borrower_id == request.user.pk and loan.state in (L.ACTIVE, L.LATE):
        current = fmt(services.loan_payoff_quote(loan).total, loan.asset.precision)
        if form.cleaned_data["quoted_total"] != current:
            # Bound to the new figure, so confirming again pays what is shown now.
            again = RepayForm({"quoted_total": current})
            again.is_valid()
            again.add_error(
                None,
                gettext("The payoff is now {current} {code}: check it and confirm again.").format(
                    current=current, code=loan.asset.code
                ),
            )
            return _loan_page(request, loan, status=409, repay_form=again)
    if form.is_valid():
        try:
            services.loan_repay_early(loan_id=loan.pk, actor=request.user)
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            messages.success(
                request,
                gettext("Loan #{pk} repaid: your collateral is back in your wallet.").format(
                    pk=loan.pk
                ),
            )
            return redirect("lending:loan_detail", pk=pk)
    return _loan_page(request, _loan_or_404(pk, request.user), status=status, repay_form=form)


@login_required
@require_POST
def loan_dispute_open(request: HttpRequest, pk: int) -> HttpResponse:
    loan = _loan_or_404(pk, request.user)
    form = DisputeForm(request.POST)
    status = 400
    if form.is_valid():
        try:
            dispute = services.loan_dispute_open(
                loan_id=loan.pk, actor=request.user, **form.cleaned_data
            )
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            messages.success(
                request,
                gettext("Dispute #{pk} opened: a moderator will look at it.").format(pk=dispute.pk),
            )
            return redirect("lending:loan_detail", pk=pk)
    return _loan_page(request, loan, status=status, dispute_form=form)


@login_required
@require_POST
def loan_dispute_statement(request: HttpRequest, pk: int, dispute_id: int) -> HttpResponse:
    loan = _loan_or_404(pk, request.user)
    form = StatementForm(request.POST)
    status = 400
    if form.is_valid():
        if (
            not selectors.loan_disputes_for_user(loan_id=loan.pk, user=request.user)
            .filter(pk=dispute_id)
            .exists()
        ):
            raise Http404
        try:
            services.loan_dispute_statement(
                dispute_id=dispute_id, actor=request.user, text=form.cleaned_data["text"]
            )
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            messages.success(request, gettext("Statement added."))
            return redirect("lending:loan_detail", pk=pk)
    return _loan_page(request, loan, status=status, statement_form=form)
