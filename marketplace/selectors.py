"""Reads of offers and the order book."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from django.db import connection, connections, router
from django.db.models import (
    Case,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Least
from django.utils import timezone
from django.utils.translation import gettext, ngettext

if TYPE_CHECKING:
    from django.db.models.expressions import Combinable
    from django.db.models.fields.related import ForeignKey

from accounts.models import Profile
from accounts.selectors import (
    TakerFacts,
    TraderStats,
    blocked_user_ids,
    is_blocked_between,
    trusting_owner_ids,
)
from common.countries import country_name
from common.errors import NotFound, ValidationFailed
from common.money import round_half_up
from ledger.models import Asset, LedgerAccount
from marketplace.models import FiatCurrency, Offer, PaymentAccount, PaymentMethod, PriceIndex

# --- traders' figures, from the layer that owns trades ----------------------------------
# Trades and the figures counted from them (completed trades, completion rate, release time) are
# escrow's, a layer above this one; escrow registers its readers here in EscrowConfig.ready(). The
# book shows makers' stats and checks offers' requirements against a taker's facts through them.
_trader_figures: dict[str, Callable[..., Any]] = {}


def trader_figures_register(
    *,
    stats_fresh: Callable[..., dict[int, TraderStats]],
    stats_recent: Callable[..., dict[int, TraderStats]],
    taker_facts: Callable[..., TakerFacts],
) -> None:
    _trader_figures.update(
        stats_fresh=stats_fresh, stats_recent=stats_recent, taker_facts=taker_facts
    )


def trader_stats_fresh(*, user_ids: list[int]) -> dict[int, TraderStats]:
    """Traders' stats counted now (one offer's page, its maker's own view)."""
    result: dict[int, TraderStats] = _trader_figures["stats_fresh"](user_ids=user_ids)
    return result


def trader_stats_recent(
    *, user_ids: list[int], usernames: dict[int, str] | None = None
) -> dict[int, TraderStats]:
    """Makers' stats for a page of the book, at most TRADER_STATS_CACHE_SECONDS old, but when
    they were last seen read now (one query for the page: "online" can't wait a minute)."""
    result: dict[int, TraderStats] = _trader_figures["stats_recent"](
        user_ids=user_ids, usernames=usernames
    )
    seen = last_seen_of(user_ids=user_ids)
    return {uid: replace(s, last_seen=seen.get(uid)) for uid, s in result.items()}


def last_seen_of(*, user_ids: list[int]) -> dict[int, datetime | None]:
    """When these traders were last seen, read now (one query): the book's "online" is applied
    after its cached part."""
    if not user_ids:
        return {}
    # One plain statement with the ids as an array: Django took longer to build the filter than
    # the database to answer it (the HTML book runs it on every request, cached or not).
    alias = router.db_for_read(Profile)
    with connections[alias].cursor() as cursor:
        cursor.execute(_LAST_SEEN_SQL, [[int(uid) for uid in user_ids]])
        return dict(cursor.fetchall())


_LAST_SEEN_SQL = f"SELECT user_id, last_seen FROM {Profile._meta.db_table} WHERE user_id = ANY(%s)"  # noqa: S608


def taker_facts(*, user: Any) -> TakerFacts:
    """What an offer's requirements are checked against, for this taker."""
    facts: TakerFacts = _trader_figures["taker_facts"](user=user)
    return facts


def _with_depth(qs: QuerySet[Offer]) -> QuerySet[Offer]:
    """Annotate `book_depth`, what a taker can take now (Offer.depth): a sell offer's `available`
    capped by its maker's available balance of the asset, a buy offer's `available` (a buyer
    pays fiat). A subquery in the same statement, not a query per offer: a seller's balance
    may drop after the offer was published (other offers taken, a withdrawal), and the book
    must not show depth that isn't there."""
    amount = Offer._meta.get_field("available")
    held = LedgerAccount.objects.filter(
        kind=LedgerAccount.Kind.USER, user_id=OuterRef("maker_id"), asset_id=OuterRef("asset_id")
    ).values(held=F("credits_posted") - F("debits_posted") - F("debits_pending"))[:1]
    return qs.annotate(
        book_depth=Case(
            When(
                side=Offer.Side.SELL,
                then=Least(
                    F("available"),
                    Coalesce(Subquery(held, output_field=amount), Value(Decimal(0))),
                    output_field=amount,
                ),
            ),
            default=F("available"),
            output_field=amount,
        )
    )


def offer_book(
    *,
    side: str | None = None,
    asset: str | None = None,
    fiat: str | None = None,
    payment_method: str | None = None,
    fiat_amount: Decimal | None = None,
    min_completion_rate: Decimal | None = None,
    maker_username: str | None = None,
    viewer: Any = None,
    now: datetime | None = None,
) -> QuerySet[Offer]:
    """Active offers, best price first for the taker: lowest when the maker sells, highest when
    buying. Makers who may not trade now (frozen, suspended) are left out, and so, for a
    logged-in viewer, are the makers they blocked or who blocked them. What an offer shows as
    available is its real depth (`book_depth`, _with_depth); an offer whose real depth can't
    fill its minimum isn't takeable and is left out."""
    # One filter() and one exclude(): the book runs on every request, and each further call
    # clones and re-resolves the whole query.
    where: Q | Combinable = Q(
        is_deleted=False, is_active=True, book_depth__gt=0, effective_price__isnull=False
    )
    where &= Q(book_depth__gte=F("min_fiat") / F("effective_price"))
    if side:
        where &= Q(side=side)
    if asset:
        where &= Q(asset__code=asset.upper())
    if fiat:
        where &= Q(fiat__code=fiat.upper())
    if payment_method:
        # EXISTS, not a join: a join would repeat offers and need DISTINCT, which sorts every
        # column of the page (and costs the planner) on each request.
        where &= Exists(
            Offer.payment_methods.through.objects.filter(
                offer_id=OuterRef("pk"), paymentmethod__code=payment_method
            )
        )
    if fiat_amount is not None:
        # Within the limits, and enough left at this price for the amount asked.
        where &= Q(min_fiat__lte=fiat_amount, max_fiat__gte=fiat_amount)
        where &= Q(book_depth__gte=fiat_amount / F("effective_price"))
    if maker_username:
        where &= Q(maker__username=maker_username)
    # Makers who may not trade now; for a logged-in viewer, also those blocked either way.
    # (The profile is one-to-one: excluding the ORed terms is excluding each.)
    now = now or timezone.now()
    hidden = Q(maker__profile__is_frozen=True) | Q(maker__profile__suspended_until__gt=now)
    # A buy offer whose maker's buying is paused (escrow's daily cancellation limit): taking it
    # would open a trade with them as the buyer.
    hidden |= Q(side=Offer.Side.BUY, maker__profile__buying_suspended_until__gt=now)
    if viewer is not None and getattr(viewer, "is_authenticated", False):
        hidden |= Q(maker_id__in=blocked_user_ids(user=viewer))
    qs = _with_depth(Offer.objects.all()).filter(where).exclude(hidden)
    order = "effective_price" if side != Offer.Side.BUY else "-effective_price"
    return (
        qs.select_related("asset", "fiat", "maker")
        .prefetch_related("payment_methods")
        .order_by(order, "created_at", "pk")
    )


# --- the book's public part, cached (marketplace.book_cache) ------------------------------


@dataclass(frozen=True)
class TakerTerms:
    """What offers_unmet_for_viewer reads of an offer: kept beside a cached page of the book,
    so the viewer's part is applied after the cache without the offer objects."""

    pk: int
    maker_id: int
    maker_username: str
    min_taker_tier: int
    min_taker_trades: int
    min_account_age_days: int
    trusted_only: bool
    allowed_countries: list[str] = field(default_factory=list)


def offer_taker_terms(offer: Offer) -> TakerTerms:
    return TakerTerms(
        pk=offer.pk,
        maker_id=offer.maker_id,
        maker_username=maker_name(offer),
        min_taker_tier=offer.min_taker_tier,
        min_taker_trades=offer.min_taker_trades,
        min_account_age_days=offer.min_account_age_days,
        trusted_only=offer.trusted_only,
        allowed_countries=list(offer.allowed_countries or []),
    )


def book_of(*, side: Any, asset: Any, fiat: Any) -> tuple[str, int, int] | None:
    """The one book (side, asset id, fiat id) a request's filters name, or None when they name
    several (a filter left out) or an unknown code: its page is versioned with every book."""
    if side not in (Offer.Side.BUY, Offer.Side.SELL) or not asset or not fiat:
        return None
    ids = []
    for model, code in ((Asset, str(asset).upper()), (FiatCurrency, str(fiat).upper())):
        known = {row.code: pk for pk, row in _REFERENCE[model].items()}
        if code not in known:
            _REFERENCE[model].update(model.objects.in_bulk())
            known = {row.code: pk for pk, row in _REFERENCE[model].items()}
        if code not in known:
            return None
        ids.append(known[code])
    return str(side), ids[0], ids[1]


# Assets and fiat currencies by id, per process: a handful of rows whose code and precision never
# change once created (the admin shows both read-only; stored amounts depend on them).
_REFERENCE: dict[type, dict[int, Any]] = {Asset: {}, FiatCurrency: {}}


def maker_name(offer: Offer | TakerTerms) -> str:
    """The maker's username: annotated by the book's API query (maker_username), which builds no
    user object per row, else from the maker."""
    name = getattr(offer, "maker_username", None)
    return name if name is not None else cast(Offer, offer).maker.username


def attach_reference_data(offers: list[Offer]) -> None:
    """Give each offer its asset and fiat from the per-process copy of those two tables (re-read
    whenever an id is new to it), instead of joining them and building two more objects for every
    row of every page of the book."""
    for model, name in ((Asset, "asset"), (FiatCurrency, "fiat")):
        known = _REFERENCE[model]
        if any(getattr(o, f"{name}_id") not in known for o in offers):
            known.update(model.objects.in_bulk())
        field = cast("ForeignKey[Any, Any]", Offer._meta.get_field(name))
        for offer in offers:
            field.set_cached_value(offer, known[getattr(offer, f"{name}_id")])


def offer_payment_method_codes(*, offer_ids: list[int]) -> dict[int, list[str]]:
    """Each offer's payment method codes in the methods' order (by name), one query for a page
    of the book: a prefetch_related would build a related manager and a queryset per offer, and
    even one ORM query costs the book more here than the database does."""
    codes: dict[int, list[str]] = {pk: [] for pk in offer_ids}
    if not offer_ids:
        return codes
    marks = ", ".join(["%s"] * len(offer_ids))
    sql = (
        "SELECT l.offer_id, m.code FROM marketplace_offer_payment_methods l "  # noqa: S608 - marks
        "JOIN marketplace_paymentmethod m ON m.id = l.paymentmethod_id "
        f"WHERE l.offer_id IN ({marks}) ORDER BY m.name, m.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, offer_ids)
        for offer_id, code in cursor.fetchall():
            codes[offer_id].append(code)
    return codes


def offer_get(*, offer_id: int, viewer: Any = None) -> Offer:
    """An offer; for a viewer the maker blocked, or who blocked the maker, it doesn't exist."""
    offer = (
        _with_depth(Offer.objects.filter(pk=offer_id, is_deleted=False))
        .select_related("asset", "fiat", "maker")
        .first()
    )
    if offer is None or (
        viewer is not None
        and getattr(viewer, "is_authenticated", False)
        and viewer.pk != offer.maker_id
        and is_blocked_between(user_id=viewer.pk, other_id=offer.maker_id)
    ):
        raise NotFound(gettext("Offer #{offer_id} not found.").format(offer_id=offer_id))
    return offer


# --- who may take an offer --------------------------------------------------------------------


def offer_requirements(offer: Offer) -> list[str]:
    """The offer's requirements in words, for everyone to see (in the reader's language)."""
    out = []
    if offer.min_taker_tier:
        out.append(gettext("Tier {tier}+ verified takers").format(tier=offer.min_taker_tier))
    if offer.min_taker_trades:
        out.append(gettext("{count}+ completed trades").format(count=offer.min_taker_trades))
    if offer.min_account_age_days:
        out.append(gettext("Accounts {days}+ days old").format(days=offer.min_account_age_days))
    if offer.trusted_only:
        out.append(gettext("Trusted traders only"))
    if offer.allowed_countries:
        out.append(
            gettext("Takers in {countries} only").format(
                countries=_countries_text(offer.allowed_countries)
            )
        )
    return out


def _countries_text(codes: list[str], *, names: bool = True) -> str:
    """A few countries by name ("Germany, Austria"); many by code, the first few then a count."""
    if len(codes) <= 3 and names:
        return ", ".join(country_name(c) for c in codes)
    shown = ", ".join(codes[:5])
    if len(codes) <= 5:
        return shown
    more = len(codes) - 5
    return ngettext("{shown} and {count} more", "{shown} and {count} more", more).format(
        shown=shown, count=more
    )


def offer_unmet_requirements(
    *,
    offer: Offer | TakerTerms,
    taker: TakerFacts,
    is_trusted: bool,
    now: datetime | None = None,
    short: bool = False,
) -> list[str]:
    """Why this taker may not take this offer, one reason per unmet requirement (empty: open);
    `short` words them for a row of the order book. In the reader's language."""
    if taker.user_id == offer.maker_id:
        return []
    now = now or timezone.now()
    reasons = []
    if taker.tier < offer.min_taker_tier:
        reasons.append(
            gettext("Tier {tier}+ verified takers only (you: tier {yours})")
            if short
            else gettext(
                "The maker asks for tier {tier} or higher; you are tier {yours}. Verify your "
                "identity in Settings → Verification."
            )
        )
        reasons[-1] = reasons[-1].format(tier=offer.min_taker_tier, yours=taker.tier)
    if taker.completed_trades < offer.min_taker_trades:
        reasons.append(
            (
                gettext("{count}+ completed trades (you: {yours})")
                if short
                else gettext(
                    "The maker asks for at least {count} completed trades; you have {yours}."
                )
            ).format(count=offer.min_taker_trades, yours=taker.completed_trades)
        )
    age_days = (now - taker.date_joined).days
    if age_days < offer.min_account_age_days:
        reasons.append(
            (
                ngettext(
                    "Accounts {days}+ days old (yours: {age} day)",
                    "Accounts {days}+ days old (yours: {age} days)",
                    age_days,
                )
                if short
                else ngettext(
                    "The maker asks for accounts at least {days} days old; yours is {age} day old.",
                    "The maker asks for accounts at least {days} days old; yours is {age} days "
                    "old.",
                    age_days,
                )
            ).format(days=offer.min_account_age_days, age=age_days)
        )
    if offer.trusted_only and not is_trusted:
        reasons.append(
            (
                gettext("{maker}'s trusted traders only")
                if short
                else gettext("Only traders on {maker}'s trusted list may take it.")
            ).format(maker=maker_name(offer))
        )
    # Region restrictions (issue 20): the taker's profile country must be one the offer allows.
    if offer.allowed_countries and taker.country not in offer.allowed_countries:
        yours = country_name(taker.country) if taker.country else ""
        if short:
            reasons.append(
                gettext("Takers in {countries} only (you: {yours})").format(
                    countries=_countries_text(offer.allowed_countries, names=False),
                    yours=taker.country or gettext("no country set"),
                )
            )
        elif yours:
            reasons.append(
                gettext(
                    "The maker takes traders in {countries} only; your profile says {yours}."
                ).format(countries=_countries_text(offer.allowed_countries), yours=yours)
            )
        else:
            reasons.append(
                gettext(
                    "The maker takes traders in {countries} only; your profile names no "
                    "country: set it in Settings → Country."
                ).format(countries=_countries_text(offer.allowed_countries))
            )
    return reasons


def _has_requirements(offer: Offer | TakerTerms) -> bool:
    return bool(
        offer.min_taker_tier
        or offer.min_taker_trades
        or offer.min_account_age_days
        or offer.trusted_only
        or offer.allowed_countries
    )


def offers_unmet_for_viewer(
    *, offers: Sequence[Offer | TakerTerms], viewer: Any, short: bool = False
) -> dict[int, list[str]]:
    """For each offer (a page of the book), why the viewer may not take it; a few queries for
    the whole page, not per offer. Anonymous viewers: nothing (they are asked to log in)."""
    if viewer is None or not getattr(viewer, "is_authenticated", False) or not offers:
        return {}
    if not any(_has_requirements(o) for o in offers if o.maker_id != viewer.pk):
        # Nothing on the page asks anything of a taker: open to the viewer, whoever they are
        # (and no need for the viewer's facts, which cost four queries).
        return {o.pk: [] for o in offers}
    facts = taker_facts(user=viewer)
    trusted_only = [o.maker_id for o in offers if o.trusted_only]
    trusting = trusting_owner_ids(user=viewer, owner_ids=trusted_only) if trusted_only else set()
    now = timezone.now()
    return {
        o.pk: offer_unmet_requirements(
            offer=o, taker=facts, is_trusted=o.maker_id in trusting, now=now, short=short
        )
        for o in offers
    }


def offer_list_for_user(*, user: Any) -> QuerySet[Offer]:
    return (
        Offer.objects.filter(maker=user, is_deleted=False)
        .select_related("asset", "fiat")
        .prefetch_related("payment_methods")
    )


def fiat_get(*, code: Any) -> FiatCurrency:
    """An active fiat currency by its code, in any case: the one look-up of a fiat a user names;
    an unknown code is bad input naming the field `fiat`."""
    fiat = FiatCurrency.objects.filter(code=str(code or "").upper(), is_active=True).first()
    if fiat is None:
        raise ValidationFailed(
            gettext("fiat: unknown fiat currency {code!r}.").format(code=code),
            fields={"fiat": [gettext("Unknown fiat currency.")]},
        )
    return fiat


# --- saved payment accounts (issue 15) ------------------------------------------------------------


def payment_account_list_for_user(*, user: Any) -> QuerySet[PaymentAccount]:
    """The user's own saved payment accounts, by method."""
    return PaymentAccount.objects.filter(user_id=user.pk).select_related("method")


def payment_account_get_for_user(*, account_id: int, user: Any) -> PaymentAccount:
    """One of the user's own accounts; anyone else's is not found (not a hint it exists)."""
    account = payment_account_list_for_user(user=user).filter(pk=account_id).first()
    if account is None:
        raise NotFound(
            gettext("Payment account #{account_id} not found.").format(account_id=account_id)
        )
    return account


# --- what balances are worth (the wallet, through ledger.selectors.wallet_valuer_register) -----

DEFAULT_VALUE_FIAT = "EUR"


def preferred_fiat_code(*, user: Any) -> str:
    """The fiat a user's balances are valued in: their profile's currency where profiles carry
    one, else EUR."""
    profile = getattr(user, "profile", None)
    code = getattr(profile, "currency", "") or ""
    return str(code).upper() or DEFAULT_VALUE_FIAT


def active_fiat_codes() -> list[str]:
    """The fiat currencies traded here, by code."""
    return list(FiatCurrency.objects.filter(is_active=True).values_list("code", flat=True))


def asset_values(
    *, user: Any, amounts: dict[int, Decimal], fiat_code: str | None = None
) -> tuple[str, dict[int, Decimal]]:
    """Each asset amount (by asset id) at the index price in `fiat_code` (the one the user picked
    on the wallet page) or else the user's fiat, rounded half up to the fiat's precision: an
    approximation for display, never used to move money. Assets the index has no price for are
    left out."""
    code = (fiat_code or "").upper() or preferred_fiat_code(user=user)
    fiat = FiatCurrency.objects.filter(code=code).first()
    if fiat is None:
        code, fiat = (
            DEFAULT_VALUE_FIAT,
            FiatCurrency.objects.filter(code=DEFAULT_VALUE_FIAT).first(),
        )
    if fiat is None:
        return code, {}
    prices = dict(
        PriceIndex.objects.filter(fiat=fiat, asset_id__in=list(amounts)).values_list(
            "asset_id", "price"
        )
    )
    return code, {
        asset_id: round_half_up(amount * prices[asset_id], fiat.precision)
        for asset_id, amount in amounts.items()
        if asset_id in prices
    }


# --- payment methods by region ---------------------------------------------------------------


@dataclass(frozen=True)
class MethodGroups:
    """The active payment methods split for a viewer: `local` (their country's, or else the
    chosen fiat's), `anywhere` (worldwide methods) and `others`; `where` names the region."""

    where: str
    local: list[PaymentMethod]
    anywhere: list[PaymentMethod]
    others: list[PaymentMethod]


def viewer_country(*, user: Any) -> str:
    """The viewer's country (ISO 3166 alpha-2) where their profile carries one, else ""."""
    profile = getattr(user, "profile", None) if getattr(user, "is_authenticated", False) else None
    return str(getattr(profile, "country", "") or "").upper()


def payment_methods_for_viewer(
    *, user: Any, fiat_code: str | None = None, methods: list[PaymentMethod] | None = None
) -> MethodGroups:
    """The methods a viewer most likely pays with first: those of their profile's country, or,
    without one, those used with the book's fiat (Pix for BRL, SEPA for EUR); then the
    worldwide ones; then the rest, so every method can still be picked. `methods`: the active
    ones by name, when the caller has them already."""
    if methods is None:
        methods = list(PaymentMethod.objects.filter(is_active=True).order_by("name"))
    country, fiat = viewer_country(user=user), (fiat_code or "").upper()
    if country:
        where, local = (
            country_name(country),
            [m for m in methods if country in m.countries],
        )
    elif fiat:
        where, local = fiat, [m for m in methods if m.countries and fiat in m.currencies]
    else:
        return MethodGroups("", [], [], methods)
    anywhere = [m for m in methods if not m.countries]
    others = [m for m in methods if m.countries and m not in local]
    return MethodGroups(where, local, anywhere, others)
