"""The browser UI of the marketplace: order book, offers, trade rooms and the wallet.

Views are thin: they parse a form, call one service or selector, and render or redirect. Every
business rule lives in the services; their ApplicationError becomes a form error or a message on
the page (with the error's HTTP status), never a server error.
"""

from __future__ import annotations

from escrow import services as escrow_services

import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import Profile
from escrow.selectors import trader_stats, trader_stats_recent
from common.errors import ApplicationError, NotFound, ValidationFailed
from common.money import parse_amount
from disputes import selectors as dispute_selectors
from disputes.services import dispute_open
from escrow import selectors as escrow_selectors
from escrow import services as escrow
from ledger import selectors as ledger_selectors
from ledger import services as ledger
from ledger.adapters import get_chain_adapter
from ledger.models import Transfer, Withdrawal
from marketplace import selectors, services
from marketplace.forms import (
    DisputeForm,
    OfferForm,
    OrderBookFilterForm,
    QuickTradeForm,
    TakeOfferForm,
    WithdrawalForm,
    add_application_error,
)
from marketplace.models import Offer, PriceIndex
from escrow.models import Trade
from marketplace.templatetags.money import amount as amount_text

S = Trade.State

STATE_LABELS = {
    S.FUNDED: "Awaiting payment",
    S.PAID: "Paid · awaiting release",
    S.RELEASING: "Settling…",
    S.COMPLETED: "Completed",
    S.CANCELLED: "Cancelled",
    S.EXPIRED: "Expired",
    S.DISPUTED: "In dispute",
    S.REFUNDING: "Settling…",
    S.REFUNDED: "Refunded",
    S.SPLITTING: "Settling…",
    S.SPLIT: "Split by moderator",
}
EVENT_LABELS = {
    S.FUNDED: "Trade opened · crypto locked in escrow",
    S.PAID: "Marked as paid by the buyer",
    S.RELEASING: "Released · settlement queued",
    S.COMPLETED: "Completed · crypto delivered to the buyer",
    S.CANCELLED: "Cancelled · crypto returned to the seller",
    S.EXPIRED: "Expired · payment window ended",
    S.DISPUTED: "Dispute opened",
    S.REFUNDING: "Moderator decided: refund the seller",
    S.REFUNDED: "Refunded to the seller",
    S.SPLITTING: "Moderator decided: split",
    S.SPLIT: "Split settled",
}
SETTLING_STATES = frozenset({S.RELEASING, S.REFUNDING, S.SPLITTING})
FINAL_STATES = escrow.FINAL_STATES
ORDER_BOOK_PAGE = 50
TRANSFERS_PAGE = 50
TRADES_PAGE = 50


# --- helpers ----------------------------------------------------------------------------------


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def _offer_or_404(offer_id: int, viewer: Any = None) -> Offer:
    try:
        return selectors.offer_get(offer_id=offer_id, viewer=viewer)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _own_offer_or_404(offer_id: int, user: Any) -> Offer:
    offer = _offer_or_404(offer_id)
    if offer.maker_id != user.pk:
        raise Http404(f"Offer #{offer_id} not found.")
    return offer


def _trade_or_404(trade_id: int, user: Any) -> Trade:
    try:
        return selectors.trade_get_for_user(trade_id=trade_id, user=user)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _price_index_json() -> dict[str, str]:
    """Index prices for the offer form's live preview of a floating price."""
    rows = PriceIndex.objects.select_related("asset", "fiat")
    return {f"{p.asset.code}/{p.fiat.code}": str(p.price.normalize()) for p in rows}


# --- order book -------------------------------------------------------------------------------


def _order_book_context(request: HttpRequest, data: dict[str, Any]) -> dict[str, Any]:
    filters = OrderBookFilterForm({"side": "buy", "asset": "BTC", "fiat": "EUR", **data})
    filters.is_valid()  # an unknown choice just doesn't filter; its error is shown
    chosen = getattr(filters, "cleaned_data", {})
    side = chosen.get("side") or "buy"
    fiat_amount: Decimal | None = None
    if chosen.get("amount"):
        try:
            fiat_amount = parse_amount(chosen["amount"], precision=2, field="amount")
        except ValidationFailed as exc:
            add_application_error(filters, exc)
    # The visitor buys by taking sell offers, and sells by taking buy offers.
    book_side = Offer.Side.SELL if side == "buy" else Offer.Side.BUY
    offers = selectors.offer_book(
        side=book_side,
        asset=chosen.get("asset") or None,
        fiat=chosen.get("fiat") or None,
        payment_method=chosen.get("payment_method") or None,
        fiat_amount=fiat_amount,
        viewer=request.user,
    )
    page = Paginator(offers, ORDER_BOOK_PAGE).get_page(request.GET.get("page"))
    names = {o.maker_id: o.maker.username for o in page}
    stats = trader_stats_recent(user_ids=sorted(names), usernames=names)
    last_seen = dict(
        Profile.objects.filter(user_id__in={o.maker_id for o in page}).values_list(
            "user_id", "last_seen"
        )
    )
    # Why an offer isn't open to this visitor, shown in place of its Buy/Sell button.
    unmet = selectors.offers_unmet_for_viewer(offers=list(page), viewer=request.user, short=True)
    rows = [
        {
            "offer": o,
            "stats": stats.get(o.maker_id),
            "last_seen": last_seen.get(o.maker_id),
            "requirements": selectors.offer_requirements(o),
            "unmet": unmet.get(o.pk, []),
        }
        for o in page
    ]
    return {
        "filters": filters,
        "side": side,
        "asset_code": chosen.get("asset") or "BTC",
        "page": page,
        "rows": rows,
        "quick_form": QuickTradeForm(
            initial={
                "side": side,
                "asset": chosen.get("asset") or "BTC",
                "fiat": chosen.get("fiat") or "EUR",
            }
        ),
    }


@require_GET
def order_book(request: HttpRequest) -> HttpResponse:
    context = _order_book_context(request, request.GET.dict())
    return render(request, "marketplace/order_book.html", context)


@require_POST
def quick_trade(request: HttpRequest) -> HttpResponse:
    """Take the best offer that fits at once (offer_match), then go to the trade room."""
    if not request.user.is_authenticated:
        return redirect_to_login(reverse("home"))
    form = QuickTradeForm(request.POST)
    status = 400
    if form.is_valid():
        data = form.cleaned_data
        try:
            trade = escrow_services.trade_match(
                taker=request.user,
                side=data["side"],
                asset=data["asset"],
                fiat=data["fiat"],
                fiat_amount=data["fiat_amount"],
                payment_method=data["payment_method"] or None,
            )
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            messages.success(request, f"Trade #{trade.pk} opened. Follow the steps below.")
            return redirect("trade_detail", trade_id=trade.pk)
    book = {k: request.POST.get(k, "") for k in ("side", "asset", "fiat", "payment_method")}
    context = _order_book_context(request, book)
    context["quick_form"] = form
    context["quick_open"] = True
    return render(request, "marketplace/order_book.html", context, status=status)


# --- offers -----------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def offer_detail(request: HttpRequest, offer_id: int) -> HttpResponse:
    """An offer's terms and the form to take it (or why it isn't open to this visitor)."""
    offer = _offer_or_404(offer_id, viewer=request.user)
    form = TakeOfferForm(offer=offer)
    status = 200
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        form = TakeOfferForm(request.POST, offer=offer)
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            try:
                trade = escrow_services.trade_open(
                    offer_id=offer.pk,
                    taker=request.user,
                    amount=data["amount"] or None,
                    fiat_amount=data["fiat_amount"] or None,
                    payment_method=data["payment_method"] or None,
                )
            except ApplicationError as exc:
                add_application_error(form, exc)
                status = exc.status
            else:
                messages.success(request, f"Trade #{trade.pk} opened. Follow the steps below.")
                return redirect("trade_detail", trade_id=trade.pk)
    # The taker's verb: taking a sell offer buys the asset.
    verb = "Buy" if offer.side == Offer.Side.SELL else "Sell"
    context = {
        "offer": offer,
        "form": form,
        "verb": verb,
        "stats": trader_stats(user=offer.maker),
        "is_own": request.user.is_authenticated and offer.maker_id == request.user.pk,
        "methods": list(offer.payment_methods.all()),
        "requirements": selectors.offer_requirements(offer),
        "unmet": selectors.offers_unmet_for_viewer(offers=[offer], viewer=request.user).get(
            offer.pk, []
        ),
    }
    return render(request, "marketplace/offer_detail.html", context, status=status)


def _offer_form_page(
    request: HttpRequest, form: OfferForm, *, offer: Offer | None, status: int = 200
) -> HttpResponse:
    balances = {
        w.asset.code: amount_text(w.available, w.asset.precision)
        for w in ledger_selectors.wallet_list_for_user(user=request.user)
    }
    context = {
        "form": form,
        "offer": offer,
        "price_index": _price_index_json(),
        "balances": balances,
    }
    return render(request, "marketplace/offer_form.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def offer_new(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        initial = {k: request.GET[k] for k in ("side", "asset", "fiat") if k in request.GET}
        return _offer_form_page(request, OfferForm(initial=initial), offer=None)
    form = OfferForm(request.POST)
    status = 400
    if form.is_valid():
        try:
            offer = services.offer_create(maker=request.user, **form.service_values())
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            messages.success(request, f"Offer #{offer.pk} is live in the order book.")
            return redirect("my_offers")
    return _offer_form_page(request, form, offer=None, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def offer_edit(request: HttpRequest, offer_id: int) -> HttpResponse:
    offer = _own_offer_or_404(offer_id, request.user)
    initial = OfferForm.initial_for(offer)
    if request.method != "POST":
        return _offer_form_page(request, OfferForm(initial=initial, offer=offer), offer=offer)
    form = OfferForm(request.POST, initial=initial, offer=offer)
    status = 400
    if form.is_valid():
        try:
            services.offer_update(offer_id=offer.pk, actor=request.user, **form.service_values())
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            messages.success(request, f"Offer #{offer.pk} updated.")
            return redirect("my_offers")
    return _offer_form_page(request, form, offer=offer, status=status)


def _offer_command(request: HttpRequest, offer_id: int, command: str) -> HttpResponse:
    try:
        if command == "delete":
            services.offer_delete(offer_id=offer_id, actor=request.user)
            messages.success(request, f"Offer #{offer_id} deleted. Open trades on it go on.")
        else:
            active = command == "resume"
            services.offer_set_active(offer_id=offer_id, actor=request.user, active=active)
            messages.success(
                request,
                f"Offer #{offer_id} is live again."
                if active
                else f"Offer #{offer_id} is paused: it is hidden from the order book.",
            )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect(_safe_next(request, reverse("my_offers")))


@login_required
@require_POST
def offer_pause(request: HttpRequest, offer_id: int) -> HttpResponse:
    return _offer_command(request, offer_id, "pause")


@login_required
@require_POST
def offer_resume(request: HttpRequest, offer_id: int) -> HttpResponse:
    return _offer_command(request, offer_id, "resume")


@login_required
@require_POST
def offer_delete(request: HttpRequest, offer_id: int) -> HttpResponse:
    return _offer_command(request, offer_id, "delete")


@login_required
@require_GET
def my_offers(request: HttpRequest) -> HttpResponse:
    offers = (
        selectors.offer_list_for_user(user=request.user)
        .annotate(
            trades_count=Count("trades", distinct=True),
            open_trades=Count("trades", filter=~Q(trades__state__in=FINAL_STATES), distinct=True),
        )
        .order_by("-created_at", "-pk")
    )
    return render(request, "marketplace/my_offers.html", {"offers": offers})


# --- trades -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TradeAction:
    """A button of the trade room: the target state, who presses it and the service it calls."""

    slug: str
    to: str
    label: str
    style: str
    confirm_style: str


ACTIONS = {
    "mark-paid": TradeAction("mark-paid", S.PAID, "I have paid", "primary", "primary"),
    "release": TradeAction("release", S.RELEASING, "Release crypto", "buy", "buy"),
    "cancel": TradeAction("cancel", S.CANCELLED, "Cancel trade", "ghost", "danger"),
    "dispute": TradeAction("dispute", S.DISPUTED, "Open a dispute", "danger-ghost", "danger"),
}
ACTION_FOR_STATE = {a.to: a for a in ACTIONS.values()}


def _run_action(
    action: TradeAction, *, trade: Trade, user: Any, reason: str, otp: str | None = None
) -> Trade:
    if action.slug == "mark-paid":
        return escrow.trade_mark_paid(trade_id=trade.pk, actor=user)
    if action.slug == "release":
        return escrow.escrow_release(trade_id=trade.pk, actor=user, otp=otp)
    if action.slug == "cancel":
        return escrow.trade_cancel(trade_id=trade.pk, actor=user)
    raise ValueError(f"unknown action {action.slug}")


DONE_MESSAGES = {
    "mark-paid": "Marked as paid. The seller has been asked to confirm and release.",
    "release": "Released. The crypto is being settled to the buyer.",
    "cancel": "Trade cancelled. The crypto went back to the seller.",
    "dispute": "Dispute opened. A moderator will review the trade; the escrow stays locked.",
}


def _trade_room(trade: Trade, user: Any) -> dict[str, Any]:
    """Everything the trade room shows, computed once for the page and for its live partial."""
    now = timezone.now()
    role = trade.role_of(user)
    moves = escrow.allowed_moves(trade=trade, role=role) if role else []
    deadline_passed = trade.state == S.FUNDED and now >= trade.payment_deadline
    dispute_opens_at: datetime | None = None
    if trade.state == S.PAID and trade.paid_at:
        opens = trade.paid_at + settings.DISPUTE_DELAY
        dispute_opens_at = opens if now < opens else None
    actions = []
    for to in moves:
        action = ACTION_FOR_STATE.get(to)
        if action is None:
            continue
        if action.slug == "mark-paid" and deadline_passed:
            continue  # the service refuses once the window ended; the sweeper expires it
        if action.slug == "dispute" and dispute_opens_at:
            continue  # shown as "a dispute can be opened from …" instead
        actions.append(action)
    events = [
        {"event": e, "label": EVENT_LABELS.get(e.new_state, e.new_state)}
        for e in trade.events.select_related("actor")
    ]
    # A settlement that failed waits for a moderator: the room says so instead of "settling".
    settlement_delayed = (
        trade.state in SETTLING_STATES
        and escrow_selectors.settlement_status_for_trade(trade_id=trade.pk) == "failed"
    )
    counterparty = None
    if role == "buyer":
        counterparty = trade.seller
    elif role == "seller":
        counterparty = trade.buyer
    version = ":".join(
        str(x)
        for x in (
            trade.state,
            len(events),
            bool(dispute_opens_at),
            deadline_passed,
            bool(role),
            settlement_delayed,
        )
    )
    return {
        "trade": trade,
        "role": role,
        "counterparty": counterparty,
        "actions": actions,
        "events": events,
        "state_label": "Settlement delayed"
        if settlement_delayed
        else STATE_LABELS.get(trade.state, trade.state),
        "is_final": trade.state in FINAL_STATES,
        "is_settling": trade.state in SETTLING_STATES,
        "settlement_delayed": settlement_delayed,
        "deadline_passed": deadline_passed,
        "dispute_opens_at": dispute_opens_at,
        "dispute_form": DisputeForm(),
        "version": version,
        "steps": _steps(trade, events),
    }


def _steps(trade: Trade, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The progress bar: the happy path, or the path this trade really took."""
    reached = {e["event"].new_state for e in events} | {trade.state}
    if reached & {S.CANCELLED, S.EXPIRED}:
        path = [S.FUNDED, S.CANCELLED if S.CANCELLED in reached else S.EXPIRED]
    elif S.DISPUTED in reached:
        end = {S.REFUNDING: S.REFUNDED, S.SPLITTING: S.SPLIT}
        settle = next((s for s in (S.RELEASING, S.REFUNDING, S.SPLITTING) if s in reached), None)
        path = [S.FUNDED]
        if S.PAID in reached:
            path.append(S.PAID)
        path.append(S.DISPUTED)
        if settle:
            path += [settle, end.get(settle, S.COMPLETED)]
        else:
            path.append("decision")
    else:
        path = [S.FUNDED, S.PAID, S.RELEASING, S.COMPLETED]
    names = {
        S.FUNDED: "Crypto in escrow",
        S.PAID: "Buyer paid",
        S.RELEASING: "Released",
        S.COMPLETED: "Completed",
        S.CANCELLED: "Cancelled",
        S.EXPIRED: "Expired",
        S.DISPUTED: "Dispute",
        S.REFUNDING: "Refund",
        S.REFUNDED: "Refunded",
        S.SPLITTING: "Split",
        S.SPLIT: "Settled",
        "decision": "Moderator decides",
    }
    current = path.index(trade.state) if trade.state in path else len(path) - 1
    return [
        {
            "name": names[s],
            "status": "done" if i < current else ("current" if i == current else "todo"),
        }
        for i, s in enumerate(path)
    ]


def _render_trade_room(
    request: HttpRequest,
    trade: Trade,
    *,
    status: int = 200,
    error: str = "",
    changed: bool = False,
) -> HttpResponse:
    context = _trade_room(trade, request.user)
    context.update(_chat_context(trade, request.user))
    context["dispute"] = dispute_selectors.dispute_for_trade(trade_id=trade.pk)
    if context["dispute"] is not None:
        context["evidence"] = dispute_selectors.evidence_list(dispute=context["dispute"])
        context["sla_hours"] = settings.DISPUTE_SLA_HOURS
    context["error"] = error
    context["changed"] = changed
    if context["counterparty"] is not None:
        context["counterparty_stats"] = trader_stats(user=context["counterparty"])
    return render(request, "marketplace/trade_detail.html", context, status=status)


@login_required
@require_GET
def trade_detail(request: HttpRequest, trade_id: int) -> HttpResponse:
    return _render_trade_room(request, _trade_or_404(trade_id, request.user))


@login_required
@require_GET
def trade_status(request: HttpRequest, trade_id: int) -> HttpResponse:
    """The live part of the trade room (state, timeline, buttons) that htmx polls every 3s.
    Nothing changed since the version the page shows: 204, so htmx leaves an open dialog alone."""
    trade = _trade_or_404(trade_id, request.user)
    context = _trade_room(trade, request.user)
    if request.GET.get("v") == context["version"]:
        return HttpResponse(status=204)
    return render(request, "marketplace/_trade_live.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def trade_action(request: HttpRequest, trade_id: int, action: str) -> HttpResponse:
    """Mark paid, release, cancel or dispute. A POST carries the state the page showed; if the
    trade moved on meanwhile nothing is done. Without confirm=1 it shows the confirmation page
    (what the <details> dialog of the trade room says, for browsers without it)."""
    spec = ACTIONS.get(action)
    if spec is None:
        raise Http404("No such action.")
    trade = _trade_or_404(trade_id, request.user)
    expected = request.POST.get("expected_state") if request.method == "POST" else None
    if expected is not None and expected != trade.state:
        return _render_trade_room(request, trade, status=409, changed=True)
    if request.method != "POST" or expected is None or request.POST.get("confirm") != "1":
        room = _trade_room(trade, request.user)
        if spec not in room["actions"]:
            messages.info(request, "That step isn't available on this trade right now.")
            return redirect("trade_detail", trade_id=trade.pk)
        form = DisputeForm(request.POST or None) if spec.slug == "dispute" else None
        return render(
            request, "marketplace/trade_confirm.html", {**room, "action": spec, "form": form}
        )
    try:
        if spec.slug == "dispute":
            form = DisputeForm(request.POST)
            if not form.is_valid():
                room = _trade_room(trade, request.user)
                context = {**room, "action": spec, "form": form}
                return render(request, "marketplace/trade_confirm.html", context, status=400)
            dispute_open(
                trade_id=trade.pk,
                actor=request.user,
                category=form.cleaned_data["category"],
                text=form.cleaned_data["reason"],
            )
        else:
            _run_action(
                spec, trade=trade, user=request.user, reason="", otp=request.POST.get("otp")
            )
    except ApplicationError as exc:
        fresh = _trade_or_404(trade_id, request.user)
        return _render_trade_room(request, fresh, status=exc.status, error=exc.message)
    messages.success(request, DONE_MESSAGES[spec.slug])
    return redirect("trade_detail", trade_id=trade.pk)


TRADE_FILTERS = {"all": "All", "active": "Active", "finished": "Finished"}


@login_required
@require_GET
def my_trades(request: HttpRequest) -> HttpResponse:
    show = request.GET.get("show", "all")
    if show not in TRADE_FILTERS:
        show = "all"
    trades = selectors.trade_list_for_user(user=request.user)
    if show == "active":
        trades = trades.exclude(state__in=FINAL_STATES)
    elif show == "finished":
        trades = trades.filter(state__in=FINAL_STATES)
    page = Paginator(trades, TRADES_PAGE).get_page(request.GET.get("page"))
    rows = [
        {
            "trade": t,
            "role": t.role_of(request.user),
            "counterparty": t.seller if t.buyer_id == request.user.pk else t.buyer,
            "label": STATE_LABELS.get(t.state, t.state),
        }
        for t in page
    ]
    context = {"page": page, "rows": rows, "show": show, "filters": TRADE_FILTERS}
    return render(request, "marketplace/my_trades.html", context)


# --- wallet -----------------------------------------------------------------------------------

TRANSFER_KINDS = {
    Transfer.Kind.DEPOSIT: "Deposit",
    Transfer.Kind.WITHDRAWAL: "Withdrawal",
    Transfer.Kind.ESCROW_HOLD: "Escrow",
    Transfer.Kind.TRADE_PAYOUT: "Trade payout",
    Transfer.Kind.TRADE_FEE: "Trade fee",
}
FLAG_NOTES = {
    Transfer.Flags.PENDING: "held",
    Transfer.Flags.POST_PENDING: "hold settled",
    Transfer.Flags.VOID_PENDING: "hold returned",
}


def _transfer_row(transfer: Transfer, user: Any) -> dict[str, Any]:
    """A transfer as the user sees it: what it did to their available balance."""
    outgoing = transfer.debit_account.user_id == user.pk
    flags = transfer.flags
    if flags == Transfer.Flags.POST_PENDING:
        # The hold already left the available balance; only an unposted rest comes back.
        back = transfer.pending.amount - transfer.amount if transfer.pending else Decimal(0)
        sign, change = ("+", back) if back > 0 else ("", transfer.amount)
    elif flags == Transfer.Flags.VOID_PENDING:
        sign, change = ("+", transfer.amount) if outgoing else ("", transfer.amount)
    else:
        sign, change = ("-", transfer.amount) if outgoing else ("+", transfer.amount)
    return {
        "t": transfer,
        "kind": TRANSFER_KINDS.get(transfer.kind, transfer.kind),
        "note": FLAG_NOTES.get(flags, ""),
        "sign": sign,
        "change": change,
    }


def _recent_withdrawals(user: Any) -> list[Withdrawal]:
    # Not yet a ledger selector; the wallet page shows the last few with their status.
    return list(Withdrawal.objects.filter(user=user).select_related("asset")[:10])


@login_required
@require_http_methods(["GET", "POST"])
def wallet(request: HttpRequest) -> HttpResponse:
    """Balances, deposit instructions, the withdrawal form and the transfer history."""
    form = WithdrawalForm(initial={"asset": request.GET.get("asset", "BTC")})
    status = 200
    if request.method == "POST":
        form = WithdrawalForm(request.POST)
        status = 400
        if form.is_valid():
            data = form.cleaned_data
            try:
                withdrawal = ledger.withdrawal_request(
                    user=request.user,
                    asset_code=data["asset"],
                    amount=data["amount"],
                    address=data["address"],
                    otp=data.get("otp"),
                )
            except ApplicationError as exc:
                add_application_error(form, exc)
                status = exc.status
            else:
                messages.success(
                    request,
                    f"Withdrawal of {amount_text(withdrawal.amount, withdrawal.asset.precision)} "
                    f"{withdrawal.asset.code} requested. The amount is held until it is sent.",
                )
                return redirect("wallet")
    wallets = ledger_selectors.wallet_list_for_user(user=request.user)
    adapter = get_chain_adapter()
    deposits = [
        {
            "asset": w.asset,
            "text": adapter.deposit_instructions(user_id=request.user.pk, asset=w.asset),
        }
        for w in wallets
    ]
    transfers = ledger_selectors.transfer_list_for_user(user=request.user).select_related("pending")
    page = Paginator(transfers, TRANSFERS_PAGE).get_page(request.GET.get("page"))
    context = {
        "wallets": wallets,
        "deposits": deposits,
        "form": form,
        "page": page,
        "rows": [_transfer_row(t, request.user) for t in page],
        "withdrawals": _recent_withdrawals(request.user),
        "balances": {w.asset.code: amount_text(w.available, w.asset.precision) for w in wallets},
    }
    return render(request, "marketplace/wallet.html", context, status=status)


# --- the trade room's chat ----------------------------------------------------------------------


def _chat_context(trade: Trade, user: Any) -> dict[str, Any]:
    chat = list(selectors.trade_messages(trade=trade))
    return {
        "trade": trade,
        "chat": chat,
        "chat_version": f"{len(chat)}:{chat[-1].pk if chat else 0}",
        "chat_live": trade.state not in FINAL_STATES,
        "me": user,
    }


@login_required
@require_GET
def trade_chat(request: HttpRequest, trade_id: int) -> HttpResponse:
    """The chat list that htmx polls; 204 when nothing new, so a half-typed message stays put."""
    trade = _trade_or_404(trade_id, request.user)
    context = _chat_context(trade, request.user)
    if request.GET.get("v") == context["chat_version"]:
        return HttpResponse(status=204)
    return render(request, "marketplace/_trade_chat_list.html", context)


@login_required
@require_POST
def trade_chat_send(request: HttpRequest, trade_id: int) -> HttpResponse:
    trade = _trade_or_404(trade_id, request.user)
    error = ""
    try:
        escrow_services.trade_message_send(
            trade_id=trade.pk,
            actor=request.user,
            text=request.POST.get("text", ""),
            attachment=request.FILES.get("attachment"),
        )
    except ApplicationError as exc:
        error = exc.message
    if request.htmx:
        context = _chat_context(trade, request.user)
        context["chat_error"] = error
        context["chat_text"] = request.POST.get("text", "") if error else ""
        return render(
            request, "marketplace/_trade_chat.html", context, status=400 if error else 200
        )
    if error:
        messages.error(request, error)
    return redirect(f"{reverse('trade_detail', args=[trade.pk])}#chat")


@login_required
@require_GET
def trade_chat_attachment(request: HttpRequest, trade_id: int, message_id: int) -> HttpResponse:
    """Attachments go out only through this permission check, never from a public URL."""
    try:
        message = selectors.trade_message_attachment(
            trade_id=trade_id, message_id=message_id, user=request.user
        )
    except NotFound as exc:
        raise Http404(exc.message) from None
    return FileResponse(
        message.attachment.open("rb"),
        content_type=message.attachment_type,
        as_attachment=message.attachment_type == "application/pdf",
        filename=message.attachment_name,
    )


@login_required
@require_GET
def transfer_proof(request: HttpRequest, seq: int) -> HttpResponse:
    """The inclusion proof of one of the user's ledger entries against the latest signed
    checkpoint, checked here with the same code as the offline verifier, and downloadable; until
    a checkpoint holds the entry, when one will."""
    from ledger.verify import VerificationError, load_keys, verify_proof

    try:
        status = ledger_selectors.proof_status_for_entry(seq=seq, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    context: dict[str, Any] = {"seq": seq, "status": status}
    if status.state != ledger_selectors.ProofState.READY:
        return render(request, "marketplace/transfer_proof.html", context)
    try:
        proof = ledger_selectors.inclusion_proof(seq=seq, tree_size=None, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    except ApplicationError as exc:
        context["error"] = exc.message
        return render(request, "marketplace/transfer_proof.html", context, status=exc.status)
    try:
        entry = verify_proof(proof, load_keys({"keys": ledger_selectors.public_keys()}))
        context["verified"] = True
        context["entry"] = entry
    except VerificationError as exc:
        context["verified"] = False
        context["error"] = str(exc)
    context["proof"] = proof
    context["proof_json"] = json.dumps(proof, indent=2)
    return render(request, "marketplace/transfer_proof.html", context)


@login_required
@require_GET
def transfer_proof_by_id(request: HttpRequest, transfer_id: int) -> HttpResponse:
    """A transfer the sequencer has not sealed yet has no seq: this page says so, and sends to
    the seq's proof page once it has one."""
    try:
        status = ledger_selectors.proof_status_for_entry(transfer_id=transfer_id, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    if status.seq is not None:
        return redirect("transfer_proof", seq=status.seq)
    context = {"seq": None, "status": status}
    return render(request, "marketplace/transfer_proof.html", context)
