from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from django.db.models import F, QuerySet
from django.utils import timezone
from django.utils.translation import gettext, gettext_lazy
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.selectors import blocked_cache_keys, blocked_ids_cached
from common.api import ERRORS, AmountInput, ApiView, CursorPage, ErrorSerializer, paginated
from common.db import replica_reads
from common.errors import ValidationFailed
from common.idempotency import idempotent
from common.money import AMOUNT_MAX_DIGITS, parse_decimal
from common.prepared import PreparedRead
from marketplace import book_cache, selectors, services
from marketplace.api.serializers import OfferOut
from marketplace.models import Offer, PriceIndex
from marketplace.selectors import TakerTerms


def _maker_stats(offers: list[Offer]) -> dict[int, Any]:
    return selectors.trader_stats_fresh(user_ids=list({o.maker_id for o in offers}))


def _book_maker_stats(offers: list[Offer]) -> dict[int, Any]:
    """The page's makers' stats, at most TRADER_STATS_CACHE_SECONDS old (the book's help says
    so): one cache round trip instead of counting every maker's trades on every request."""
    names = {o.maker_id: selectors.maker_name(o) for o in offers}
    return selectors.trader_stats_recent(user_ids=list(names), usernames=names)


def _decimal_param(request: Request, name: str) -> Decimal | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    value = parse_decimal(raw, field=name)
    if value < 0 or value.adjusted() >= AMOUNT_MAX_DIGITS:
        raise ValidationFailed(
            gettext("{name}: must be a positive number.").format(name=name),
            fields={name: [gettext("Must be positive.")]},
        )
    return value


class OfferInput(serializers.Serializer):
    side = serializers.ChoiceField(choices=Offer.Side.choices)
    asset = serializers.CharField(max_length=12)
    fiat = serializers.CharField(max_length=3)
    price_type = serializers.ChoiceField(choices=Offer.PriceType.choices)
    price = AmountInput(required=False, allow_null=True)
    margin_percent = AmountInput(required=False, allow_null=True)
    amount = AmountInput()
    min_fiat = AmountInput()
    max_fiat = AmountInput()
    payment_methods = serializers.ListField(
        child=serializers.CharField(max_length=32), max_length=3
    )
    payment_accounts = serializers.ListField(
        child=serializers.IntegerField(),
        max_length=3,
        required=False,
        help_text=gettext_lazy(
            "A sell offer: ids of your saved payment accounts the buyer pays into, at "
            "most one per payment method (/api/v1/payment-accounts/)."
        ),
    )
    payment_window_minutes = serializers.IntegerField(min_value=5, max_value=180, default=30)
    terms = serializers.CharField(max_length=2000, allow_blank=True, default="")
    min_taker_tier = serializers.IntegerField(
        min_value=0,
        max_value=2,
        default=0,
        help_text=gettext_lazy("Takers' minimum KYC tier (0: anyone)."),
    )
    min_taker_trades = serializers.IntegerField(
        min_value=0,
        default=0,
        help_text=gettext_lazy("Takers' minimum number of completed trades."),
    )
    min_account_age_days = serializers.IntegerField(
        min_value=0, default=0, help_text=gettext_lazy("Takers' minimum account age in days.")
    )
    trusted_only = serializers.BooleanField(
        default=False, help_text=gettext_lazy("Only traders on your trusted list may take it.")
    )
    allowed_countries = serializers.ListField(
        child=serializers.CharField(max_length=2),
        max_length=50,
        default=list,
        help_text="Takers' countries (ISO 3166-1 alpha-2, e.g. DE); a taker whose profile names "
        "another country, or none, can't take it. Empty: anywhere.",
    )
    auto_reply = serializers.CharField(
        max_length=1000,
        allow_blank=True,
        default="",
        help_text="Posted in the trade chat as the maker's first message when a trade opens.",
    )


class OfferPatchInput(serializers.Serializer):
    price_type = serializers.ChoiceField(choices=Offer.PriceType.choices, required=False)
    price = AmountInput(required=False, allow_null=True)
    margin_percent = AmountInput(required=False, allow_null=True)
    amount = AmountInput(required=False)
    min_fiat = AmountInput(required=False)
    max_fiat = AmountInput(required=False)
    payment_methods = serializers.ListField(
        child=serializers.CharField(max_length=32), max_length=3, required=False
    )
    payment_accounts = serializers.ListField(
        child=serializers.IntegerField(),
        max_length=3,
        required=False,
        help_text=gettext_lazy("Replaces the accounts a sell offer names ([] names none)."),
    )
    payment_window_minutes = serializers.IntegerField(min_value=5, max_value=180, required=False)
    terms = serializers.CharField(max_length=2000, allow_blank=True, required=False)
    is_active = serializers.BooleanField(required=False)
    min_taker_tier = serializers.IntegerField(min_value=0, max_value=2, required=False)
    min_taker_trades = serializers.IntegerField(min_value=0, required=False)
    min_account_age_days = serializers.IntegerField(min_value=0, required=False)
    trusted_only = serializers.BooleanField(required=False)
    allowed_countries = serializers.ListField(
        child=serializers.CharField(max_length=2), max_length=50, required=False
    )
    auto_reply = serializers.CharField(max_length=1000, allow_blank=True, required=False)


# The book's query parameters whose pages come from the cache (marketplace.book_cache): the
# public filters and the page. Others (amount, maker, min_completion_rate) are read afresh.
BOOK_CACHE_PARAMS = {"side", "asset", "fiat", "payment_method", "cursor", "limit"}


def _public_rows(**filters: Any) -> QuerySet[Offer]:
    """The book's rows as a public page shows them (selectors.offer_book's filters)."""
    qs = selectors.offer_book(**filters).prefetch_related(None)  # the page's methods: one query
    # Assets and fiats from the per-process copy (attach_reference_data), not joined per row;
    # of the maker, only the username (no user object per row).
    return qs.select_related(None).annotate(maker_username=F("maker__username"))


# The book's first page as bots and the book page ask for it most (a side, an asset and a fiat;
# no cursor, no other filter; anyone's view): its statement built once per side and page size
# (common.prepared; Django took 2-3 ms to build and compile it, on every rebuild after a take).
FIRST_PAGE_PARAMS = frozenset({"side", "asset", "fiat", "limit"})
_FIRST_PAGES: dict[tuple[str, int], PreparedRead[Offer]] = {}


def _first_page_read(side: str, ordering: tuple[str, ...], rows: int) -> PreparedRead[Offer]:
    read = _FIRST_PAGES.get((side, rows))
    if read is None:
        read = _FIRST_PAGES.setdefault(
            (side, rows),
            PreparedRead(
                lambda asset, fiat, now: _public_rows(
                    side=side, asset=asset, fiat=fiat, now=now
                ).order_by(*ordering)[:rows]
            ),
        )
    return read


class _FirstPage:
    """What CursorPagination asks of a queryset for a first page: order_by() in the paginator's
    order, then one slice from 0, answered by the page's prepared read (asset and fiat codes
    upper-cased, as offer_book makes them)."""

    def __init__(self, side: str, ordering: tuple[str, ...], asset: str, fiat: str) -> None:
        self.side, self.ordering, self.asset, self.fiat = side, ordering, asset, fiat

    def order_by(self, *fields: str) -> _FirstPage:
        if tuple(fields) != self.ordering:
            raise ValueError(f"the first page is read in {self.ordering} order, not {fields}")
        return self

    def __getitem__(self, rows: slice) -> list[Offer]:
        if rows.start not in (0, None) or rows.stop is None:
            raise ValueError("the first page is read from its start")
        read = _first_page_read(self.side, self.ordering, rows.stop)
        return read(self.asset, self.fiat, timezone.now())


# The rows of a cached page that takes changed (marketplace.book_cache.offer_taken), read again:
# the page's own filters, by id, built once per side; PATCH_ROWS ids a read, padded with ids no
# offer has (Django drops repeated ones from an IN).
PATCH_ROWS = 8
_PATCH_READS: dict[str, PreparedRead[Offer]] = {}


def _patch_read(side: str) -> PreparedRead[Offer]:
    read = _PATCH_READS.get(side)
    if read is None:
        read = _PATCH_READS.setdefault(
            side,
            PreparedRead(
                lambda asset, fiat, now, *ids: _public_rows(
                    side=side, asset=asset, fiat=fiat, now=now
                ).filter(pk__in=ids)
            ),
        )
    return read


class OfferListApi(ApiView):
    ordering: Any = None  # the book has its own order: best price first

    @extend_schema(
        operation_id="offers_list",
        parameters=[
            OpenApiParameter("side", str, enum=["buy", "sell"], description="The maker's side."),
            OpenApiParameter("asset", str),
            OpenApiParameter("fiat", str),
            OpenApiParameter("payment_method", str),
            OpenApiParameter(
                "amount", str, description="A fiat amount the offer's limits must fit."
            ),
            OpenApiParameter(
                "min_completion_rate", str, description="Makers' minimum completion rate, percent."
            ),
            OpenApiParameter("maker", str, description="A maker's username."),
            OpenApiParameter("cursor", str),
            OpenApiParameter("limit", int),
        ],
        responses={200: paginated(OfferOut), **ERRORS},
        description=(
            "The order book, best price first for the taker: lowest when the maker sells, highest "
            "when the maker buys. Makers' stats (completed trades, completion rate) may be up to "
            "a minute old (TRADER_STATS_CACHE_SECONDS)."
        ),
    )
    @replica_reads
    def get(self, request: Request) -> Response:
        params = request.query_params
        book = selectors.book_of(
            side=params.get("side"), asset=params.get("asset"), fiat=params.get("fiat")
        )
        viewer = request.user
        signed_in = viewer is not None and viewer.is_authenticated
        blocked_keys = blocked_cache_keys(user_id=cast(int, viewer.pk)) if signed_in else []
        got: dict[str, Any] | None = None
        if set(params) <= BOOK_CACHE_PARAMS and book is not False:
            # The public part from the cache (marketplace.book_cache), then the viewer's part;
            # the viewer's blocked set comes in the same round trip.
            variant = f"api|{request.get_host()}|{sorted(params.lists())}"
            page, _, got = book_cache.cached_with(
                book=book,
                variant=variant,
                build=lambda: self._public_page(request),
                also=blocked_keys,
                patch=lambda page, offers, makers: self._patch_page(request, page, offers, makers),
            )
        else:
            page = self._public_page(request, viewer=viewer)
        blocked = (
            blocked_ids_cached(user_id=cast(int, viewer.pk), got=got) if signed_in else frozenset()
        )
        return self._for_viewer(request, page, blocked)

    def _public_page(self, request: Request, viewer: Any = None) -> dict[str, Any]:
        """A page of the book as anyone sees it (with `viewer`: without the makers blocked
        either way), before the viewer's requirements: plain data, as cached."""
        params = request.query_params
        side = params.get("side")
        self.ordering = ("-effective_price", "-id") if side == "buy" else ("effective_price", "id")
        qs: Any
        if (
            viewer is None
            and set(params) <= FIRST_PAGE_PARAMS
            and side in ("buy", "sell")
            and params.get("asset")
            and params.get("fiat")
        ):
            qs = _FirstPage(side, self.ordering, params["asset"].upper(), params["fiat"].upper())
        else:
            qs = _public_rows(
                side=side or None,
                asset=params.get("asset") or None,
                fiat=params.get("fiat") or None,
                payment_method=params.get("payment_method") or None,
                fiat_amount=_decimal_param(request, "amount"),
                maker_username=params.get("maker") or None,
                viewer=viewer,
            )
        min_rate = _decimal_param(request, "min_completion_rate")
        page = self.paginator_page(qs)
        selectors.attach_reference_data(page["rows"])
        stats = _book_maker_stats(page["rows"])
        rows = page["rows"]
        if min_rate is not None:
            rows = [o for o in rows if (stats[o.maker_id].completion_rate or 0) >= min_rate]
        context = {
            # No request: the page is everyone's, so no viewer's own fields (auto_reply) in it;
            # _for_viewer puts them back for the viewer's own offers.
            "request": None,
            "maker_stats": stats,
            "payment_method_codes": selectors.offer_payment_method_codes(
                offer_ids=[o.pk for o in rows]
            ),
        }
        paginator = page["paginator"]
        return {
            "results": OfferOut(rows, many=True, context=context).data,
            "takers": [selectors.offer_taker_terms(o) for o in rows],
            # The makers' own text, shown to each maker only (OfferOut.get_auto_reply).
            "auto_replies": {o.pk: o.auto_reply for o in rows},
            "next": paginator.get_next_link(),
            "previous": paginator.get_previous_link(),
        }

    def _patch_page(
        self, request: Request, page: dict[str, Any], offers: set[int], makers: set[int]
    ) -> dict[str, Any] | None:
        """A cached page after takes: the rows of the `offers` taken and of their `makers`
        (their depth is their balance) read again and put in place; None (build the page
        afresh) when one of them left the book or there are more than PATCH_ROWS. A take
        changes no row's price, so the order stays; the makers' stats and the payment methods
        stay the page's."""
        takers: list[TakerTerms] = page["takers"]
        at = [i for i, t in enumerate(takers) if t.pk in offers or t.maker_id in makers]
        if not at:
            return page
        if len(at) > PATCH_ROWS:
            return None
        params = request.query_params
        ids = [takers[i].pk for i in at]
        pad = range(-1, -1 - (PATCH_ROWS - len(ids)), -1)
        read = _patch_read(str(params["side"]))
        rows = read(params["asset"].upper(), params["fiat"].upper(), timezone.now(), *ids, *pad)
        if len(rows) != len(ids):
            return None
        selectors.attach_reference_data(rows)
        context: dict[str, Any] = {"request": None, "maker_stats": {}, "payment_method_codes": {}}
        fresh = {o.pk: (o, OfferOut(o, context=context).data) for o in rows}
        results, takers = list(page["results"]), list(takers)
        for i in at:
            offer, row = fresh[takers[i].pk]
            old = results[i]
            results[i] = {**row, "maker": old["maker"], "payment_methods": old["payment_methods"]}
            takers[i] = selectors.offer_taker_terms(offer)
        return {**page, "results": results, "takers": takers}

    def _for_viewer(
        self, request: Request, page: dict[str, Any], blocked: frozenset[int]
    ) -> Response:
        """What depends on the viewer, after the cache: makers blocked either way left out
        (`blocked`: the viewer's set, accounts.selectors.blocked_ids_cached), and why each offer
        is not open to the viewer (their own offers always are)."""
        viewer = request.user
        results, takers = page["results"], page["takers"]
        if viewer is not None and viewer.is_authenticated and results:
            hidden = blocked.intersection(t.maker_id for t in takers)
            if hidden:
                kept = [i for i, t in enumerate(takers) if t.maker_id not in hidden]
                results, takers = [results[i] for i in kept], [takers[i] for i in kept]
            unmet = selectors.offers_unmet_for_viewer(offers=takers, viewer=viewer)
            own = {t.pk: page["auto_replies"].get(t.pk) for t in takers if t.maker_id == viewer.pk}
            results = [
                {**row, "unmet_requirements": unmet.get(row["id"], [])}
                if row["id"] not in own
                else {
                    **row,
                    "unmet_requirements": unmet.get(row["id"], []),
                    "auto_reply": own[row["id"]],
                }
                for row in results
            ]
        return Response({"next": page["next"], "previous": page["previous"], "results": results})

    def paginator_page(self, qs: Any) -> dict[str, Any]:
        paginator = CursorPage()
        paginator.ordering = self.ordering
        rows = paginator.paginate_queryset(qs, self.request, view=self)
        return {"paginator": paginator, "rows": list(cast(list[Any], rows))}

    @extend_schema(
        operation_id="offers_create",
        request=OfferInput,
        responses={201: OfferOut, **ERRORS},
        examples=[
            OpenApiExample(
                "Sell BTC at index +1.5%",
                value={
                    "side": "sell",
                    "asset": "BTC",
                    "fiat": "EUR",
                    "price_type": "floating",
                    "margin_percent": "1.5",
                    "amount": "0.5",
                    "min_fiat": "50",
                    "max_fiat": "2000",
                    "payment_methods": ["sepa", "revolut"],
                    "payment_window_minutes": 30,
                    "terms": "SEPA from an account in your own name.",
                },
                request_only=True,
            ),
            OpenApiExample(
                "For verified, experienced takers only",
                value={
                    "side": "sell",
                    "asset": "BTC",
                    "fiat": "EUR",
                    "price_type": "fixed",
                    "price": "86000",
                    "amount": "1",
                    "min_fiat": "1000",
                    "max_fiat": "20000",
                    "payment_methods": ["sepa"],
                    "min_taker_tier": 1,
                    "min_taker_trades": 10,
                    "min_account_age_days": 30,
                    "trusted_only": False,
                },
                request_only=True,
            ),
        ],
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = OfferInput(data=request.data)
        data.is_valid(raise_exception=True)
        offer = services.offer_create(maker=request.user, **data.validated_data)
        offer = selectors.offer_get(offer_id=offer.pk)
        return Response(
            OfferOut(
                offer, context={"maker_stats": _maker_stats([offer]), "request": request}
            ).data,
            status=status.HTTP_201_CREATED,
        )


class OfferDetailApi(ApiView):
    @extend_schema(operation_id="offers_retrieve", responses={200: OfferOut, **ERRORS})
    def get(self, request: Request, offer_id: int) -> Response:
        offer = selectors.offer_get(offer_id=offer_id, viewer=request.user)
        unmet = selectors.offers_unmet_for_viewer(offers=[offer], viewer=request.user)
        context = {"maker_stats": _maker_stats([offer]), "unmet": unmet, "request": request}
        return Response(OfferOut(offer, context=context).data)

    @extend_schema(
        operation_id="offers_update", request=OfferPatchInput, responses={200: OfferOut, **ERRORS}
    )
    def patch(self, request: Request, offer_id: int) -> Response:
        data = OfferPatchInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        services.offer_update(offer_id=offer_id, actor=request.user, **data.validated_data)
        offer = selectors.offer_get(offer_id=offer_id)
        context = {"maker_stats": _maker_stats([offer]), "request": request}
        return Response(OfferOut(offer, context=context).data)

    @extend_schema(operation_id="offers_destroy", responses={204: None, **ERRORS})
    def delete(self, request: Request, offer_id: int) -> Response:
        services.offer_delete(offer_id=offer_id, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PriceOut(serializers.Serializer):
    asset = serializers.CharField(source="asset.code")
    fiat = serializers.CharField(source="fiat.code")
    price = serializers.DecimalField(max_digits=24, decimal_places=8)
    source = serializers.CharField()  # type: ignore[assignment]  # a field named `source`
    updated_at = serializers.DateTimeField()
    # The price feed could not price the pair (every source failed, or the price is older than
    # PRICE_MAX_AGE): floating offers on it are out of the book until it recovers.
    stale = serializers.SerializerMethodField()
    stale_since = serializers.DateTimeField(allow_null=True)
    stale_reason = serializers.CharField()

    def get_stale(self, row: PriceIndex) -> bool:
        return row.stale_since is not None


class PriceListApi(ApiView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="prices_list",
        responses={
            200: inline_serializer("PriceList", {"results": PriceOut(many=True)}),
            429: ErrorSerializer,
        },
        description=(
            "The price index that floating offers follow (fiat per one unit of the asset). A "
            "stale pair's floating offers are out of the book until a fresh price comes in."
        ),
    )
    def get(self, request: Request) -> Response:
        rows = PriceIndex.objects.select_related("asset", "fiat").order_by(
            "asset__code", "fiat__code"
        )
        return Response({"results": PriceOut(rows, many=True).data})


# --- the trade room: chat and feedback ----------------------------------------------------------
