"""Offers, the price index and taking an offer. Taking moves the seller's amount into the trade's
escrow hold in the same transaction that creates the trade."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Round
from django.utils import timezone

from accounts import services as accounts
from accounts.selectors import (
    TakerFacts,
    is_blocked_between,
    taker_facts,
    trade_value_eur,
    trader_stats,
    trading_block_reason,
    trusting_owner_ids,
)
from common.errors import Conflict, InsufficientFunds, NotFound, PermissionDenied, ValidationFailed
from common.money import fmt, parse_amount, parse_signed, round_down, round_half_up
from common.transactions import durable_atomic
from escrow.models import EscrowEvent
from escrow.services import announce
from ledger import services as ledger
from ledger.models import Asset
from marketplace.models import FiatCurrency, Offer, PaymentMethod, PriceIndex
from escrow.models import Trade
from marketplace.selectors import offer_book, offer_unmet_requirements

MAX_PAYMENT_METHODS = 3
PRICE_PRECISION = 8
# Upper bounds of what a maker may ask of takers (beyond them nobody could take the offer).
MAX_REQUIRED_TRADES = 10_000
MAX_REQUIRED_AGE_DAYS = 3_650
REQUIREMENT_FIELDS = ("min_taker_tier", "min_taker_trades", "min_account_age_days", "trusted_only")


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", fields={field: [message]})


def _asset(code: Any) -> Asset:
    asset = Asset.objects.filter(code=str(code or "").upper(), is_active=True).first()
    if asset is None:
        raise _invalid("asset", f"Unknown asset {code!r}.")
    return asset


def _fiat(code: Any) -> FiatCurrency:
    fiat = FiatCurrency.objects.filter(code=str(code or "").upper(), is_active=True).first()
    if fiat is None:
        raise _invalid("fiat", f"Unknown fiat currency {code!r}.")
    return fiat


def _payment_methods(codes: Iterable[str]) -> list[PaymentMethod]:
    codes = list(dict.fromkeys(str(c) for c in codes or []))
    if not codes:
        raise _invalid("payment_methods", "Choose at least one payment method.")
    if len(codes) > MAX_PAYMENT_METHODS:
        raise _invalid("payment_methods", f"Choose at most {MAX_PAYMENT_METHODS} payment methods.")
    found = {m.code: m for m in PaymentMethod.objects.filter(code__in=codes, is_active=True)}
    unknown = [c for c in codes if c not in found]
    if unknown:
        raise _invalid("payment_methods", f"Unknown payment method {unknown[0]!r}.")
    return [found[c] for c in codes]


def _whole(value: Any, *, field: str, low: int, high: int, message: str) -> int:
    if isinstance(value, bool):
        raise _invalid(field, message)
    try:
        number = int(str(value).strip() or 0) if value is not None else 0
    except (TypeError, ValueError):
        raise _invalid(field, message) from None
    if not low <= number <= high:
        raise _invalid(field, message)
    return number


def _flag(value: Any, *, field: str) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "on", "yes"):
        return True
    if text in ("", "0", "false", "off", "no"):
        return False
    raise _invalid(field, "Yes or no.")


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
    }


# --- price index ------------------------------------------------------------------------------


def price_index_set(
    *, asset_code: str, fiat_code: str, price: Any, source: str = "manual"
) -> PriceIndex:
    """Set the reference price of a pair (moderators, or the periodic price task)."""
    asset, fiat = _asset(asset_code), _fiat(fiat_code)
    value = parse_amount(price, precision=PRICE_PRECISION, field="price")
    with transaction.atomic():
        row, _ = PriceIndex.objects.update_or_create(
            asset=asset, fiat=fiat, defaults={"price": value, "source": source}
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
    return row


def offer_effective_price(
    offer: Offer, *, index: dict[tuple[int, int], Decimal] | None = None
) -> Decimal | None:
    """Fiat per one unit of the asset: the fixed price, or the index times (1 + margin)."""
    if offer.price_type == Offer.PriceType.FIXED:
        return offer.price
    if index is not None:
        base = index.get((offer.asset_id, offer.fiat_id))
    else:
        base = (
            PriceIndex.objects.filter(asset_id=offer.asset_id, fiat_id=offer.fiat_id)
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
        raise _invalid("price_type", "Choose fixed or floating.")
    values: dict[str, Any] = {"price_type": price_type, "price": None, "margin_percent": None}
    if price_type == Offer.PriceType.FIXED:
        values["price"] = parse_amount(price, precision=PRICE_PRECISION, field="price")
    else:
        if margin_percent in (None, ""):
            raise _invalid(
                "margin_percent",
                "A floating price needs a margin in percent (may be 0 or negative).",
            )
        margin = parse_signed(margin_percent, precision=2, field="margin_percent")
        if not Decimal(-50) <= margin <= Decimal(50):
            raise _invalid("margin_percent", "The margin must be between -50% and +50%.")
        if not PriceIndex.objects.filter(asset=asset, fiat=fiat).exists():
            raise _invalid(
                "price_type",
                f"There is no {asset.code}/{fiat.code} price index to float on; use a fixed price.",
            )
        values["margin_percent"] = margin
    values["min_fiat"] = parse_amount(min_fiat, precision=fiat.precision, field="min_fiat")
    values["max_fiat"] = parse_amount(max_fiat, precision=fiat.precision, field="max_fiat")
    if values["max_fiat"] < values["min_fiat"]:
        raise _invalid("max_fiat", "The maximum must not be below the minimum.")
    try:
        window = int(payment_window_minutes)
    except (TypeError, ValueError):
        raise _invalid("payment_window_minutes", "Enter whole minutes between 5 and 180.") from None
    if not 5 <= window <= 180:
        raise _invalid("payment_window_minutes", "The payment window must be 5 to 180 minutes.")
    values["payment_window_minutes"] = window
    return values


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
) -> Offer:
    """Publish an offer; a sell offer can't offer more than the maker holds right now, and
    frozen or suspended makers can't publish."""
    accounts.ensure_can_trade(user=maker)
    if side not in Offer.Side.values:
        raise _invalid("side", "Choose buy or sell.")
    asset_obj, fiat_obj = _asset(asset), _fiat(fiat)
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
    methods = _payment_methods(payment_methods)
    requirements = _requirements(
        {
            "min_taker_tier": min_taker_tier,
            "min_taker_trades": min_taker_trades,
            "min_account_age_days": min_account_age_days,
            "trusted_only": trusted_only,
        }
    )
    if side == Offer.Side.SELL:
        available = ledger.account_for_user(user=maker, asset=asset_obj).available
        if available < total:
            raise _invalid(
                "amount",
                f"You hold {fmt(available, asset_obj.precision)} {asset_obj.code}; a sell offer can't offer more.",
            )
    with durable_atomic():
        offer = Offer(
            maker=maker,
            side=side,
            asset=asset_obj,
            fiat=fiat_obj,
            amount=total,
            available=total,
            terms=(terms or "")[:2000],
            **values,
            **requirements,
        )
        offer.effective_price = offer_effective_price(offer)
        offer.save(force_insert=True)
        offer.payment_methods.set(methods)
    return offer


def _offer_for_maker(offer_id: int, maker: Any) -> Offer:
    offer = (
        Offer.objects.select_for_update()
        .select_related("asset", "fiat")
        .filter(pk=offer_id, is_deleted=False)
        .first()
    )
    if offer is None or offer.maker_id != maker.pk:
        raise NotFound(f"Offer #{offer_id} not found.")
    return offer


def offer_update(*, offer_id: int, actor: Any, **changes: Any) -> Offer:
    """The maker edits price, limits, window, methods, terms, total or who may take it; takes in
    flight keep theirs."""
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
        merged = {k: changes.get(k, v) for k, v in current.items()}
        if "price_type" in changes and changes["price_type"] == Offer.PriceType.FIXED:
            merged["margin_percent"] = None
        values = _offer_terms(asset=offer.asset, fiat=offer.fiat, **merged)
        for field, value in values.items():
            setattr(offer, field, value)
        offer.effective_price = offer_effective_price(offer)
        if "amount" in changes:
            total = parse_amount(changes["amount"], precision=offer.asset.precision, field="amount")
            taken = offer.amount - offer.available
            if total < taken:
                raise _invalid(
                    "amount",
                    f"{fmt(taken, offer.asset.precision)} is already in trades; the total can't be less.",
                )
            offer.available = total - taken
            offer.amount = total
        if "terms" in changes:
            offer.terms = (changes["terms"] or "")[:2000]
        if "is_active" in changes:
            offer.is_active = bool(changes["is_active"])
        if any(f in changes for f in REQUIREMENT_FIELDS):
            current_req = {f: getattr(offer, f) for f in REQUIREMENT_FIELDS}
            merged_req = {f: changes.get(f, current_req[f]) for f in REQUIREMENT_FIELDS}
            for field, value in _requirements(merged_req).items():
                setattr(offer, field, value)
        offer.save()
        if "payment_methods" in changes:
            offer.payment_methods.set(_payment_methods(changes["payment_methods"]))
    return offer


def offer_set_active(*, offer_id: int, actor: Any, active: bool) -> Offer:
    """Pause or resume an offer; trades already open go on."""
    with durable_atomic():
        offer = _offer_for_maker(offer_id, actor)
        offer.is_active = active
        offer.save(update_fields=["is_active", "updated_at"])
    return offer


def offer_delete(*, offer_id: int, actor: Any) -> None:
    """Withdraw an offer from the book for good; trades already open go on."""
    with durable_atomic():
        offer = _offer_for_maker(offer_id, actor)
        offer.is_deleted = True
        offer.is_active = False
        offer.save(update_fields=["is_deleted", "is_active", "updated_at"])


# --- taking an offer --------------------------------------------------------------------------


def _fee(amount: Decimal, *, is_maker: bool, precision: int) -> Decimal:
    rate = settings.MAKER_FEE_RATE if is_maker else settings.TAKER_FEE_RATE
    return round_down(amount * rate, precision)


def offer_take(
    *,
    offer_id: int,
    taker: Any,
    amount: Any = None,
    fiat_amount: Any = None,
    payment_method: str | None = None,
) -> Trade:
    """Open a trade: lock the offer row and both parties' profiles, check who may take it and
    both parties' limits, hold the seller's amount in escrow; never oversold."""
    # Early, for a clear answer; checked again below under the profile lock.
    accounts.ensure_can_trade(user=taker)
    if (amount in (None, "")) == (fiat_amount in (None, "")):
        raise _invalid("amount", "Give either amount (in the asset) or fiat_amount, not both.")
    with durable_atomic():
        offer = (
            Offer.objects.select_for_update(of=("self",))
            .select_related("asset", "fiat", "maker")
            .filter(pk=offer_id, is_deleted=False)
            .first()
        )
        # Blocked either way: the offer doesn't exist for them (not a hint that it does).
        if offer is None or (
            offer.maker_id != taker.pk
            and is_blocked_between(user_id=taker.pk, other_id=offer.maker_id)
        ):
            raise NotFound(f"Offer #{offer_id} not found.")
        asset, fiat = offer.asset, offer.fiat
        if offer.maker_id == taker.pk:
            raise _invalid("offer", "You cannot take your own offer.")
        if not offer.is_active:
            raise Conflict(f"Offer #{offer.pk} is paused and can't be taken.", code="offer_paused")
        # Locked after the offer, in pk order: a freeze or another take of either party waits.
        parties = accounts.profiles_lock(user_ids=[offer.maker_id, taker.pk])
        accounts.ensure_can_trade(user=taker, profile=parties[taker.pk])
        if trading_block_reason(parties[offer.maker_id]):
            raise Conflict(f"Offer #{offer.pk} can't be taken right now.", code="offer_unavailable")
        unmet = offer_unmet_requirements(
            offer=offer,
            taker=TakerFacts(
                user_id=taker.pk,
                tier=parties[taker.pk].kyc_tier,
                completed_trades=trader_stats(user=taker).trades if offer.min_taker_trades else 0,
                date_joined=taker.date_joined,
            ),
            is_trusted=bool(
                offer.trusted_only and trusting_owner_ids(user=taker, owner_ids=[offer.maker_id])
            ),
        )
        if unmet:
            raise PermissionDenied(
                f"Offer #{offer.pk} isn't open to you: {' '.join(unmet)}",
                code="requirement_not_met",
            )
        price = offer_effective_price(offer)
        if price is None or price <= 0:
            raise Conflict(f"Offer #{offer.pk} has no price right now: its price index is missing.")
        if amount not in (None, ""):
            qty = parse_amount(amount, precision=asset.precision, field="amount")
            fiat_total = round_half_up(qty * price, fiat.precision)
        else:
            fiat_total = parse_amount(fiat_amount, precision=fiat.precision, field="fiat_amount")
            qty = round_down(fiat_total / price, asset.precision)
            if qty <= 0:
                raise _invalid("fiat_amount", "That buys less than the asset's smallest unit.")
        field = "amount" if amount not in (None, "") else "fiat_amount"
        if not offer.min_fiat <= fiat_total <= offer.max_fiat:
            raise _invalid(
                field,
                f"This offer trades {offer.min_fiat}-{offer.max_fiat} {fiat.code} per trade; "
                f"you asked for {fiat_total} {fiat.code}.",
            )
        if qty > offer.available:
            raise Conflict(
                f"Only {fmt(offer.available, asset.precision)} {asset.code} is left on offer #{offer.pk}.",
                fields={field: ["More than the offer has left."]},
                code="offer_exhausted",
            )
        methods = {m.code: m for m in offer.payment_methods.all()}
        if payment_method:
            if payment_method not in methods:
                raise _invalid("payment_method", f"This offer doesn't accept {payment_method!r}.")
            method = methods[payment_method]
        else:
            method = next(iter(methods.values()), None)
        accounts.trade_limits_enforce(
            taker=taker,
            parties=parties,
            value_eur=trade_value_eur(asset=asset, fiat=fiat, amount=qty, fiat_amount=fiat_total),
            field=field,
        )
        seller, buyer = (
            (offer.maker, taker) if offer.side == Offer.Side.SELL else (taker, offer.maker)
        )
        now = timezone.now()
        offer.available -= qty
        offer.save(update_fields=["available", "updated_at"])
        trade = Trade.objects.create(
            offer=offer,
            maker=offer.maker,
            taker=taker,
            buyer=buyer,
            seller=seller,
            asset=asset,
            fiat=fiat,
            payment_method=method,
            amount=qty,
            fiat_amount=fiat_total,
            price=price,
            seller_fee=_fee(qty, is_maker=seller.pk == offer.maker_id, precision=asset.precision),
            buyer_fee=_fee(qty, is_maker=buyer.pk == offer.maker_id, precision=asset.precision),
            payment_window_minutes=offer.payment_window_minutes,
            payment_deadline=now + timedelta(minutes=offer.payment_window_minutes),
            terms=offer.terms,
        )
        try:
            trade.escrow_hold = ledger.transfer_post(
                idempotency_key=f"trade:{trade.pk}:hold",
                debit=ledger.account_for_user(user=seller, asset=asset),
                credit=ledger.account_escrow(trade_id=trade.pk, asset=asset),
                amount=trade.hold_amount,
                kind="escrow_hold",
                pending=True,
                reference=trade.pk,
            )
        except InsufficientFunds as exc:
            who = "Your" if seller.pk == taker.pk else "The seller's"
            raise InsufficientFunds(
                f"{who} {asset.code} balance doesn't cover {fmt(trade.hold_amount, asset.precision)} "
                f"{asset.code} (amount plus fee).",
                fields=exc.fields,
            ) from None
        trade.save(update_fields=["escrow_hold"])
        event = EscrowEvent.objects.create(
            trade=trade,
            old_state="",
            new_state=Trade.State.FUNDED,
            actor=taker,
            actor_role=trade.role_of(taker) or "",
            reason="offer taken",
        )
        announce(trade, event)
    return trade


def offer_match(
    *,
    taker: Any,
    side: str,
    asset: str,
    fiat: str,
    fiat_amount: Any,
    payment_method: str | None = None,
) -> Trade:
    """Quick buy/sell: take the best-priced offer that fits the amount and is open to the
    taker, at once."""
    accounts.ensure_can_trade(user=taker)
    if side not in Offer.Side.values:
        raise _invalid("side", "Choose buy or sell.")
    fiat_obj = _fiat(fiat)
    value = parse_amount(fiat_amount, precision=fiat_obj.precision, field="fiat_amount")
    # side is what the taker wants to do: buying means taking sell offers.
    book_side = Offer.Side.SELL if side == "buy" else Offer.Side.BUY
    candidates = offer_book(
        side=book_side,
        asset=asset,
        fiat=fiat,
        payment_method=payment_method,
        fiat_amount=value,
        viewer=taker,
    )
    facts = None
    for offer in candidates:
        if offer.maker_id == taker.pk:
            continue
        if any(getattr(offer, f) for f in REQUIREMENT_FIELDS):
            facts = facts or taker_facts(user=taker)
            trusted = offer.trusted_only and trusting_owner_ids(
                user=taker, owner_ids=[offer.maker_id]
            )
            if offer_unmet_requirements(offer=offer, taker=facts, is_trusted=bool(trusted)):
                continue  # not open to this taker: the next best may be
        try:
            return offer_take(
                offer_id=offer.pk, taker=taker, fiat_amount=value, payment_method=payment_method
            )
        except Conflict:
            continue  # taken, drained or over its maker's limit: try the next best
    raise NotFound(f"No {asset} offer fits {value} {fiat_obj.code} right now.", code="no_match")
