"""The order book and makers' offers (the browser UI). Thin: each view parses a form and calls one
service or selector."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import F
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.template.loader import get_template, render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.utils.translation import get_language, gettext
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.selectors import blocked_ids_cached, buying_block_reason
from common.db import replica_reads
from common.errors import ApplicationError, NotFound, ValidationFailed
from common.forms import add_application_error
from common.money import parse_amount
from common.templatetags.money import amount as amount_text
from ledger import selectors as ledger_selectors
from marketplace import book_cache, book_frame, selectors, services
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
    # the profile the request may have read already (the book's method filter: its country)
    return buying_block_reason(getattr(user, "profile", None))


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
        # the viewer's blocked set from the cache (versioned: a block shows on the next read)
        hidden = blocked_ids_cached(user_id=viewer.pk)
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


@dataclass(frozen=True)
class BookQuery:
    """What a request's filters ask the book for, cleaned (OrderBookFilterForm)."""

    side: str  # what the visitor wants to do
    book_side: str  # the offers they take: sell offers to buy, buy offers to sell
    asset: str | None  # the book's filter (None: every asset)
    asset_code: str  # the page's asset (tabs, the chart's pair)
    fiat_code: str
    payment_method: str | None
    fiat_amount: Decimal | None
    page_number: str | None
    range_key: str | None
    quick_fiat: str

    @property
    def book(self) -> tuple[str, int, int] | None:
        return selectors.book_of(side=self.book_side, asset=self.asset, fiat=self.fiat_code)

    def variant(self) -> str:
        """The public part's cache variant: the language is part of it (requirements and the
        chart are in words)."""
        return "html|" + "|".join(
            str(v)
            for v in (
                get_language(),
                self.book_side,
                self.asset,
                self.asset_code,
                self.fiat_code,
                self.payment_method,
                self.fiat_amount,
                self.range_key,
                self.page_number,
            )
        )


def _book_query(
    request: HttpRequest, data: dict[str, Any]
) -> tuple[OrderBookFilterForm, BookQuery]:
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
    query = BookQuery(
        side=side,
        # The visitor buys by taking sell offers, and sells by taking buy offers.
        book_side=Offer.Side.SELL if side == "buy" else Offer.Side.BUY,
        asset=chosen.get("asset") or None,
        asset_code=chosen.get("asset") or "BTC",
        fiat_code=chosen.get("fiat") or "",
        payment_method=chosen.get("payment_method") or None,
        fiat_amount=fiat_amount,
        page_number=request.GET.get("page"),
        range_key=data.get("range"),
        quick_fiat=chosen.get("fiat") or "EUR",
    )
    return filters, query


def _public_for(query: BookQuery) -> dict[str, Any]:
    """The public part from the cache, per book version (marketplace.book_cache)."""
    public, _ = book_cache.cached(
        book=query.book,
        variant=query.variant(),
        build=lambda: _public_book_page(
            side=query.book_side,
            asset=query.asset,
            asset_code=query.asset_code,
            fiat_code=query.fiat_code,
            payment_method=query.payment_method,
            fiat_amount=query.fiat_amount,
            page_number=query.page_number,
            range_key=query.range_key,
        ),
    )
    return dict(public)


def _page_context(
    filters: OrderBookFilterForm, query: BookQuery, public: dict[str, Any]
) -> dict[str, Any]:
    """The page's context but for the viewer's part (rows, page, buying_paused)."""
    return {
        "stale_pairs": public["stale_pairs"],
        "price_chart": public["price_chart"],
        "filters": filters,
        "side": query.side,
        "asset_code": query.asset_code,
        "page": public["page"],
        "quick_form": QuickTradeForm(
            initial={"side": query.side, "asset": query.asset_code, "fiat": query.quick_fiat}
        ),
    }


def order_book_context(request: HttpRequest, data: dict[str, Any]) -> dict[str, Any]:
    filters, query = _book_query(request, data)
    public = _public_for(query)
    rows, page = _book_for_viewer(public, request.user)
    return {
        **_page_context(filters, query, public),
        # The daily cancellation limit paused the visitor's buying: said before they try.
        "buying_paused": buying_paused_for(request.user) if query.side == "buy" else None,
        "page": page,
        "rows": rows,
    }


# --- the order book's frame from the cache (marketplace/book_frame.py) ---

_query_memo: OrderedDict[str, tuple[float, BookQuery]] = OrderedDict()
_query_memo_lock = threading.Lock()
QUERY_MEMO_SIZE = 256
# The viewer's parts of base.html rendered per request for a signed-in viewer (a visitor's are
# the same for every visitor: in the frame).
SIGNED_IN_SLOTS = ("viewer_head", "viewer_live", "viewer_nav", "viewer_menu")
ROW = book_frame.slot("row")


def _book_query_of(request: HttpRequest) -> BookQuery:
    """_book_query of this query string, remembered per process for ORDER_BOOK_CACHE_SECONDS
    (the freshness of the forms' choices it is checked against, marketplace.forms)."""
    ttl = float(getattr(settings, "ORDER_BOOK_CACHE_SECONDS", 1))
    key, now = request.get_full_path(), time.monotonic()
    known = _query_memo.get(key) if ttl > 0 else None  # 0: never a memo (nor an old one)
    if known is not None and now < known[0]:
        return known[1]
    _, query = _book_query(request, request.GET.dict())
    if ttl > 0:
        with _query_memo_lock:  # threaded servers
            _query_memo[key] = (now + ttl, query)
            _query_memo.move_to_end(key)
            while len(_query_memo) > QUERY_MEMO_SIZE:
                _query_memo.popitem(last=False)
    return query


def _build_frame(request: HttpRequest, query: BookQuery) -> dict[str, Any]:
    """The page for every viewer like this one, cut at its slots (book_frame.Frame), with the
    public part it was built from and the rows' loop around one row."""
    filters, _ = _book_query(request, request.GET.dict())  # its errors are shown
    public = _public_for(query)
    names = ["viewer_messages", "viewer_paused", "viewer_rows"]
    if request.user.is_authenticated:
        names += SIGNED_IN_SLOTS
    context = {
        **_page_context(filters, query, public),
        "csrf_token": book_frame.slot("csrf"),
        "slots": {name: book_frame.slot(name) for name in names},
    }
    html = render_to_string("marketplace/order_book_frame.html", context, request)
    rows = {"side": query.side, "asset_code": query.asset_code}
    one = book_frame.render_blocks(
        request, "marketplace/order_book.html", ["viewer_rows"], {**rows, "rows": [{"html": ROW}]}
    )["viewer_rows"]
    empty = book_frame.render_blocks(
        request, "marketplace/order_book.html", ["viewer_rows"], {**rows, "rows": []}
    )["viewer_rows"]
    before, after = one.split(ROW)
    return {
        "public": public,
        "frame": book_frame.Frame.cut(html),
        "row": (before, after),
        "empty": empty,
    }


def _order_book_framed(request: HttpRequest) -> HttpResponse:
    """The book page from its cached frame, the viewer's parts put in (book_frame)."""
    user = request.user
    query = _book_query_of(request)
    signed_in = bool(user.is_authenticated)
    variant = "|".join(
        (
            "frame",
            query.variant(),
            timezone.get_current_timezone_name(),
            # the method filter's groups: the viewer's country first (their profile's)
            f"{signed_in}:{selectors.viewer_country(user=user)}",
            request.get_full_path(),
        )
    )
    entry, _ = book_cache.cached(
        book=query.book, variant=variant, build=lambda: _build_frame(request, query)
    )
    rows, _ = _book_for_viewer(entry["public"], user)
    token = get_token(request)  # and the CSRF cookie, as {% csrf_token %} sets it
    before, after = entry["row"]
    values = {
        "csrf": token,
        "viewer_rows": "".join(before + row["html"] + after for row in rows) or entry["empty"],
        "viewer_messages": "",
        "viewer_paused": "",
    }
    pending = list(messages.get_messages(request))  # shown now, as the page's loop marks them
    paused = buying_paused_for(user) if query.side == "buy" else None
    if paused:
        values.update(
            book_frame.render_blocks(
                request,
                "marketplace/order_book.html",
                ["viewer_paused"],
                {"buying_paused": paused},
            )
        )
    if pending:
        values.update(
            book_frame.render_blocks(
                request, "base.html", ["viewer_messages"], {"messages": pending}
            )
        )
    if signed_in:
        match = request.resolver_match
        values.update(
            book_frame.render_blocks(
                request,
                "base.html",
                SIGNED_IN_SLOTS,
                {"csrf_token": token, "name": match.url_name if match else None},
            )
        )
    return HttpResponse(entry["frame"].fill(values))


@require_GET
@replica_reads
def order_book(request: HttpRequest) -> HttpResponse:
    if not getattr(settings, "ORDER_BOOK_FRAME_CACHE", True):  # the page rendered whole
        context = order_book_context(request, request.GET.dict())
        return render(request, "marketplace/order_book.html", context)
    return _order_book_framed(request)


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
