"""Opening a trade: taking an offer (trade_open) and quick buy/sell (trade_match). The offer is
locked and lowered through marketplace's services, the seller's amount moves into the trade's
escrow hold, and the trade is created with its first event: one transaction, never oversold."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q
from django.db.models.fields.mixins import FieldCacheMixin
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop

from accounts import services as accounts
from accounts.selectors import (
    TakerFacts,
    accounts_linked,
    buying_block_reason,
    trading_block_reason,
    trusting_owner_ids,
)
from common.errors import (
    Conflict,
    InsufficientFunds,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from common.money import fmt, round_down
from common.prepared import insert, save_fields
from common.transactions import durable_atomic
from escrow.models import EscrowEvent, Trade, TradePaymentAccount
from escrow.selectors.stats import (
    completed_trades,
    taker_facts,
    trade_value_eur,
    trade_volume_eur,
)
from escrow.services import volumes
from escrow.services.room import trade_auto_reply_post
from escrow.services.transitions import announce
from ledger import services as ledger
from marketplace import services as market
from marketplace.currencies import parse_fiat_amount
from marketplace.models import Offer
from marketplace.selectors import fiat_get, offer_book, offer_unmet_requirements
from marketplace.services import payment_accounts as pay
from marketplace.services.offers import REQUIREMENT_FIELDS


def _fee(amount: Decimal, *, is_maker: bool, precision: int) -> Decimal:
    """The side's rate of the amount, rounded down, but at least the asset's smallest unit when
    the rate isn't zero: dust trades whose fees rounded to nothing made wash trading free."""
    rate = settings.MAKER_FEE_RATE if is_maker else settings.TAKER_FEE_RATE
    fee = round_down(amount * rate, precision)
    if rate > 0 and amount > 0:
        fee = max(fee, Decimal(1).scaleb(-precision))
    return fee


@dataclass(frozen=True)
class TradeQuote:
    """What taking an offer for an amount comes to, before anything is locked: the take form's
    and quick trade's breakdown, and the figures trade_open opens the trade with (one
    computation, so what the taker saw is what they get, the price moving aside)."""

    offer: Offer
    amount: Decimal
    fiat_amount: Decimal
    price: Decimal
    seller_fee: Decimal
    buyer_fee: Decimal
    field: str

    @property
    def hold_amount(self) -> Decimal:
        """What the seller locks in escrow: the amount plus the seller's fee."""
        return self.amount + self.seller_fee

    @property
    def buyer_receives(self) -> Decimal:
        """What the buyer gets once released: the amount less the buyer's fee."""
        return self.amount - self.buyer_fee


def trade_quote(*, offer: Offer, amount: Any = None, fiat_amount: Any = None) -> TradeQuote:
    """Price, quantity (a fiat amount's quantized to the asset's display places), fees, the
    seller's hold and the buyer's payout of a take of `offer`, within its limits and what it
    has left; bad input is a ValidationFailed naming the field. Reads only: trade_open calls it
    again under the offer's lock."""
    if (amount in (None, "")) == (fiat_amount in (None, "")):
        raise ValidationFailed.for_field(
            "amount", gettext("Give either amount (in the asset) or fiat_amount, not both.")
        )
    qty, fiat_total, price, field = market.offer_quantity(
        offer=offer, amount=amount, fiat_amount=fiat_amount
    )
    precision = offer.asset.precision
    # The maker's rate for the maker's side: a sell offer's maker is its seller.
    maker_sells = offer.side == Offer.Side.SELL
    return TradeQuote(
        offer=offer,
        amount=qty,
        fiat_amount=fiat_total,
        price=price,
        seller_fee=_fee(qty, is_maker=maker_sells, precision=precision),
        buyer_fee=_fee(qty, is_maker=not maker_sells, precision=precision),
        field=field,
    )


# The two counts of _taker_within_abuse_limits in one statement, as plain SQL: Django built its
# aggregate in 1.1 ms, ten times the time PostgreSQL took to run it (tests/test_abuse_counts.py
# holds it to the ORM's answers, _abuse_counts_orm).
_ABUSE_COUNTS_SQL = """
SELECT
    COUNT(*) FILTER (WHERE %(buys)s AND buyer_id = %(taker)s AND state = %(funded)s),
    COUNT(*) FILTER (WHERE taker_id = %(taker)s AND maker_id = %(maker)s AND created_at >= %(since)s)
FROM escrow_trade
WHERE (%(buys)s AND buyer_id = %(taker)s AND state = %(funded)s)
   OR (taker_id = %(taker)s AND maker_id = %(maker)s AND created_at >= %(since)s)
"""


def _abuse_counts(*, taker_id: int, maker_id: int, since: datetime, buys: bool) -> tuple[int, int]:
    """(funded trades the taker has to pay as buyer, or 0 unless `buys`; trades the taker opened
    against this maker since `since`)."""
    params: dict[str, Any] = {
        "buys": buys,
        "taker": taker_id,
        "maker": maker_id,
        "since": since,
        "funded": Trade.State.FUNDED.value,
    }
    with connection.cursor() as cursor:  # the primary: under the taker's profile lock
        cursor.execute(_ABUSE_COUNTS_SQL, params)
        unpaid, recent = cursor.fetchone()
    return int(unpaid), int(recent)


def _abuse_counts_orm(
    *, taker_id: int, maker_id: int, since: datetime, buys: bool
) -> tuple[int, int]:
    """_abuse_counts through the ORM: the rule as it reads best, for the test of the SQL."""
    unpaid_q = Q(buyer_id=taker_id, state=Trade.State.FUNDED)
    recent_q = Q(taker_id=taker_id, maker_id=maker_id, created_at__gte=since)
    counts = Trade.objects.filter((unpaid_q | recent_q) if buys else recent_q).aggregate(
        unpaid=Count("pk", filter=unpaid_q), recent=Count("pk", filter=recent_q)
    )
    return (counts["unpaid"] if buys else 0), counts["recent"]


def _taker_within_abuse_limits(*, offer: Offer, taker: Any) -> None:
    """Under the taker's profile lock (their takes queue there, so two can't both slip under a
    limit): a taker who buys holds at most MAX_UNPAID_TRADES funded trades as buyer (takes
    never paid lock sellers' coins and limits), and nobody opens more than
    TAKES_PER_MAKER_PER_MINUTE trades against one maker's offers a minute (cancelled ones
    count: take-and-cancel is how an offer is churned)."""
    buys = offer.side == Offer.Side.SELL
    unpaid, recent = _abuse_counts(
        taker_id=taker.pk,
        maker_id=offer.maker_id,
        since=timezone.now() - timedelta(minutes=1),
        buys=buys,
    )
    if buys and unpaid >= settings.MAX_UNPAID_TRADES:
        raise Conflict(
            gettext(
                "You have {unpaid} trades waiting for your payment; pay or cancel one before taking another."
            ).format(unpaid=unpaid),
            code="too_many_unpaid_trades",
        )
    if recent >= settings.TAKES_PER_MAKER_PER_MINUTE:
        raise Conflict(
            gettext(
                "You opened {recent} trades with this maker in the last minute; wait a minute."
            ).format(recent=recent),
            code="rate_limited",
        )


def _at_least_minimum(*, value_eur: Decimal, field: str) -> None:
    """A trade of at least MIN_TRADE_EUR (EUR equivalent): below it, trades are dust that only
    wash trading wants."""
    minimum = Decimal(settings.MIN_TRADE_EUR)
    if value_eur < minimum:
        message = f"A trade must be worth at least {minimum:f} EUR; this one is {value_eur:f} EUR."
        raise ValidationFailed(message, fields={field: [message]}, code="below_minimum")


def trade_open(
    *,
    offer_id: int,
    taker: Any,
    amount: Any = None,
    fiat_amount: Any = None,
    payment_method: str | None = None,
    payment_account: Any = None,
) -> Trade:
    """Take an offer: lock the offer row and both parties' profiles, check who may take it and
    both parties' limits, hold the seller's amount in escrow; never oversold. The seller's
    payment account (the sell offer's for the method, or the one a seller taking a buy offer
    names) is copied into the trade."""
    if (amount in (None, "")) == (fiat_amount in (None, "")):
        raise ValidationFailed.for_field(
            "amount", gettext("Give either amount (in the asset) or fiat_amount, not both.")
        )
    with durable_atomic():
        offer = market.offer_lock_for_taking(offer_id=offer_id, taker=taker)
        asset, fiat = offer.asset, offer.fiat
        # Locked after the offer, in pk order: a freeze or another take of either party waits.
        parties = accounts.profiles_lock(user_ids=[offer.maker_id, taker.pk])
        # A frozen or suspended taker is refused here, under the profile lock.
        accounts.ensure_can_trade(user=taker, profile=parties[taker.pk])
        if trading_block_reason(parties[offer.maker_id]):
            raise Conflict(
                gettext("Offer #{pk} can't be taken right now.").format(pk=offer.pk),
                code="offer_unavailable",
            )
        # The daily cancellation limit (escrow.services.cancellations) pauses buying: taking a
        # sell offer, or a buy offer whose maker would be the buyer (the book hides those).
        buyer_id = taker.pk if offer.side == Offer.Side.SELL else offer.maker_id
        if paused := buying_block_reason(parties[buyer_id]):
            if buyer_id == taker.pk:
                raise PermissionDenied(paused, code="buying_suspended")
            raise Conflict(
                gettext("Offer #{pk} can't be taken right now.").format(pk=offer.pk),
                code="offer_unavailable",
            )
        _taker_within_abuse_limits(offer=offer, taker=taker)
        # Sock puppets: never say which signal linked them (it would teach how to evade it).
        if accounts_linked(user_id=offer.maker_id, other_id=taker.pk):
            raise PermissionDenied(
                gettext("Offer #{pk} isn't open to you: your accounts are related.").format(
                    pk=offer.pk
                ),
                code="linked_accounts",
            )
        unmet = offer_unmet_requirements(
            offer=offer,
            taker=TakerFacts(
                user_id=taker.pk,
                tier=parties[taker.pk].kyc_tier,
                completed_trades=completed_trades(user_id=taker.pk)
                if offer.min_taker_trades
                else 0,
                date_joined=taker.date_joined,
                country=parties[taker.pk].country,
            ),
            is_trusted=bool(
                offer.trusted_only and trusting_owner_ids(user=taker, owner_ids=[offer.maker_id])
            ),
        )
        if unmet:
            raise PermissionDenied(
                gettext("Offer #{pk} isn't open to you: {v1}").format(
                    pk=offer.pk, v1=" ".join(unmet)
                ),
                code="requirement_not_met",
            )
        quote = trade_quote(offer=offer, amount=amount, fiat_amount=fiat_amount)
        qty, fiat_total, price, field = quote.amount, quote.fiat_amount, quote.price, quote.field
        method = market.offer_payment_method(offer=offer, code=payment_method)
        pay_into = pay.payment_account_for_take(
            offer=offer, method=method, taker=taker, account_id=payment_account
        )
        value_eur = trade_value_eur(asset=asset, fiat=fiat, amount=qty, fiat_amount=fiat_total)
        _at_least_minimum(value_eur=value_eur, field=field)
        accounts.trade_limits_enforce(
            taker=taker,
            parties=parties,
            value_eur=value_eur,
            volumes_eur=trade_volume_eur(user_ids=sorted(parties)),
            field=field,
        )
        seller, buyer = (
            (offer.maker, taker) if offer.side == Offer.Side.SELL else (taker, offer.maker)
        )
        now = timezone.now()
        market.offer_reserve(offer=offer, amount=qty, price=price)
        (trade,) = insert(
            [
                Trade(
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
                    seller_fee=quote.seller_fee,
                    buyer_fee=quote.buyer_fee,
                    payment_window_minutes=offer.payment_window_minutes,
                    payment_deadline=now + timedelta(minutes=offer.payment_window_minutes),
                    terms=offer.terms,
                    value_eur=value_eur,
                )
            ]
        )
        try:
            trade.escrow_hold = ledger.transfer_post(
                idempotency_key=f"trade:{trade.pk}:hold",
                debit=ledger.account_for_user(user=seller, asset=asset),
                credit=ledger.account_escrow(trade_id=trade.pk, asset=asset, new=True),
                amount=trade.hold_amount,
                kind="escrow_hold",
                pending=True,
                reference=trade.pk,
                new_key=True,  # it names the trade inserted just above
            )
        except InsufficientFunds as exc:
            message = (
                gettext("Your {code} balance doesn't cover {v1} {code} (amount plus fee).")
                if seller.pk == taker.pk
                else gettext(
                    "The seller's {code} balance doesn't cover {v1} {code} (amount plus fee)."
                )
            )
            raise InsufficientFunds(
                message.format(code=asset.code, v1=fmt(trade.hold_amount, asset.precision)),
                fields=exc.fields,
            ) from None
        save_fields(trade, ["escrow_hold"])
        if pay_into is not None:
            TradePaymentAccount.objects.create(
                trade=trade, owner=seller, **pay.payment_account_snapshot(pay_into)
            )
        else:  # known to have none: the answer shows the trade without reading it again
            cast(FieldCacheMixin, Trade._meta.get_field("payment_account")).set_cached_value(
                trade, None
            )
        (event,) = insert(
            [
                EscrowEvent(
                    trade=trade,
                    old_state="",
                    new_state=Trade.State.FUNDED,
                    actor=taker,
                    actor_role=trade.role_of(taker) or "",
                    reason=gettext_noop("offer taken"),
                )
            ]
        )
        announce(trade, event)
        volumes.trade_volume_count(trade=trade, counted=True)  # the take's last lock
        if offer.auto_reply:
            trade_auto_reply_post(trade=trade, author_id=offer.maker_id, text=offer.auto_reply)
    return trade


def _match_candidates(
    *,
    taker: Any,
    side: str,
    asset: str,
    fiat: str,
    fiat_amount: Any,
    payment_method: str | None,
) -> tuple[Decimal, Any, Iterator[Offer]]:
    """Quick trade's candidates, best price first: offers on the other side that fit the fiat
    amount and are open to the taker. (the parsed fiat amount, the fiat, the offers)"""
    if side not in Offer.Side.values:
        raise ValidationFailed.for_field("side", gettext("Choose buy or sell."))
    fiat_obj = fiat_get(code=fiat)
    value = parse_fiat_amount(fiat_amount, fiat=fiat_obj, field="fiat_amount")
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

    def open_to_taker() -> Iterator[Offer]:
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
            yield offer

    return value, fiat_obj, open_to_taker()


def trade_match(
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
    value, fiat_obj, candidates = _match_candidates(
        taker=taker,
        side=side,
        asset=asset,
        fiat=fiat,
        fiat_amount=fiat_amount,
        payment_method=payment_method,
    )
    for offer in candidates:
        try:
            return trade_open(
                offer_id=offer.pk, taker=taker, fiat_amount=value, payment_method=payment_method
            )
        except Conflict as exc:
            if exc.code == "too_many_unpaid_trades":
                raise  # the taker's own standing: every other offer would say the same
            continue  # taken, drained, over its maker's limit or rate: try the next best
        except PermissionDenied as exc:
            if exc.code != "linked_accounts":
                raise
            continue  # a related account's offer: another maker's may fit
    raise NotFound(
        gettext("No {asset} offer fits {value} {code} right now.").format(
            asset=asset, value=value, code=fiat_obj.code
        ),
        code="no_match",
    )


def trade_match_quote(
    *,
    taker: Any,
    side: str,
    asset: str,
    fiat: str,
    fiat_amount: Any,
    payment_method: str | None = None,
) -> TradeQuote:
    """What quick trade would open now: the quote of the best offer trade_match would try
    first (it may still fall to the next best if that one is taken meanwhile)."""
    value, fiat_obj, candidates = _match_candidates(
        taker=taker,
        side=side,
        asset=asset,
        fiat=fiat,
        fiat_amount=fiat_amount,
        payment_method=payment_method,
    )
    for offer in candidates:
        try:
            return trade_quote(offer=offer, fiat_amount=value)
        except (ValidationFailed, Conflict):
            continue  # e.g. below the smallest amount traded: the next best may fit
    raise NotFound(
        gettext("No {asset} offer fits {value} {code} right now.").format(
            asset=asset, value=value, code=fiat_obj.code
        ),
        code="no_match",
    )
