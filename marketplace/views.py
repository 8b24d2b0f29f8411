"""The order book and makers' offers (the browser UI). Thin: each view parses a form and calls one
service or selector."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import F
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import get_template
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.utils.translation import get_language, gettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import Profile
from accounts.selectors import buying_block_reason
from common.db import replica_reads
from common.errors import ApplicationError, NotFound, ValidationFailed
from common.forms import add_application_error
from common.money import parse_amount
from common.templatetags.money import amount as amount_text
from ledger import selectors as ledger_selectors
from marketplace import book_cache, selectors, services
from marketplace.currencies import MAX_MINOR_UNITS, parse_fiat_amount
from marketplace.forms import (
    OfferForm,
    OrderBookFilterForm,
    QuickTradeForm,
)
from marketplace.models import Offer, PriceIndex
from marketplace.prices.chart import price_chart
from marketplace.prices.history import stale_pairs
from marketplace.selectors import trader_stats_recent

ORDER_BOOK_PAGE = 50
User = get_user_model()


# --- helpers ----------------------------------------------------------------------------------


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def offer_or_404(offer_id: int, viewer: Any = None) -> Offer:
    try:
        return selectors.offer_get(offer_id=offer_id, viewer=viewer)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _ownoffer_or_404(offer_id: int, user: Any) -> Offer:
    offer = offer_or_404(offer_id)
    if offer.maker_id != user.pk:
        raise Http404(f"Offer #{offer_id} not found.")
    return offer


def _price_index_json() -> dict[str, str]:
    """Index prices for the offer form's live preview of a floating price."""
    rows = PriceIndex.objects.select_related("asset", "fiat")
    return {f"{p.asset.code}/{p.fiat.code}": str(p.price.normalize()) for p in rows}


# --- order book -------------------------------------------------------------------------------


def buying_paused_for(user: Any) -> str | None:
    """Why this visitor may not buy now (escrow's daily cancellation limit), or None."""
    if not getattr(user, "is_authenticated", False):
        return None
    return buying_block_reason(Profile.objects.filter(user_id=user.pk).first())


@dataclass(frozen=True)
class BookPage:
    """A page of the book's numbers, for includes/pagination.html: cached with the page (a
    Paginator holds its queryset), `object_list` the offers this viewer sees on it."""

    number: int
    num_pages: int
    object_list: Sequence[Offer]

    @property
    def paginator(self) -> BookPage:
        return self

    def has_next(self) -> bool:
        return self.number < self.num_pages

    def has_previous(self) -> bool:
        return self.number > 1

    def has_other_pages(self) -> bool:
        return self.has_next() or self.has_previous()

    def next_page_number(self) -> int:
        return self.number + 1

    def previous_page_number(self) -> int:
        return self.number - 1

    def __iter__(self) -> Iterator[Offer]:
        return iter(self.object_list)

    def __len__(self) -> int:
        return len(self.object_list)


class BookOffer(selectors.TakerTerms):
    """An offer of a cached book page, as the viewer's part and the page's callers read it: the
    terms its requirements are checked against (no model object to unpickle per row), and its
    maker as a stand-in user holding only id and username."""

    @property
    def maker(self) -> Any:
        return User(pk=self.maker_id, username=self.maker_username)


# Where a cached row's HTML takes the viewer's cells (_book_row.html); NUL never comes out of a
# rendered template otherwise.
SEEN_CELL, ACTION_CELL = mark_safe("\x00seen\x00"), mark_safe("\x00action\x00")


def _render_bare(template_name: str, context: dict[str, Any]) -> str:
    """A fragment of the book page: no request, so no context processors (each costs a query)."""
    return get_template(template_name).render(context).strip()


def _public_rows(
    *, items: Sequence[Offer], stats: dict[int, Any], side: str
) -> list[dict[str, Any]]:
    """Each offer's row of the page rendered once for every viewer, cut where the viewer's cells
    go (the maker's online status, the action cell), with the action cell's two answers that
    are the same for everyone: the button to take it, and "your offer" for its maker."""
    rows = []
    for offer in items:
        public_stats = replace(stats[offer.maker_id], last_seen=None)  # read fresh per request
        requirements = selectors.offer_requirements(offer)
        html = _render_bare(
            "marketplace/_book_row.html",
            {
                "offer": offer,
                "stats": public_stats,
                "row": {"requirements": requirements},
                "seen_cell": SEEN_CELL,
                "action_cell": ACTION_CELL,
            },
        )
        head, rest = html.split(SEEN_CELL)
        middle, tail = rest.split(ACTION_CELL)
        action = {"offer": offer, "row": {"unmet": []}, "side": side}
        rows.append(
            {
                "offer": BookOffer(**vars(selectors.offer_taker_terms(offer))),
                "stats": public_stats,
                "requirements": requirements,
                "html": (head, middle, tail),
                "action_take": _render_bare("marketplace/_book_row_action.html", action),
                "action_own": _render_bare(
                    "marketplace/_book_row_action.html",
                    {**action, "user": {"is_authenticated": True, "pk": offer.maker_id}},
                ),
            }
        )
    return rows


def _public_book_page(
    *,
    side: str,
    asset: str | None,
    asset_code: str,
    fiat_code: str,
    payment_method: str | None,
    fiat_amount: Decimal | None,
    page_number: str | None,
    range_key: str | None,
) -> dict[str, Any]:
    """A page of the HTML book as every viewer sees it (marketplace.book_cache): its rows'
    HTML (_public_rows) with their makers' names and stats (without when they were last seen),
    requirements in words and payment methods; the page numbers; the pair's price chart and
    stale pairs. Plain data and strings: the viewer's part is applied after the cache
    (_book_for_viewer)."""
    offers = selectors.offer_book(
        side=side,
        asset=asset,
        fiat=fiat_code or None,
        payment_method=payment_method,
        fiat_amount=fiat_amount,
    )
    # Of the maker, only the username: no user row (nor its password hash) goes to the cache.
    offers = offers.select_related(None).select_related("asset", "fiat")
    offers = offers.annotate(maker_username=F("maker__username"))
    page = Paginator(offers, ORDER_BOOK_PAGE).get_page(page_number)
    items = list(page)
    maker_field = Offer._meta.get_field("maker")
    for offer in items:
        maker_field.set_cached_value(offer, User(pk=offer.maker_id, username=offer.maker_username))
    names = {o.maker_id: o.maker_username for o in items}
    stats = trader_stats_recent(user_ids=sorted(names), usernames=names)
    # The visitor's side: they buy by taking sell offers.
    visitor_side = "buy" if side == Offer.Side.SELL else "sell"
    rows = _public_rows(items=items, stats=stats, side=visitor_side)
    # The pair's price chart, and why floating offers are missing when its price is stale.
    stale = [
        pair
        for pair in stale_pairs()
        if pair.asset == asset_code and (not fiat_code or pair.fiat == fiat_code)
    ]
    chart = (
        price_chart(asset_code=asset_code, fiat_code=fiat_code, range_key=range_key)
        if fiat_code
        else None
    )
    return {
        "rows": rows,
        "side": visitor_side,
        "seen_online": _render_bare("marketplace/_book_row_seen.html", {"row": {"online": True}}),
        "seen_never": _render_bare("marketplace/_book_row_seen.html", {"row": {}}),
        "page": BookPage(
            number=page.number,
            num_pages=page.paginator.num_pages,
            object_list=[row["offer"] for row in rows],
        ),
        "stale_pairs": stale,
        "price_chart": chart,
    }


def _book_for_viewer(public: dict[str, Any], viewer: Any) -> tuple[list[dict[str, Any]], BookPage]:
    """What depends on the viewer, after the cache: makers blocked either way left out, why
    each offer is not open to them (their own offers always are), and when each maker was last
    seen, read now; each row's HTML is its cached public part with these two cells put in
    (rendered here only when they are not one of the answers cached with it)."""
    rows: list[dict[str, Any]] = public["rows"]
    if getattr(viewer, "is_authenticated", False) and rows:
        hidden = selectors.blocked_maker_ids(
            user=viewer, maker_ids={r["offer"].maker_id for r in rows}
        )
        rows = [r for r in rows if r["offer"].maker_id not in hidden]
    offers = [r["offer"] for r in rows]
    unmet = selectors.offers_unmet_for_viewer(offers=offers, viewer=viewer, short=True)
    seen = selectors.last_seen_of(user_ids=sorted({o.maker_id for o in offers}))
    viewer_id = viewer.pk if getattr(viewer, "is_authenticated", False) else None
    now = timezone.now()
    out = []
    for row in rows:
        offer = row["offer"]
        stats = replace(row["stats"], last_seen=seen.get(offer.maker_id))
        online, reasons = stats.is_online(now=now), unmet.get(offer.pk, [])
        if online:
            seen_cell = public["seen_online"]
        elif stats.last_seen:
            seen_cell = _render_bare(
                "marketplace/_book_row_seen.html", {"row": {"last_seen": stats.last_seen}}
            )
        else:
            seen_cell = public["seen_never"]
        if offer.maker_id == viewer_id:
            action_cell = row["action_own"]
        elif reasons:
            action_cell = _render_bare(
                "marketplace/_book_row_action.html",
                {"offer": offer, "row": {"unmet": reasons}, "side": public["side"]},
            )
        else:
            action_cell = row["action_take"]
        head, middle, tail = row["html"]
        out.append(
            {
                **row,
                "stats": stats,
                "last_seen": stats.last_seen,
                "online": online,
                "unmet": reasons,
                "html": mark_safe(head + seen_cell + middle + action_cell + tail),  # noqa: S308
            }
        )
    return out, replace(public["page"], object_list=offers)


def order_book_context(request: HttpRequest, data: dict[str, Any]) -> dict[str, Any]:
    filters = OrderBookFilterForm(
        {"side": "buy", "asset": "BTC", "fiat": "EUR", **data}, viewer=request.user
    )
    filters.is_valid()  # an unknown choice just doesn't filter; its error is shown
    chosen = getattr(filters, "cleaned_data", {})
    side = chosen.get("side") or "buy"
    fiat_amount: Decimal | None = None
    if chosen.get("amount"):
        try:
            if chosen.get("fiat"):
                fiat = selectors.fiat_get(code=chosen["fiat"])
                fiat_amount = parse_fiat_amount(chosen["amount"], fiat=fiat, field="amount")
            else:  # all currencies: no one currency's minor units to hold it to
                fiat_amount = parse_amount(
                    chosen["amount"], precision=MAX_MINOR_UNITS, field="amount"
                )
        except ValidationFailed as exc:
            add_application_error(filters, exc)
    # The visitor buys by taking sell offers, and sells by taking buy offers.
    book_side = Offer.Side.SELL if side == "buy" else Offer.Side.BUY
    asset_code, fiat_code = chosen.get("asset") or "BTC", chosen.get("fiat") or ""
    asset = chosen.get("asset") or None  # the book's filter (the chart's pair: asset_code)
    payment_method = chosen.get("payment_method") or None
    page_number, range_key = request.GET.get("page"), data.get("range")
    # The public part from the cache, per book version (marketplace.book_cache); the language
    # is part of it (requirements and the chart are in words), then the viewer's part.
    variant = "html|" + "|".join(
        str(v)
        for v in (
            get_language(),
            book_side,
            asset,
            asset_code,
            fiat_code,
            payment_method,
            fiat_amount,
            range_key,
            page_number,
        )
    )
    public, _ = book_cache.cached(
        book=selectors.book_of(side=book_side, asset=asset, fiat=fiat_code),
        variant=variant,
        build=lambda: _public_book_page(
            side=book_side,
            asset=asset,
            asset_code=asset_code,
            fiat_code=fiat_code,
            payment_method=payment_method,
            fiat_amount=fiat_amount,
            page_number=page_number,
            range_key=range_key,
        ),
    )
    rows, page = _book_for_viewer(public, request.user)
    return {
        "stale_pairs": public["stale_pairs"],
        "price_chart": public["price_chart"],
        # The daily cancellation limit paused the visitor's buying: said before they try.
        "buying_paused": buying_paused_for(request.user) if side == "buy" else None,
        "filters": filters,
        "side": side,
        "asset_code": asset_code,
        "page": page,
        "rows": rows,
        "quick_form": QuickTradeForm(
            initial={
                "side": side,
                "asset": asset_code,
                "fiat": chosen.get("fiat") or "EUR",
            }
        ),
    }


@require_GET
@replica_reads
def order_book(request: HttpRequest) -> HttpResponse:
    context = order_book_context(request, request.GET.dict())
    return render(request, "marketplace/order_book.html", context)


# --- offers -----------------------------------------------------------------------------------


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
        return _offer_form_page(request, OfferForm(initial=initial, user=request.user), offer=None)
    form = OfferForm(request.POST, user=request.user)
    status = 400
    if form.is_valid():
        try:
            offer = services.offer_create(maker=request.user, **form.service_values())
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            messages.success(
                request, gettext("Offer #{pk} is live in the order book.").format(pk=offer.pk)
            )
            return redirect("my_offers")
    return _offer_form_page(request, form, offer=None, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def offer_edit(request: HttpRequest, offer_id: int) -> HttpResponse:
    offer = _ownoffer_or_404(offer_id, request.user)
    initial = OfferForm.initial_for(offer)
    if request.method != "POST":
        return _offer_form_page(
            request, OfferForm(initial=initial, offer=offer, user=request.user), offer=offer
        )
    form = OfferForm(request.POST, initial=initial, offer=offer, user=request.user)
    status = 400
    if form.is_valid():
        try:
            updated = services.offer_update(
                offer_id=offer.pk, actor=request.user, **form.service_values()
            )
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            if updated.closed_at is not None:
                messages.warning(
                    request,
                    gettext(
                        "Offer #{pk} updated, and still closed: what is left can't cover its minimum per trade. Raise the amount or lower the minimum to reopen it."
                    ).format(pk=offer.pk),
                )
            elif offer.closed_at is not None and updated.is_active:
                messages.success(
                    request, gettext("Offer #{pk} updated and reopened.").format(pk=offer.pk)
                )
            else:
                messages.success(request, gettext("Offer #{pk} updated.").format(pk=offer.pk))
            return redirect("my_offers")
    return _offer_form_page(request, form, offer=offer, status=status)


def _offer_command(request: HttpRequest, offer_id: int, command: str) -> HttpResponse:
    try:
        if command == "delete":
            services.offer_delete(offer_id=offer_id, actor=request.user)
            messages.success(
                request,
                gettext("Offer #{offer_id} deleted. Open trades on it go on.").format(
                    offer_id=offer_id
                ),
            )
        else:
            active = command == "resume"
            services.offer_set_active(offer_id=offer_id, actor=request.user, active=active)
            messages.success(
                request,
                gettext("Offer #{offer_id} is live again.").format(offer_id=offer_id)
                if active
                else gettext(
                    "Offer #{offer_id} is paused: it is hidden from the order book."
                ).format(offer_id=offer_id),
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
