"""Offers, the price index and taking an offer. Taking moves the seller's amount into the trade's
escrow hold in the same transaction that creates the trade."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Round
from django.utils.translation import gettext

from accounts import services as accounts
from common.countries import country_code
from common.errors import NotFound, ValidationFailed
from common.money import fmt, fmt_fiat, parse_amount, parse_signed, round_half_up
from common.transactions import durable_atomic
from ledger import services as ledger
from ledger.models import Asset
from ledger.selectors import asset_get
from marketplace import book_cache
from marketplace.currencies import parse_fiat_amount
from marketplace.models import FiatCurrency, Offer, PaymentMethod, PriceIndex, PricePoint
from marketplace.selectors import fiat_get
from marketplace.services import payment_accounts as pay
from marketplace.services.dust import offer_close_if_dust, offer_is_dust, offer_reopen_check

MAX_PAYMENT_METHODS = 3
PRICE_PRECISION = 8
# Upper bounds of what a maker may ask of takers (beyond them nobody could take the offer).
MAX_REQUIRED_TRADES = 10_000
MAX_REQUIRED_AGE_DAYS = 3_650
REQUIREMENT_FIELDS = (
    "min_taker_tier",
    "min_taker_trades",
    "min_account_age_days",
    "trusted_only",
    "allowed_countries",
)
# Region restrictions: at most this many allowed countries (an offer for more is one for all).
MAX_ALLOWED_COUNTRIES = 50
# The offer's auto-reply, posted in the trade chat when a trade opens: plain text like any chat
# message (the chat allows 2,000 characters and links, shown escaped, never as HTML); shorter,
# as it is a greeting with instructions, not the terms (which have their own 2,000).
AUTO_REPLY_MAX_LENGTH = 1000


def _payment_methods(codes: Iterable[str]) -> list[PaymentMethod]:
    codes = list(dict.fromkeys(str(c) for c in codes or []))
    if not codes:
        raise ValidationFailed.for_field(
            "payment_methods", gettext("Choose at least one payment method.")
        )
    if len(codes) > MAX_PAYMENT_METHODS:
        raise ValidationFailed.for_field(
            "payment_methods",
            gettext("Choose at most {MAX_PAYMENT_METHODS} payment methods.").format(
                MAX_PAYMENT_METHODS=MAX_PAYMENT_METHODS
            ),
        )
    found = {m.code: m for m in PaymentMethod.objects.filter(code__in=codes, is_active=True)}
    unknown = [c for c in codes if c not in found]
    if unknown:
        raise ValidationFailed.for_field(
            "payment_methods", gettext("Unknown payment method {v1!r}.").format(v1=unknown[0])
        )
    return [found[c] for c in codes]


def _whole(value: Any, *, field: str, low: int, high: int, message: str) -> int:
    if isinstance(value, bool):
        raise ValidationFailed.for_field(field, message)
    try:
        number = int(str(value).strip() or 0) if value is not None else 0
    except (TypeError, ValueError):
        raise ValidationFailed.for_field(field, message) from None
    if not low <= number <= high:
        raise ValidationFailed.for_field(field, message)
    return number


def _flag(value: Any, *, field: str) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "on", "yes"):
        return True
    if text in ("", "0", "false", "off", "no"):
        return False
    raise ValidationFailed.for_field(field, gettext("Yes or no."))


def _requirements(values: dict[str, Any]) -> dict[str, Any]:
    """Who may take the offer: a minimum tier, completed trades, account age, trusted only."""
    return {
        "min_taker_tier": _whole(
            values.get("min_taker_tier"),
            field="min_taker_tier",
            low=0,
            high=2,
            message="Choose tier 0 (anyone), 1 or 2.",
        ),
        "min_taker_trades": _whole(
            values.get("min_taker_trades"),
            field="min_taker_trades",
            low=0,
            high=MAX_REQUIRED_TRADES,
            message=f"Whole number of trades, 0 to {MAX_REQUIRED_TRADES:,}.",
        ),
        "min_account_age_days": _whole(
            values.get("min_account_age_days"),
            field="min_account_age_days",
            low=0,
            high=MAX_REQUIRED_AGE_DAYS,
            message=f"Whole days, 0 to {MAX_REQUIRED_AGE_DAYS:,}.",
        ),
        "trusted_only": _flag(values.get("trusted_only"), field="trusted_only"),
        "allowed_countries": _countries(values.get("allowed_countries")),
    }


def _countries(value: Any) -> list[str]:
    """Allowed takers' countries: ISO 3166-1 alpha-2 codes, a list or a comma-separated string
    (any case, repeats dropped), sorted; empty: anyone."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise ValidationFailed.for_field("allowed_countries", "A list of country codes.")
    codes = []
    for item in items:
        raw = str(item).strip()
        if not raw:
            continue
        code = country_code(raw)
        if code is None:
            raise ValidationFailed.for_field(
                "allowed_countries",
                f"Unknown country {raw[:8]!r}: use two-letter ISO codes such as DE or BR.",
            )
        codes.append(code)
    codes = sorted(set(codes))
    if len(codes) > MAX_ALLOWED_COUNTRIES:
        raise ValidationFailed.for_field(
            "allowed_countries",
            f"At most {MAX_ALLOWED_COUNTRIES} countries; leave it empty to allow everyone.",
        )
    return codes


def _auto_reply(value: Any) -> str:
    """The offer's auto-reply, stripped; at most AUTO_REPLY_MAX_LENGTH characters."""
    text = str(value or "").strip()
    if len(text) > AUTO_REPLY_MAX_LENGTH:
        raise ValidationFailed.for_field(
            "auto_reply", f"At most {AUTO_REPLY_MAX_LENGTH} characters (this is {len(text)})."
        )
    return text


# issue 18: higher apps (notifications' live order book) learn, on commit, of an offer created,
# edited, paused, resumed or withdrawn; a failing listener is logged, never raised into the edit.
offer_changed_listeners: list[Callable[[Offer], None]] = []


def _offer_changed(offer: Offer) -> None:
    for listener in offer_changed_listeners:
        transaction.on_commit(lambda listener=listener: listener(offer), robust=True)  # type: ignore[misc]


# --- price index ------------------------------------------------------------------------------


# A hook for higher apps (lending rechecks its loans' LTV): called on commit with the PriceIndex
# that changed; a failing listener is logged, never raised into the price move.
price_listeners: list[Callable[[PriceIndex], None]] = []
# A pair became stale (True: no usable price, see PriceIndex.stale_reason) or recovered (False):
# called on commit, once per change (notifications alerts the moderators).
price_stale_listeners: list[Callable[[PriceIndex, bool], None]] = []


def price_index_set(
    *, asset_code: str, fiat_code: str, price: Any, source: str = "manual"
) -> PriceIndex:
    """Set the reference price of a pair (moderators, or the price feed): a fresh price, so a
    stale pair recovers; the price joins the pair's history (the book's chart)."""
    asset, fiat = asset_get(code=asset_code), fiat_get(code=fiat_code)
    value = parse_amount(price, precision=PRICE_PRECISION, field="price")
    with transaction.atomic():
        # Locked first: marking the pair stale (services.prices) takes the same row lock.
        stale_since = list(
            PriceIndex.objects.select_for_update()
            .filter(asset=asset, fiat=fiat)
            .values_list("stale_since", flat=True)
        )
        was_stale = any(since is not None for since in stale_since)
        row, _ = PriceIndex.objects.update_or_create(
            asset=asset,
            fiat=fiat,
            defaults={"price": value, "source": source, "stale_since": None, "stale_reason": ""},
        )
        PricePoint.objects.create(
            asset=asset, fiat=fiat, price=value, source=source, at=row.updated_at
        )
        # The pair's floating offers follow in the same transaction, in one statement; the
        # same rounding as offer_effective_price (half up: prices are positive).
        Offer.objects.filter(asset=asset, fiat=fiat, price_type=Offer.PriceType.FLOATING).update(
            effective_price=Round(
                Value(value) * (Value(Decimal(1)) + F("margin_percent") / Value(Decimal(100))),
                fiat.precision,
                output_field=Offer._meta.get_field("effective_price"),
            )
        )
        # Both sides of the pair's book: their floating offers moved.
        book_cache.book_changed(side=None, asset_id=asset.pk, fiat_id=fiat.pk)
        for listener in price_listeners:
            # A default argument binds each listener (mypy cannot type it).
            transaction.on_commit(lambda listener=listener: listener(row), robust=True)  # type: ignore[misc]
        if was_stale:
            for stale_listener in price_stale_listeners:
                transaction.on_commit(
                    lambda stale_listener=stale_listener: stale_listener(row, False),  # type: ignore[misc]
                    robust=True,
                )
    return row


def offer_effective_price(
    offer: Offer, *, index: dict[tuple[int, int], Decimal] | None = None
) -> Decimal | None:
    """Fiat per one unit of the asset: the fixed price, or the index times (1 + margin); none
    while the pair is stale (a floating price follows a price nobody vouches for now)."""
    if offer.price_type == Offer.PriceType.FIXED:
        return offer.price
    if index is not None:
        base = index.get((offer.asset_id, offer.fiat_id))
    else:
        base = (
            PriceIndex.objects.filter(
                asset_id=offer.asset_id, fiat_id=offer.fiat_id, stale_since__isnull=True
            )
            .values_list("price", flat=True)
            .first()
        )
    if base is None:
        return None
    return round_half_up(
        base * (1 + (offer.margin_percent or 0) / Decimal(100)), offer.fiat.precision
    )


# --- offers -----------------------------------------------------------------------------------


def _offer_terms(
    *,
    asset: Asset,
    fiat: FiatCurrency,
    price_type: str,
    price: Any,
    margin_percent: Any,
    min_fiat: Any,
    max_fiat: Any,
    payment_window_minutes: Any,
) -> dict[str, Any]:
    if price_type not in Offer.PriceType.values:
        raise ValidationFailed.for_field("price_type", gettext("Choose fixed or floating."))
    values: dict[str, Any] = {"price_type": price_type, "price": None, "margin_percent": None}
    if price_type == Offer.PriceType.FIXED:
        values["price"] = parse_amount(price, precision=PRICE_PRECISION, field="price")
    else:
        if margin_percent in (None, ""):
            raise ValidationFailed.for_field(
                "margin_percent",
                gettext("A floating price needs a margin in percent (may be 0 or negative)."),
            )
        margin = parse_signed(margin_percent, precision=2, field="margin_percent")
        if not Decimal(-50) <= margin <= Decimal(50):
            raise ValidationFailed.for_field(
                "margin_percent", gettext("The margin must be between -50% and +50%.")
            )
        if not PriceIndex.objects.filter(asset=asset, fiat=fiat).exists():
            raise ValidationFailed.for_field(
                "price_type",
                gettext(
                    "There is no {code}/{code2} price index to float on; use a fixed price."
                ).format(code=asset.code, code2=fiat.code),
            )
        values["margin_percent"] = margin
    values["min_fiat"] = parse_fiat_amount(min_fiat, fiat=fiat, field="min_fiat")
    values["max_fiat"] = parse_fiat_amount(max_fiat, fiat=fiat, field="max_fiat")
    if values["max_fiat"] < values["min_fiat"]:
        raise ValidationFailed.for_field(
            "max_fiat", gettext("The maximum must not be below the minimum.")
        )
    try:
        window = int(payment_window_minutes)
    except (TypeError, ValueError):
        raise ValidationFailed.for_field(
            "payment_window_minutes", gettext("Enter whole minutes between 5 and 180.")
        ) from None
    if not 5 <= window <= 180:
        raise ValidationFailed.for_field(
            "payment_window_minutes", gettext("The payment window must be 5 to 180 minutes.")
        )
    values["payment_window_minutes"] = window
    return values


def _price_protected(*, asset: Asset, fiat: FiatCurrency, values: dict[str, Any]) -> None:
    """A fixed price at most PRICE_PROTECTION_PCT percent from the pair's index, so a price
    nobody would pay can't top the book that quick trade takes from (a floating price follows
    the index; a pair without an index has nothing to compare with)."""
    if values["price_type"] != Offer.PriceType.FIXED:
        return
    index = (
        PriceIndex.objects.filter(asset=asset, fiat=fiat).values_list("price", flat=True).first()
    )
    if index is None:
        return
    pct = Decimal(settings.PRICE_PROTECTION_PCT)
    low, high = index * (1 - pct / 100), index * (1 + pct / 100)
    if not low <= values["price"] <= high:
        raise ValidationFailed.for_field(
            "price",
            gettext(
                # Translators: {v2:f}% is a percentage ("% of" is no printf directive).
                # xgettext:no-python-format
                "The {code}/{code2} index is {v1} {code2}; a fixed price must be within {v2:f}% of it ({v3} – {v4} {code2})."
            ).format(
                code=asset.code,
                code2=fiat.code,
                v1=fmt_fiat(index, fiat.precision),
                v2=pct.normalize(),
                v3=fmt_fiat(low, fiat.precision),
                v4=fmt_fiat(high, fiat.precision),
            ),
        )


def _open_offers_within_cap(*, maker: Any) -> None:
    """Inside the caller's transaction: the maker's profile locked (two creates racing queue
    here) and their open offers below MAX_OPEN_OFFERS of their tier; paused offers count, as
    resuming one takes a click."""
    profile = accounts.profiles_lock(user_ids=[maker.pk])[maker.pk]
    cap: int = settings.MAX_OPEN_OFFERS.get(profile.kyc_tier, 0)
    if Offer.objects.filter(maker_id=maker.pk, is_deleted=False).count() >= cap:
        raise ValidationFailed(
            gettext("Tier {kyc_tier} traders may have {cap} offers open; delete one first.").format(
                kyc_tier=profile.kyc_tier, cap=cap
            ),
            code="too_many_offers",
        )


def _within_balance(*, offer: Offer, user: Any, available: Decimal) -> None:
    """A sell offer can't offer more than its maker holds right now (what is already in trades
    is held in their escrow, out of the balance)."""
    held = ledger.account_for_user(user=user, asset=offer.asset).available
    if available > held:
        asset = offer.asset
        raise ValidationFailed.for_field(
            "amount",
            gettext("You hold {v1} {code}; a sell offer can't offer more.").format(
                v1=fmt(held, asset.precision), code=asset.code
            ),
        )


def offer_create(
    *,
    maker: Any,
    side: str,
    asset: str,
    fiat: str,
    price_type: str,
    amount: Any,
    min_fiat: Any,
    max_fiat: Any,
    payment_methods: Iterable[str],
    price: Any = None,
    margin_percent: Any = None,
    payment_window_minutes: Any = 30,
    terms: str = "",
    min_taker_tier: Any = 0,
    min_taker_trades: Any = 0,
    min_account_age_days: Any = 0,
    trusted_only: Any = False,
    payment_accounts: Iterable[Any] = (),
    allowed_countries: Any = (),
    auto_reply: str = "",
) -> Offer:
    """Publish an offer; a sell offer can't offer more than the maker holds right now, and
    frozen or suspended makers can't publish."""
    accounts.ensure_can_trade(user=maker)
    if side not in Offer.Side.values:
        raise ValidationFailed.for_field("side", gettext("Choose buy or sell."))
    asset_obj, fiat_obj = asset_get(code=asset), fiat_get(code=fiat)
    total = parse_amount(amount, precision=asset_obj.precision, field="amount")
    values = _offer_terms(
        asset=asset_obj,
        fiat=fiat_obj,
        price_type=price_type,
        price=price,
        margin_percent=margin_percent,
        min_fiat=min_fiat,
        max_fiat=max_fiat,
        payment_window_minutes=payment_window_minutes,
    )
    _price_protected(asset=asset_obj, fiat=fiat_obj, values=values)
    methods = _payment_methods(payment_methods)
    accounts_named = pay.offer_payment_accounts(
        maker=maker, side=side, methods=methods, account_ids=payment_accounts
    )
    requirements = _requirements(
        {
            "min_taker_tier": min_taker_tier,
            "min_taker_trades": min_taker_trades,
            "min_account_age_days": min_account_age_days,
            "trusted_only": trusted_only,
            "allowed_countries": allowed_countries,
        }
    )
    reply = _auto_reply(auto_reply)
    if side == Offer.Side.SELL:
        available = ledger.account_for_user(user=maker, asset=asset_obj).available
        if available < total:
            raise ValidationFailed.for_field(
                "amount",
                gettext("You hold {v1} {code}; a sell offer can't offer more.").format(
                    v1=fmt(available, asset_obj.precision), code=asset_obj.code
                ),
            )
    with durable_atomic():
        _open_offers_within_cap(maker=maker)
        offer = Offer(
            maker=maker,
            side=side,
            asset=asset_obj,
            fiat=fiat_obj,
            amount=total,
            available=total,
            terms=(terms or "")[:2000],
            auto_reply=reply,
            **values,
            **requirements,
        )
        offer.effective_price = offer_effective_price(offer)
        offer.save(force_insert=True)
        offer.payment_methods.set(methods)
        offer.payment_accounts.set(accounts_named)
        book_cache.offer_changed(offer)
        _offer_changed(offer)
    return offer


def _offer_for_maker(offer_id: int, maker: Any) -> Offer:
    offer = (
        Offer.objects.select_for_update()
        .select_related("asset", "fiat")
        .filter(pk=offer_id, is_deleted=False)
        .first()
    )
    if offer is None or offer.maker_id != maker.pk:
        raise NotFound(gettext("Offer #{offer_id} not found.").format(offer_id=offer_id))
    return offer


def offer_update(*, offer_id: int, actor: Any, **changes: Any) -> Offer:
    """The maker edits price, limits, window, methods, terms, total or who may take it; takes in
    flight keep theirs. Raising a sell offer is checked against the balance as creating it is,
    and a new fixed price against the index."""
    with durable_atomic():
        offer = _offer_for_maker(offer_id, actor)
        current = {
            "price_type": offer.price_type,
            "price": offer.price,
            "margin_percent": offer.margin_percent,
            "min_fiat": offer.min_fiat,
            "max_fiat": offer.max_fiat,
            "payment_window_minutes": offer.payment_window_minutes,
        }
        merged: dict[str, Any] = {k: changes.get(k, v) for k, v in current.items()}
        if "price_type" in changes and changes["price_type"] == Offer.PriceType.FIXED:
            merged["margin_percent"] = None
        values = _offer_terms(asset=offer.asset, fiat=offer.fiat, **merged)
        if "price" in changes or "price_type" in changes:
            _price_protected(asset=offer.asset, fiat=offer.fiat, values=values)
        for field, value in values.items():
            setattr(offer, field, value)
        offer.effective_price = offer_effective_price(offer)
        if "amount" in changes:
            total = parse_amount(changes["amount"], precision=offer.asset.precision, field="amount")
            taken = offer.amount - offer.available
            if total < taken:
                raise ValidationFailed.for_field(
                    "amount",
                    gettext("{v1} is already in trades; the total can't be less.").format(
                        v1=fmt(taken, offer.asset.precision)
                    ),
                )
            if offer.side == Offer.Side.SELL and total - taken > offer.available:
                _within_balance(offer=offer, user=actor, available=total - taken)
            offer.available = total - taken
            offer.amount = total
        if "terms" in changes:
            offer.terms = (changes["terms"] or "")[:2000]
        if "auto_reply" in changes:
            offer.auto_reply = _auto_reply(changes["auto_reply"])
        if "is_active" in changes:
            offer.is_active = bool(changes["is_active"])
        if offer.closed_at is not None and not offer_is_dust(offer=offer):
            # Closed by the platform for being too small to take; topped up or its minimum
            # lowered, it reopens (unless this very edit pauses it).
            offer.closed_at = None
            offer.is_active = bool(changes.get("is_active", True))
        if any(f in changes for f in REQUIREMENT_FIELDS):
            current_req = {f: getattr(offer, f) for f in REQUIREMENT_FIELDS}
            merged_req = {f: changes.get(f, current_req[f]) for f in REQUIREMENT_FIELDS}
            for field, value in _requirements(merged_req).items():
                setattr(offer, field, value)
        offer.save()
        if "payment_methods" in changes:
            offer.payment_methods.set(_payment_methods(changes["payment_methods"]))
        if "payment_methods" in changes or "payment_accounts" in changes:
            methods = list(offer.payment_methods.all())
            if "payment_accounts" in changes:
                offer.payment_accounts.set(
                    pay.offer_payment_accounts(
                        maker=actor,
                        side=offer.side,
                        methods=methods,
                        account_ids=changes["payment_accounts"],
                    )
                )
            else:
                pay.offer_payment_accounts_keep(offer=offer, methods=methods)
        # An edit that leaves less than the new minimum closes it as a take would.
        offer_close_if_dust(offer=offer)
        book_cache.offer_changed(offer)
        _offer_changed(offer)
    return offer


def offer_set_active(*, offer_id: int, actor: Any, active: bool) -> Offer:
    """Pause or resume an offer; trades already open go on. An offer too small to take can't be
    resumed until it is topped up or its minimum lowered (offer_update reopens it then)."""
    with durable_atomic():
        offer = _offer_for_maker(offer_id, actor)
        if active:
            offer_reopen_check(offer=offer)
        offer.is_active = active
        offer.closed_at = None
        offer.save(update_fields=["is_active", "closed_at", "updated_at"])
        book_cache.offer_changed(offer)
        _offer_changed(offer)
    return offer


def offer_delete(*, offer_id: int, actor: Any) -> None:
    """Withdraw an offer from the book for good; trades already open go on."""
    with durable_atomic():
        offer = _offer_for_maker(offer_id, actor)
        offer.is_deleted = True
        offer.is_active = False
        offer.save(update_fields=["is_deleted", "is_active", "updated_at"])
        book_cache.offer_changed(offer)
        _offer_changed(offer)
