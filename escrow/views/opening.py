"""Opening a trade in the browser: an offer's page with its take form, quick buy/sell from the
book, and the maker's offers with their open trades."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from common.errors import ApplicationError
from common.forms import add_application_error
from escrow import services as escrow
from escrow import services as escrow_services
from escrow.selectors import trader_stats
from marketplace import selectors
from marketplace.forms import QuickTradeForm, TakeOfferForm
from marketplace.models import Offer
from marketplace.prices.chart import price_chart
from marketplace.views import buying_paused_for, offer_or_404, order_book_context

# --- opening a trade ---------------------------------------------------------------------------


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
            messages.success(
                request, gettext("Trade #{pk} opened. Follow the steps below.").format(pk=trade.pk)
            )
            return redirect("trade_detail", trade_id=trade.pk)
    book = {k: request.POST.get(k, "") for k in ("side", "asset", "fiat", "payment_method")}
    context = order_book_context(request, book)
    context["quick_form"] = form
    context["quick_open"] = True
    return render(request, "marketplace/order_book.html", context, status=status)


def _quote_context(
    quote: escrow_services.TradeQuote | None, *, verb: str, error: ApplicationError | None
) -> dict[str, Any]:
    return {"quote": quote, "verb": verb, "quote_error": error}


def _offer_quote(offer: Offer, data: Any) -> dict[str, Any]:
    """The take form's breakdown for what the form holds now (nothing typed: nothing shown)."""
    verb = "Buy" if offer.side == Offer.Side.SELL else "Sell"
    amount, fiat_amount = (
        (data.get("amount") or "").strip(),
        (data.get("fiat_amount") or "").strip(),
    )
    if not amount and not fiat_amount:
        return _quote_context(None, verb=verb, error=None)
    try:
        quote = escrow_services.trade_quote(
            offer=offer, amount=amount or None, fiat_amount=None if amount else fiat_amount
        )
    except ApplicationError as exc:
        return _quote_context(None, verb=verb, error=exc)
    return _quote_context(quote, verb=verb, error=None)


@require_GET
def offer_quote(request: HttpRequest, offer_id: int) -> HttpResponse:
    """The take form's fee breakdown, which htmx swaps in as the amount changes: computed by the
    service trade_open opens the trade with (escrow.services.trade_quote). Always a 200: a field
    typed wrong is part of the breakdown, not a failed request."""
    offer = offer_or_404(offer_id, viewer=request.user)
    return render(request, "marketplace/_take_preview.html", _offer_quote(offer, request.GET))


@require_GET
def quick_quote(request: HttpRequest) -> HttpResponse:
    """Quick trade's breakdown: the best offer that fits now and what taking it comes to."""
    data = request.GET
    verb = "Sell" if data.get("side") == "sell" else "Buy"
    context = _quote_context(None, verb=verb, error=None)
    context["quick"] = True
    if request.user.is_authenticated and (data.get("fiat_amount") or "").strip():
        try:
            context["quote"] = escrow_services.trade_match_quote(
                taker=request.user,
                side=data.get("side", ""),
                asset=data.get("asset", ""),
                fiat=data.get("fiat", ""),
                fiat_amount=data.get("fiat_amount", "").strip(),
                payment_method=data.get("payment_method") or None,
            )
        except ApplicationError as exc:
            context["quote_error"] = exc
    return render(request, "marketplace/_take_preview.html", context)


@require_http_methods(["GET", "POST"])
def offer_detail(request: HttpRequest, offer_id: int) -> HttpResponse:
    """An offer's terms and the form to take it (or why it isn't open to this visitor)."""
    offer = offer_or_404(offer_id, viewer=request.user)
    form = TakeOfferForm(offer=offer, user=request.user)
    status = 200
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        form = TakeOfferForm(request.POST, offer=offer, user=request.user)
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
                    payment_account=data.get("payment_account"),
                )
            except ApplicationError as exc:
                add_application_error(form, exc)
                status = exc.status
            else:
                messages.success(
                    request,
                    gettext("Trade #{pk} opened. Follow the steps below.").format(pk=trade.pk),
                )
                return redirect("trade_detail", trade_id=trade.pk)
    # The taker's verb: taking a sell offer buys the asset.
    verb = "Buy" if offer.side == Offer.Side.SELL else "Sell"
    stats = trader_stats(user=offer.maker)
    context = {
        "offer": offer,
        "form": form,
        "verb": verb,
        "stats": stats,
        "is_own": request.user.is_authenticated and offer.maker_id == request.user.pk,
        "methods": list(offer.payment_methods.all()),
        "requirements": selectors.offer_requirements(offer),
        "unmet": selectors.offers_unmet_for_viewer(offers=[offer], viewer=request.user).get(
            offer.pk, []
        ),
    }
    # The pair's chart with this offer's margin line (a floating price follows the index).
    chart = price_chart(
        asset_code=offer.asset.code,
        fiat_code=offer.fiat.code,
        range_key=request.GET.get("range"),
        margin_percent=offer.margin_percent
        if offer.price_type == Offer.PriceType.FLOATING
        else None,
    )
    context["price_chart"] = chart
    context["stale_pairs"] = [chart.standing] if chart.standing.is_stale else []
    # issue 20: the maker's online status; a buyer paused by the daily cancellation limit is
    # told before they try (only when taking the offer would buy).
    context["maker_online"] = stats.is_online()
    if offer.side == Offer.Side.SELL and not context["is_own"]:
        context["buying_paused"] = buying_paused_for(request.user)
    if request.method == "POST":
        # The breakdown of what was sent; a refusal is already the form's error.
        context["quote"] = _offer_quote(offer, request.POST)["quote"]
    return render(request, "marketplace/offer_detail.html", context, status=status)


@login_required
@require_GET
def my_offers(request: HttpRequest) -> HttpResponse:
    offers = (
        selectors.offer_list_for_user(user=request.user)
        .annotate(
            trades_count=Count("trades", distinct=True),
            open_trades=Count(
                "trades", filter=~Q(trades__state__in=escrow.FINAL_STATES), distinct=True
            ),
        )
        .order_by("-created_at", "-pk")
    )
    return render(request, "marketplace/my_offers.html", {"offers": offers})
