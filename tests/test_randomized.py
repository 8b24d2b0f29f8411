"""A randomized, model-based test of the marketplace services (a hypothesis state machine).

Random sequences of deposits (some over-precise, zero or negative), buy and sell offers (some
larger than the maker holds), takes by amount or by fiat amount, every escrow move by the right
party and by the wrong ones (mark paid, release, cancel, expire, dispute, a moderator's release,
refund or split) with their settlements, withdrawals confirmed or rejected, and sealing run
against the real services on PostgreSQL. A small model (trade states, offer stock, every
user's available and posted balances, the fees earned, the parties' KYC tiers and 30-day
volumes) predicts each call's outcome: a call the model expects to work must work, and one it
expects to be refused must raise exactly that `ApplicationError` and change nothing (the
relevant rows are snapshotted before and compared after). Any other exception fails the test. After every step the ledger's global rules are checked: each
asset sums to zero (posted and pending), no account but the world's is overdrawn, every trade's
escrow hold matches its state, every offer's stock matches its trades. At the end of every
example the chain is sealed and `verify_ledger()` must pass.

on_commit callbacks never fire inside a pytest-django test transaction, so settlements are
executed here directly with `settlement_execute`, as the Celery task would. The database state
accumulates over the examples of one test (one transaction); each example makes its own users,
so the per-user model starts from zero while the per-asset sums are checked globally.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, localcontext
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission
from django.db.models import F, Q, Sum
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from accounts.models import Profile
from accounts.selectors import kyc_limits, profile_for
from accounts.tests.factories import UserFactory
from common.errors import (
    ApplicationError,
    Conflict,
    InsufficientFunds,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from common.money import quantum, round_down, round_half_up
from conftest import require_postgres
from escrow import services as escrow
from escrow import services as escrow_services
from escrow.models import EscrowEvent, Settlement, Trade
from ledger import services as ledger
from ledger.models import Asset, Deposit, LedgerAccount, Transfer, Withdrawal
from ledger.replay import verify_ledger
from marketplace import services as market
from marketplace.models import Offer, PriceIndex

S = Trade.State
Kind = LedgerAccount.Kind
Flags = Transfer.Flags
BUYER, SELLER, SYSTEM, MODERATOR, STRANGER = "buyer", "seller", "system", "moderator", "stranger"

# docs/architecture.md's escrow table, written out again here (not imported) as the oracle.
SPEC: dict[tuple[str, str], set[str]] = {
    (S.FUNDED, S.PAID): {BUYER},
    (S.FUNDED, S.CANCELLED): {BUYER, MODERATOR},
    (S.FUNDED, S.EXPIRED): {SYSTEM},
    (S.FUNDED, S.DISPUTED): {BUYER},
    (S.PAID, S.RELEASING): {SELLER},
    (S.PAID, S.DISPUTED): {BUYER, SELLER},
    (S.DISPUTED, S.RELEASING): {MODERATOR},
    (S.DISPUTED, S.REFUNDING): {MODERATOR},
    (S.DISPUTED, S.SPLITTING): {MODERATOR},
    (S.RELEASING, S.COMPLETED): {SYSTEM},
    (S.REFUNDING, S.REFUNDED): {SYSTEM},
    (S.SPLITTING, S.SPLIT): {SYSTEM},
}
OPEN = {S.FUNDED, S.PAID, S.DISPUTED, S.RELEASING, S.REFUNDING, S.SPLITTING}
SETTLING = {S.RELEASING: S.COMPLETED, S.REFUNDING: S.REFUNDED, S.SPLITTING: S.SPLIT}
SETTLEMENT_KIND = {S.RELEASING: "release", S.REFUNDING: "refund", S.SPLITTING: "split"}
VOIDED = {S.CANCELLED, S.EXPIRED, S.REFUNDED}
# Only cancel and expire give the amount back to the offer (escrow.services._return_hold);
# a moderator's refund or split leaves the offer's stock as it is.
RESTOCKED = {S.CANCELLED, S.EXPIRED}

ASSETS = ("BTC", "ETH", "USDT")
FIATS = ("EUR", "USD", "NGN")
METHODS = ("sepa", "revolut", "wise", "zelle")
PRICE_BAND = {
    "BTC": (Decimal(50000), Decimal(100000)),
    "ETH": (Decimal(1500), Decimal(4000)),
    "USDT": (Decimal("0.8"), Decimal("1.2")),
}
DEPOSIT_MAX = {"BTC": Decimal(2), "ETH": Decimal(40), "USDT": Decimal(50000)}
FIAT_PRECISION = 2

_usernames = itertools.count(1)


def weighted(data: st.DataObject, choices: dict[str, int]) -> str:
    """Draw a key with the given relative weight (shrinks towards the first key)."""
    return data.draw(st.sampled_from([k for k, n in choices.items() for _ in range(n)]))


def chance(data: st.DataObject, num: int, den: int) -> bool:
    """True with probability num/den (st.integers is biased towards its bounds; this is not)."""
    return data.draw(st.sampled_from(range(den))) < num


def percent(data: st.DataObject, top: int) -> int:
    """0..top, uniform, with the edges 0 and 100 a little more often."""
    return data.draw(st.sampled_from([0, 100, *range(top + 1)]))


def pct_of(value: Decimal, pct: int, precision: int) -> Decimal:
    return round_down(value * pct / 100, precision)


@dataclass
class OfferModel:
    pk: int
    maker: int
    side: str
    asset: str
    fiat: str
    price: Decimal  # the effective price (fixed, or the index with the margin)
    amount: Decimal
    available: Decimal
    min_fiat: Decimal
    max_fiat: Decimal
    methods: list[str]
    # Closed by the platform: what is left can't cover min_fiat (marketplace.services.dust).
    closed: bool = False


@dataclass
class TradeModel:
    pk: int
    offer: int
    buyer: int
    seller: int
    asset: str
    amount: Decimal
    seller_fee: Decimal
    buyer_fee: Decimal
    state: str = S.FUNDED
    overdue: bool = False  # payment_deadline moved into the past
    dispute_open: bool = False  # paid_at moved back past the dispute delay
    share: Decimal | None = None  # a split's buyer amount
    value_eur: Decimal = Decimal(0)  # what it adds to both parties' 30-day volume (unrounded)

    @property
    def hold(self) -> Decimal:
        return self.amount + self.seller_fee

    def role(self, user: int) -> str:
        return BUYER if user == self.buyer else SELLER if user == self.seller else STRANGER


@dataclass
class WithdrawalModel:
    pk: int
    user: int
    asset: str
    amount: Decimal
    status: str = Withdrawal.Status.REQUESTED


@dataclass
class Balances:
    available: dict[tuple[int, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    posted: dict[tuple[int, str], Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    fees: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))

    def credit(self, user: int, asset: str, amount: Decimal) -> None:
        self.available[user, asset] += amount
        self.posted[user, asset] += amount


class MarketplaceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.users: list[Any] = []
        self.tiers: list[int] = []
        self.offers: dict[int, OfferModel] = {}
        self.trades: dict[int, TradeModel] = {}
        self.withdrawals: dict[int, WithdrawalModel] = {}
        self.model = Balances()
        self.assets = {a.code: a for a in Asset.objects.filter(code__in=ASSETS)}
        self.precision = {code: a.precision for code, a in self.assets.items()}
        # A quantity bought for a fiat amount is quantized to the display places (ETH 6).
        self.display = {code: a.display_places for code, a in self.assets.items()}
        self.index = {
            (p.asset.code, p.fiat.code): p.price
            for p in PriceIndex.objects.select_related("asset", "fiat")
        }
        # Rows made by earlier examples are left alone by the snapshots and the per-row checks.
        self.floor = {
            model: model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
            for model in (LedgerAccount, Offer, Trade, Withdrawal)
        }
        self.fees_at_start = {code: self.fees_balance(code) for code in ASSETS}
        self.serial = next(_usernames)
        self.moderator = None

    # --- helpers -------------------------------------------------------------------------------

    @staticmethod
    def fees_balance(code: str) -> Decimal:
        row = LedgerAccount.objects.filter(code=f"fees:{code}").first()
        return row.balance if row else Decimal(0)

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a refused call must leave untouched (all-zero accounts don't count)."""
        accounts = list(
            LedgerAccount.objects.filter(
                Q(pk__gt=self.floor[LedgerAccount]) | Q(kind__in=[Kind.FEES, Kind.WORLD])
            )
            .exclude(debits_pending=0, debits_posted=0, credits_pending=0, credits_posted=0)
            .order_by("pk")
            .values_list(
                "pk", "debits_pending", "debits_posted", "credits_pending", "credits_posted"
            )
        )
        offers = list(
            Offer.objects.filter(pk__gt=self.floor[Offer])
            .order_by("pk")
            .values_list("pk", "amount", "available", "is_active", "is_deleted")
        )
        trades = list(
            Trade.objects.filter(pk__gt=self.floor[Trade])
            .order_by("pk")
            .values_list("pk", "state", "escrow_hold_id", "paid_at", "closed_at")
        )
        withdrawals = list(
            Withdrawal.objects.filter(pk__gt=self.floor[Withdrawal])
            .order_by("pk")
            .values_list("pk", "status", "hold_id")
        )
        counts = tuple(
            m.objects.count()
            for m in (Transfer, Settlement, EscrowEvent, Deposit, Withdrawal, Offer, Trade)
        )
        return accounts, offers, trades, withdrawals, counts

    def attempt(self, what: str, call: Any, expected: type[ApplicationError] | None) -> Any:
        """Run a service call; the model said it works (expected None) or raises `expected`."""
        before = self.snapshot()
        refusal: ApplicationError | None = None
        try:
            result = call()
        except ApplicationError as exc:  # anything else is a failure and propagates
            refusal, result = exc, None
        if refusal is None:
            assert expected is None, f"{what}: expected {expected.__name__}, but it succeeded"
            return result
        assert expected is not None, f"{what}: refused unexpectedly: {refusal!r}"
        assert type(refusal) is expected, f"{what}: expected {expected.__name__}, got {refusal!r}"
        assert self.snapshot() == before, f"{what}: refused ({refusal!r}) but changed state"
        return None

    def user_idx(self, data: st.DataObject) -> int:
        return data.draw(st.sampled_from(range(len(self.users))))

    def valid_amount(self, data: st.DataObject, asset: str, top: Decimal) -> Decimal:
        """A positive amount up to about `top`, with random low digits at the asset's precision."""
        prec = self.precision[asset]
        coarse = round_down(top * data.draw(st.integers(0, 10000)) / 10000, prec)
        return coarse + quantum(prec) * data.draw(st.integers(1, 9999))

    def pick_trade(self, data: st.DataObject, states: set[str]) -> TradeModel:
        """Mostly a trade in one of `states` (so the machine makes progress), sometimes any."""
        fitting = [t for t in self.trades.values() if t.state in states]
        pool = fitting if fitting and chance(data, 4, 5) else list(self.trades.values())
        return data.draw(st.sampled_from(pool))

    def actor_for(self, trade: TradeModel, role: str) -> int:
        if role == BUYER:
            return trade.buyer
        if role == SELLER:
            return trade.seller
        return next(i for i in range(len(self.users)) if i not in (trade.buyer, trade.seller))

    @staticmethod
    def expect_move(trade: TradeModel, to: str, role: str) -> type[ApplicationError] | None:
        """The error _escrow_transition should raise before any guard, or None: someone not in
        the trade gets a 404; a move this role can never make is a 403 whatever the state; a
        move not allowed from this state is a 409; a move allowed to others now is a 403."""
        if role == STRANGER:
            return NotFound
        if role not in set().union(*(r for (_, dest), r in SPEC.items() if dest == to)):
            return PermissionDenied
        roles = SPEC.get((trade.state, to))
        if roles is None:
            return InvalidTransition
        if role not in roles:
            return PermissionDenied
        return None

    def value_eur(
        self, offer: OfferModel, qty: Decimal, fiat_total: Decimal, *, rounded: bool = True
    ) -> Decimal:
        """A trade's size for the KYC limits: its fiat amount in EUR, else at the EUR index."""
        if offer.fiat == "EUR":
            return fiat_total
        price = self.index.get((offer.asset, "EUR")) or self.index.get((offer.asset, "USD"))
        if price is None:
            return fiat_total
        with localcontext(prec=80):  # exact, like the NUMERIC product in the volume query
            value = qty * price
        return value.quantize(Decimal("0.01")) if rounded else value

    def limit_refusal(
        self, taker: int, offer: OfferModel, qty: Decimal, fiat_total: Decimal
    ) -> type[ApplicationError] | None:
        """Over a party's per-trade or 30-day limit: the taker's is a 400, the maker's a 409.
        Cancelled and expired trades don't count towards the 30-day volume."""
        value = self.value_eur(offer, qty, fiat_total)
        for user in (taker, offer.maker):
            limits = kyc_limits(self.tiers[user])
            with localcontext(prec=80):
                volume = sum(
                    (
                        t.value_eur
                        for t in self.trades.values()
                        if user in (t.buyer, t.seller) and t.state not in RESTOCKED
                    ),
                    Decimal(0),
                ).quantize(Decimal("0.01"))
            if value > limits.per_trade or volume + value > limits.per_30_days:
                return ValidationFailed if user == taker else Conflict
        return None

    def fee(self, amount: Decimal, *, is_maker: bool, asset: str) -> Decimal:
        # Rounded down, but never below the asset's smallest unit while the rate isn't zero.
        rate = django_settings.MAKER_FEE_RATE if is_maker else django_settings.TAKER_FEE_RATE
        fee = round_down(amount * rate, self.precision[asset])
        if rate > 0 and amount > 0:
            fee = max(fee, Decimal(1).scaleb(-self.precision[asset]))
        return fee

    def settle(self, trade: TradeModel) -> None:
        """What the Celery task does: execute the trade's pending settlement, then model it."""
        settlement = Settlement.objects.get(trade_id=trade.pk)
        assert settlement.status == Settlement.Status.PENDING
        # A refused settlement only counts an attempt (it stays pending until the last): insist
        # that it worked.
        settled = escrow.settlement_execute(settlement_id=settlement.pk)
        assert settled == 1, f"settlement of trade {trade.pk} ({trade.state}) failed"
        asset, final = trade.asset, SETTLING[trade.state]
        if final == S.COMPLETED:
            self.model.posted[trade.seller, asset] -= trade.hold
            self.model.credit(trade.buyer, asset, trade.amount - trade.buyer_fee)
            self.model.fees[asset] += trade.seller_fee + trade.buyer_fee
        elif final == S.REFUNDED:
            self.model.available[trade.seller, asset] += trade.hold
        else:
            share = trade.share or Decimal(0)
            self.model.available[trade.seller, asset] += trade.hold - share
            self.model.posted[trade.seller, asset] -= share
            self.model.credit(trade.buyer, asset, share)
        trade.state = final
        # A redelivered message (Celery is at-least-once) must not settle twice. Only checked when
        # nothing else is pending: with batch_size=1 and this one done, settlement_execute claims
        # one *other* pending settlement (it fills the batch with any pending row).
        if not Settlement.objects.filter(status=Settlement.Status.PENDING).exists():
            before = self.snapshot()
            assert escrow.settlement_execute(settlement_id=settlement.pk) == 0
            assert self.snapshot() == before, "re-running a done settlement changed state"

    # --- rules ---------------------------------------------------------------------------------

    @initialize(n=st.integers(3, 4), data=st.data())
    def make_users(self, n: int, data: st.DataObject) -> None:
        """3-4 traders and a moderator; most traders start with some of most assets."""
        self.users = [UserFactory(username=f"rsm{self.serial}-u{i}") for i in range(n)]
        mod = UserFactory(username=f"rsm{self.serial}-mod", is_staff=True)
        mod.user_permissions.add(Permission.objects.get(codename="decide_trade"))
        self.moderator = type(mod).objects.get(pk=mod.pk)  # fresh permission cache
        # KYC tiers bound each trade and each 30-day volume (EUR); mostly the verified tiers.
        self.tiers = [int(weighted(data, {"2": 6, "1": 2, "0": 1})) for _ in range(n)]
        for user, tier in zip(self.users, self.tiers, strict=True):
            profile_for(user)
            Profile.objects.filter(user=user).update(kyc_tier=tier)
        for user in range(n):
            for asset in ASSETS:
                if chance(data, 4, 5):
                    amount = self.valid_amount(data, asset, DEPOSIT_MAX[asset])
                    ledger.deposit_credit(
                        user=self.users[user],
                        asset_code=asset,
                        amount=amount,
                        reference="rsm",
                        actor=None,
                    )
                    self.model.credit(user, asset, amount)

    @rule(data=st.data())
    def deposit(self, data: st.DataObject) -> None:
        user, asset = self.user_idx(data), data.draw(st.sampled_from(ASSETS))
        prec = self.precision[asset]
        kind = weighted(data, {"ok": 6, "over_precise": 1, "zero": 1, "negative": 1})
        amount = self.valid_amount(data, asset, DEPOSIT_MAX[asset])
        if kind == "over_precise":
            amount += Decimal(data.draw(st.integers(1, 9))).scaleb(-(prec + 1))
        elif kind == "zero":
            amount = Decimal(0).quantize(quantum(prec))
        elif kind == "negative":
            amount = -amount
        value = format(amount, "f") if data.draw(st.booleans()) else amount
        deposit = self.attempt(
            f"deposit {value} {asset} to u{user}",
            lambda: ledger.deposit_credit(
                user=self.users[user], asset_code=asset, amount=value, reference="rsm", actor=None
            ),
            None if kind == "ok" else ValidationFailed,
        )
        if deposit is not None:
            assert deposit.status == Deposit.Status.CREDITED
            assert deposit.amount == amount
            self.model.credit(user, asset, amount)

    @rule(data=st.data())
    def create_offer(self, data: st.DataObject) -> None:
        maker, side = self.user_idx(data), data.draw(st.sampled_from(["sell", "buy"]))
        holds = [a for a in ASSETS if self.model.available[maker, a] > 0]
        if side == "sell" and holds and chance(data, 5, 6):
            asset = data.draw(st.sampled_from(holds))  # mostly what the maker has
        else:
            asset = data.draw(st.sampled_from(ASSETS))
        fiat = data.draw(st.sampled_from(FIATS))
        prec = self.precision[asset]
        problems: list[str] = []
        price_type = weighted(data, {"fixed": 4, "floating": 1})
        price = margin = None
        if price_type == "fixed":
            low, high = PRICE_BAND[asset]
            price = round_down(low + (high - low) * data.draw(st.integers(0, 10**6)) / 10**6, 4)
            effective = price
        else:
            margin = Decimal(data.draw(st.integers(-500, 500))).scaleb(-2)
            base = self.index.get((asset, fiat))
            if base is None:
                problems.append("price_type")
                effective = Decimal(0)
            else:
                effective = round_half_up(base * (1 + margin / Decimal(100)), FIAT_PRECISION)
        held = self.model.available[maker, asset]
        if side == "sell" and held > 0 and chance(data, 5, 6):
            amount = pct_of(held, percent(data, 110), prec)
        else:
            amount = self.valid_amount(data, asset, DEPOSIT_MAX[asset])
        if amount <= 0:
            problems.append("amount")
        elif side == "sell" and amount > held:
            problems.append("amount")  # a sell offer can't offer more than the maker holds
        min_fiat = Decimal(data.draw(st.integers(1, 500)))
        max_fiat = min_fiat + Decimal(
            data.draw(st.sampled_from([100000, 20000, 5000, 1000, 0, 100000, 50000, 20000, -1]))
        )
        if max_fiat < min_fiat:
            problems.append("max_fiat")
        window = data.draw(st.sampled_from([30, 5, 180, 60, 15, 120, 45, 90, 4, 181]))
        if not 5 <= window <= 180:
            problems.append("payment_window_minutes")
        methods = data.draw(st.lists(st.sampled_from(METHODS), min_size=1, max_size=3, unique=True))
        offer = self.attempt(
            f"u{maker} {side}s {amount} {asset} for {fiat} ({price_type}), problems {problems}",
            lambda: market.offer_create(
                maker=self.users[maker],
                side=side,
                asset=asset,
                fiat=fiat,
                price_type=price_type,
                price=price,
                margin_percent=margin,
                amount=format(amount, "f"),
                min_fiat=str(min_fiat),
                max_fiat=str(max_fiat),
                payment_methods=methods,
                payment_window_minutes=window,
            ),
            ValidationFailed if problems else None,
        )
        if offer is None:
            return
        assert offer.amount == offer.available == amount
        self.offers[offer.pk] = OfferModel(
            pk=offer.pk,
            maker=maker,
            side=side,
            asset=asset,
            fiat=fiat,
            price=effective,
            amount=amount,
            available=amount,
            min_fiat=min_fiat,
            max_fiat=max_fiat,
            methods=methods,
        )

    @precondition(lambda self: self.offers)
    @rule(data=st.data())
    def take(self, data: st.DataObject) -> None:
        offer = data.draw(st.sampled_from(list(self.offers.values())))
        others = [i for i in range(len(self.users)) if i != offer.maker]
        taker = data.draw(st.sampled_from(others)) if chance(data, 5, 6) else offer.maker
        prec = self.precision[offer.asset]
        how = weighted(data, {"fits": 6, "share": 2, "fiat": 1})
        if how == "fits":  # within the offer's limits and stock, so it mostly goes through
            low = round_down(offer.min_fiat / offer.price, prec) + quantum(prec)
            high = min(offer.available, round_down(offer.max_fiat / offer.price, prec))
            qty = low + pct_of(max(high - low, Decimal(0)), percent(data, 100), prec)
        else:  # a share of what is left, up to a bit more than that
            qty = pct_of(offer.available, percent(data, 110), prec)
        fiat_total = round_half_up(qty * offer.price, FIAT_PRECISION)
        if how == "fiat":  # anywhere around the limits
            cents = data.draw(st.integers(int(offer.min_fiat * 90), int(offer.max_fiat * 105)))
            fiat_total = Decimal(cents).scaleb(-2)
        by_fiat = how == "fiat" or data.draw(st.booleans())
        kwargs: dict[str, Any] = (
            {"fiat_amount": format(fiat_total, "f")} if by_fiat else {"amount": format(qty, "f")}
        )
        method = data.draw(
            st.sampled_from([None, None, None, *offer.methods, *offer.methods, *METHODS])
        )
        expected: type[ApplicationError] | None = None
        seller = offer.maker if offer.side == "sell" else taker
        # The checks in offer_take's order.
        if taker == offer.maker:
            expected = ValidationFailed
        elif offer.closed:
            expected = Conflict  # closed like a paused offer
        elif (qty if not by_fiat else fiat_total) <= 0:
            expected = ValidationFailed
        else:
            if by_fiat:
                qty = round_down(fiat_total / offer.price, self.display[offer.asset])
            else:
                fiat_total = round_half_up(qty * offer.price, FIAT_PRECISION)
            if qty <= 0 or not offer.min_fiat <= fiat_total <= offer.max_fiat:
                expected = ValidationFailed
            elif qty > offer.available:
                expected = Conflict
            elif method is not None and method not in offer.methods:
                expected = ValidationFailed
            elif limit := self.limit_refusal(taker, offer, qty, fiat_total):
                expected = limit
            elif self.model.available[seller, offer.asset] < qty + self.fee(
                qty, is_maker=seller == offer.maker, asset=offer.asset
            ):
                expected = InsufficientFunds
        trade = self.attempt(
            f"u{taker} takes offer {offer.pk} ({offer.side} {offer.available} {offer.asset}) "
            f"with {kwargs} via {method}",
            lambda: escrow_services.trade_open(
                offer_id=offer.pk, taker=self.users[taker], payment_method=method, **kwargs
            ),
            expected,
        )
        if trade is None:
            return
        buyer = offer.maker if offer.side == "buy" else taker
        assert (trade.amount, trade.fiat_amount, trade.price) == (qty, fiat_total, offer.price)
        assert (trade.seller_id, trade.buyer_id) == (self.users[seller].pk, self.users[buyer].pk)
        assert trade.seller_fee == self.fee(qty, is_maker=seller == offer.maker, asset=offer.asset)
        assert trade.buyer_fee == self.fee(qty, is_maker=buyer == offer.maker, asset=offer.asset)
        assert trade.state == S.FUNDED
        model = TradeModel(
            pk=trade.pk,
            offer=offer.pk,
            buyer=buyer,
            seller=seller,
            asset=offer.asset,
            amount=qty,
            seller_fee=trade.seller_fee,
            buyer_fee=trade.buyer_fee,
            value_eur=self.value_eur(offer, qty, fiat_total, rounded=False),
        )
        self.trades[trade.pk] = model
        offer.available -= qty
        # The take that leaves less than the minimum closes the offer in its transaction.
        offer.closed = round_half_up(offer.available * offer.price, FIAT_PRECISION) < offer.min_fiat
        self.model.available[seller, offer.asset] -= model.hold

    # Hypothesis picks among the enabled rules evenly; these second names make taking and moving
    # trades along about twice as likely as the other rules.

    @precondition(lambda self: self.offers)
    @rule(data=st.data())
    def take_another(self, data: st.DataObject) -> None:
        self.take(data)

    @precondition(lambda self: any(t.state in OPEN for t in self.trades.values()))
    @rule(data=st.data())
    def advance_another(self, data: st.DataObject) -> None:
        self.advance(data)

    # Each escrow move is a helper (the model's prediction, the call, the model's update) that
    # its own rule drives with random choices, and `advance` drives along the usual path.

    def do_mark_paid(self, trade: TradeModel, role: str) -> None:
        expected = self.expect_move(trade, S.PAID, role)
        if expected is None and trade.overdue:
            expected = InvalidTransition  # the payment window has ended
        done = self.attempt(
            f"{role} marks trade {trade.pk} ({trade.state}) paid",
            lambda: escrow.trade_mark_paid(
                trade_id=trade.pk, actor=self.users[self.actor_for(trade, role)]
            ),
            expected,
        )
        if done is not None:
            trade.state = S.PAID

    def do_release(self, trade: TradeModel, role: str, *, settle_now: bool) -> None:
        done = self.attempt(
            f"{role} releases trade {trade.pk} ({trade.state})",
            lambda: escrow.escrow_release(
                trade_id=trade.pk, actor=self.users[self.actor_for(trade, role)]
            ),
            self.expect_move(trade, S.RELEASING, role),
        )
        if done is not None:
            trade.state = S.RELEASING
            if settle_now:  # else the `settle_pending` rule picks it up later
                self.settle(trade)

    def do_cancel(self, trade: TradeModel, role: str) -> None:
        if role == MODERATOR:

            def call() -> Trade:
                return escrow._escrow_transition(
                    trade_id=trade.pk, to=S.CANCELLED, actor=self.moderator, as_moderator=True
                )
        else:

            def call() -> Trade:
                return escrow.trade_cancel(
                    trade_id=trade.pk, actor=self.users[self.actor_for(trade, role)]
                )

        done = self.attempt(
            f"{role} cancels trade {trade.pk} ({trade.state})",
            call,
            self.expect_move(trade, S.CANCELLED, role),
        )
        if done is not None:
            trade.state = S.CANCELLED
            self.offers[trade.offer].available += trade.amount
            self.model.available[trade.seller, trade.asset] += trade.hold

    def do_expire(self, trade: TradeModel, *, move_deadline: bool) -> None:
        if move_deadline:
            Trade.objects.filter(pk=trade.pk).update(
                payment_deadline=timezone.now() - timedelta(seconds=1)
            )
            trade.overdue = True
        expected = self.expect_move(trade, S.EXPIRED, SYSTEM)
        if expected is None and not trade.overdue:
            expected = InvalidTransition  # the payment window is still open
        done = self.attempt(
            f"expire trade {trade.pk} ({trade.state}, overdue={trade.overdue})",
            lambda: escrow.escrow_expire(trade_id=trade.pk),
            expected,
        )
        if done is not None:
            trade.state = S.EXPIRED
            self.offers[trade.offer].available += trade.amount
            self.model.available[trade.seller, trade.asset] += trade.hold

    def do_dispute(self, trade: TradeModel, role: str, *, backdate: bool) -> None:
        if trade.state == S.PAID and not trade.dispute_open and backdate:
            Trade.objects.filter(pk=trade.pk).update(
                paid_at=timezone.now() - django_settings.DISPUTE_DELAY - timedelta(seconds=1)
            )
            trade.dispute_open = True
        expected = self.expect_move(trade, S.DISPUTED, role)
        if expected is None and trade.state == S.PAID and not trade.dispute_open:
            expected = Conflict  # too early: the dispute delay after payment hasn't passed
        done = self.attempt(
            f"{role} disputes trade {trade.pk} ({trade.state})",
            lambda: escrow.trade_dispute(
                trade_id=trade.pk, actor=self.users[self.actor_for(trade, role)]
            ),
            expected,
        )
        if done is not None:
            trade.state = S.DISPUTED

    def do_decide(
        self, trade: TradeModel, to: str, role: str, share_pct: int, *, settle_now: bool
    ) -> None:
        share = None
        if to == S.SPLITTING:
            share = pct_of(trade.amount, share_pct, self.precision[trade.asset])
        if role == MODERATOR:
            actor, expected = self.moderator, self.expect_move(trade, to, MODERATOR)
        else:  # a party posing as a moderator
            actor, expected = self.users[self.actor_for(trade, role)], PermissionDenied
        done = self.attempt(
            f"{role} decides trade {trade.pk} ({trade.state}) -> {to} share {share}",
            lambda: escrow._escrow_transition(
                trade_id=trade.pk,
                to=to,
                actor=actor,
                as_moderator=True,
                reason="rsm decision",
                split_buyer_amount=share,
            ),
            expected,
        )
        if done is not None:
            trade.state, trade.share = to, share
            if settle_now:
                self.settle(trade)

    @precondition(lambda self: self.trades)
    @rule(data=st.data())
    def mark_paid(self, data: st.DataObject) -> None:
        trade = self.pick_trade(data, {S.FUNDED})
        self.do_mark_paid(trade, weighted(data, {BUYER: 4, SELLER: 1, STRANGER: 1}))

    @precondition(lambda self: self.trades)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        trade = self.pick_trade(data, {S.PAID})
        role = weighted(data, {SELLER: 4, BUYER: 1, STRANGER: 1})
        self.do_release(trade, role, settle_now=chance(data, 3, 4))

    @precondition(lambda self: self.trades)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        trade = self.pick_trade(data, {S.FUNDED})
        self.do_cancel(trade, weighted(data, {BUYER: 4, SELLER: 1, STRANGER: 1, MODERATOR: 1}))

    @precondition(lambda self: self.trades)
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        trade = self.pick_trade(data, {S.FUNDED})
        self.do_expire(trade, move_deadline=chance(data, 4, 5))

    @precondition(lambda self: self.trades)
    @rule(data=st.data())
    def dispute(self, data: st.DataObject) -> None:
        trade = self.pick_trade(data, {S.FUNDED, S.PAID})
        role = weighted(data, {BUYER: 3, SELLER: 2, STRANGER: 1})
        self.do_dispute(trade, role, backdate=data.draw(st.booleans()))

    @precondition(lambda self: self.trades)
    @rule(data=st.data())
    def decide(self, data: st.DataObject) -> None:
        trade = self.pick_trade(data, {S.DISPUTED})
        to = data.draw(st.sampled_from([S.RELEASING, S.REFUNDING, S.SPLITTING]))
        role = weighted(data, {MODERATOR: 5, BUYER: 1, SELLER: 1})
        self.do_decide(trade, to, role, percent(data, 100), settle_now=chance(data, 3, 4))

    @precondition(lambda self: any(t.state in OPEN for t in self.trades.values()))
    @rule(data=st.data())
    def advance(self, data: st.DataObject) -> None:
        """Move an open trade one step along a path the parties would take (hypothesis turns
        random subsets of rules off in each example, so this keeps trades moving anyway)."""
        trade = data.draw(st.sampled_from([t for t in self.trades.values() if t.state in OPEN]))
        if trade.state == S.FUNDED:
            step = weighted(data, {"pay": 4, "cancel": 1, "expire": 1, "dispute": 2})
            if step == "pay":
                self.do_mark_paid(trade, BUYER)
            elif step == "cancel":
                self.do_cancel(trade, BUYER)
            elif step == "expire":
                self.do_expire(trade, move_deadline=True)
            else:
                self.do_dispute(trade, BUYER, backdate=False)
        elif trade.state == S.PAID:
            if chance(data, 2, 3):
                self.do_release(trade, SELLER, settle_now=chance(data, 3, 4))
            else:
                self.do_dispute(trade, data.draw(st.sampled_from([BUYER, SELLER])), backdate=True)
        elif trade.state == S.DISPUTED:
            to = data.draw(st.sampled_from([S.RELEASING, S.REFUNDING, S.SPLITTING]))
            self.do_decide(trade, to, MODERATOR, percent(data, 100), settle_now=chance(data, 1, 2))
        else:
            self.settle(trade)

    @precondition(lambda self: any(t.state in SETTLING for t in self.trades.values()))
    @rule()
    def settle_pending(self) -> None:
        for trade in self.trades.values():
            if trade.state in SETTLING:
                self.settle(trade)

    @rule(data=st.data())
    def withdraw(self, data: st.DataObject) -> None:
        user, asset = self.user_idx(data), data.draw(st.sampled_from(ASSETS))
        prec = self.precision[asset]
        held = self.model.available[user, asset]
        if held > 0 and chance(data, 3, 4):
            amount = pct_of(held, percent(data, 120), prec)
        else:
            amount = self.valid_amount(data, asset, DEPOSIT_MAX[asset])
        over_precise = chance(data, 1, 10)
        if over_precise:
            amount += Decimal(1).scaleb(-(prec + 1))
        address = data.draw(st.sampled_from(["bc1-rsm-test-address", "0xRSM_dest:01", "no!"]))
        if amount <= 0 or over_precise or address == "no!":
            expected: type[ApplicationError] | None = ValidationFailed
        elif amount > held:
            expected = InsufficientFunds
        else:
            expected = None
        withdrawal = self.attempt(
            f"u{user} withdraws {amount} {asset} (holds {held}) to {address!r}",
            lambda: ledger.withdrawal_request(
                user=self.users[user], asset_code=asset, amount=format(amount, "f"), address=address
            ),
            expected,
        )
        if withdrawal is None:
            return
        self.model.available[user, asset] -= amount
        model = WithdrawalModel(pk=withdrawal.pk, user=user, asset=asset, amount=amount)
        self.withdrawals[withdrawal.pk] = model
        if chance(data, 2, 3):
            self.finish(model, confirm=data.draw(st.booleans()))

    @precondition(lambda self: self.withdrawals)
    @rule(data=st.data())
    def finish_withdrawal(self, data: st.DataObject) -> None:
        waiting = [w for w in self.withdrawals.values() if w.status == Withdrawal.Status.REQUESTED]
        pool = waiting if waiting and chance(data, 3, 4) else list(self.withdrawals.values())
        model = data.draw(st.sampled_from(pool))
        self.finish(model, confirm=data.draw(st.booleans()))

    def finish(self, model: WithdrawalModel, *, confirm: bool) -> None:
        expected = None if model.status == Withdrawal.Status.REQUESTED else InvalidTransition
        if confirm:

            def call() -> Withdrawal:
                return ledger.withdrawal_confirm(
                    withdrawal_id=model.pk, txid=f"tx{model.pk}", actor=self.moderator
                )
        else:

            def call() -> Withdrawal:
                return ledger.withdrawal_reject(
                    withdrawal_id=model.pk, reason="rsm", actor=self.moderator
                )

        done = self.attempt(
            f"{'confirm' if confirm else 'reject'} withdrawal {model.pk} ({model.status})",
            call,
            expected,
        )
        if done is None:
            return
        if confirm:
            model.status = Withdrawal.Status.COMPLETED
            self.model.posted[model.user, model.asset] -= model.amount
        else:
            model.status = Withdrawal.Status.FAILED
            self.model.available[model.user, model.asset] += model.amount
        assert done.status == model.status

    @rule()
    def seal(self) -> None:
        ledger.ledger_seal_pending()
        assert not Transfer.objects.filter(seq__isnull=True).exists()

    # --- invariants (after every step) ---------------------------------------------------------

    @invariant()
    def every_asset_sums_to_zero(self) -> None:
        sums = LedgerAccount.objects.values("asset_id").annotate(
            posted=Sum(F("credits_posted") - F("debits_posted")),
            pending=Sum(F("credits_pending") - F("debits_pending")),
        )
        for row in sums:
            assert row["posted"] == 0, f"asset {row['asset_id']}: posted sums to {row['posted']}"
            assert row["pending"] == 0, f"asset {row['asset_id']}: pending sums to {row['pending']}"

    @invariant()
    def nothing_but_the_world_is_overdrawn(self) -> None:
        overdrawn = list(
            LedgerAccount.objects.exclude(kind=Kind.WORLD)
            .filter(debits_posted__gt=F("credits_posted") - F("debits_pending"))
            .values_list("code", flat=True)
        )
        assert not overdrawn, f"overdrawn: {overdrawn}"

    @invariant()
    def balances_match_the_model(self) -> None:
        if not self.users:
            return
        ids = {u.pk: i for i, u in enumerate(self.users)}
        stored = {
            (ids[a.user_id], a.asset.code): a
            for a in LedgerAccount.objects.filter(
                kind=Kind.USER, user_id__in=list(ids)
            ).select_related("asset")
        }
        for i in range(len(self.users)):
            for asset in ASSETS:
                account = stored.get((i, asset))
                available = account.available if account else Decimal(0)
                balance = account.balance if account else Decimal(0)
                assert available == self.model.available[i, asset], (
                    f"u{i} {asset}: available {available}, model {self.model.available[i, asset]}"
                )
                assert balance == self.model.posted[i, asset], (
                    f"u{i} {asset}: balance {balance}, model {self.model.posted[i, asset]}"
                )
        for asset in ASSETS:
            earned = self.fees_balance(asset) - self.fees_at_start[asset]
            assert earned == self.model.fees[asset], f"fees {asset}: {earned}"

    @invariant()
    def offer_stock_matches_its_trades(self) -> None:
        if not self.offers:
            return
        taken: dict[int, Decimal] = defaultdict(Decimal)
        for offer_id, state, amount in Trade.objects.filter(
            offer_id__in=list(self.offers)
        ).values_list("offer_id", "state", "amount"):
            if state not in RESTOCKED:
                taken[offer_id] += amount
        for offer in Offer.objects.filter(pk__in=list(self.offers)):
            model = self.offers[offer.pk]
            assert offer.amount == model.amount
            assert offer.available == model.available, (
                f"offer {offer.pk}: available {offer.available}, model {model.available}"
            )
            assert offer.available == offer.amount - taken[offer.pk], (
                f"offer {offer.pk}: available {offer.available}, amount {offer.amount}, "
                f"in trades {taken[offer.pk]}"
            )
            assert 0 <= offer.available <= offer.amount

    @invariant()
    def escrow_matches_trade_state(self) -> None:
        if not self.trades:
            return
        trades = Trade.objects.filter(pk__in=list(self.trades)).select_related(
            "escrow_hold", "escrow_hold__debit_account", "escrow_hold__credit_account"
        )
        holds = [t.escrow_hold_id for t in trades]
        resolution = {t.pending_id: t for t in Transfer.objects.filter(pending_id__in=holds)}
        paid_out: dict[int, dict[str, list[Transfer]]] = defaultdict(lambda: defaultdict(list))
        for transfer in Transfer.objects.filter(
            reference__in=list(self.trades), kind__in=["trade_payout", "trade_fee"]
        ).select_related("credit_account"):
            paid_out[transfer.trade_id][transfer.kind].append(transfer)
        settlements = {
            s.trade_id: s for s in Settlement.objects.filter(trade_id__in=list(self.trades))
        }
        for trade in trades:
            model = self.trades[trade.pk]
            where = f"trade {trade.pk} ({trade.state})"
            assert trade.state == model.state, f"{where}: model says {model.state}"
            hold = trade.escrow_hold
            assert hold is not None, f"{where}: no escrow hold"
            assert hold.flags == Flags.PENDING, where
            assert hold.kind == "escrow_hold", where
            assert hold.amount == model.hold, f"{where}: hold {hold.amount} != {model.hold}"
            assert hold.debit_account.user_id == trade.seller_id, where
            escrow_account = hold.credit_account
            assert escrow_account.code == f"escrow:trade:{trade.pk}", where
            resolved = resolution.get(hold.pk)
            payouts = paid_out[trade.pk]["trade_payout"]
            fees = paid_out[trade.pk]["trade_fee"]
            settlement = settlements.get(trade.pk)
            if trade.state in OPEN:
                assert resolved is None, f"{where}: hold already resolved by {resolved}"
                assert escrow_account.credits_pending == hold.amount, where
                assert escrow_account.credits_posted == escrow_account.debits_posted == 0, where
                assert not payouts, f"{where}: paid out before settlement"
                assert not fees, f"{where}: fees taken before settlement"
                if trade.state in SETTLING:
                    assert settlement is not None, f"{where}: no settlement queued"
                    assert settlement.status == Settlement.Status.PENDING, where
                    assert settlement.kind == SETTLEMENT_KIND[trade.state], where
                    assert settlement.buyer_amount == model.share, where
                else:
                    assert settlement is None, f"{where}: settlement {settlement}"
                continue
            # closed: the hold is resolved once and the escrow account is empty
            assert resolved is not None, f"{where}: hold still unresolved"
            assert escrow_account.credits_pending == 0, where
            assert escrow_account.balance == 0, f"{where}: escrow keeps {escrow_account.balance}"
            if trade.state in (S.CANCELLED, S.EXPIRED):
                assert settlement is None, where
            else:
                assert settlement is not None, where
                assert settlement.status == Settlement.Status.DONE, where
            share = model.share or Decimal(0)
            if trade.state in VOIDED or (trade.state == S.SPLIT and share == 0):
                assert resolved.flags == Flags.VOID_PENDING, f"{where}: {resolved}"
                assert resolved.amount == hold.amount, where
                assert not payouts, f"{where}: paid out on a void"
                assert not fees, f"{where}: fees taken on a void"
            elif trade.state == S.COMPLETED:
                assert resolved.flags == Flags.POST_PENDING, f"{where}: {resolved}"
                assert resolved.amount == hold.amount, where
                assert [(p.credit_account.user_id, p.amount) for p in payouts] == [
                    (trade.buyer_id, trade.amount - trade.buyer_fee)
                ], f"{where}: payouts {payouts}"
                fee = trade.seller_fee + trade.buyer_fee
                assert [f.amount for f in fees] == ([fee] if fee > 0 else []), where
            else:
                assert trade.state == S.SPLIT, where
                assert resolved.flags == Flags.POST_PENDING, f"{where}: {resolved}"
                assert resolved.amount == share, f"{where}: posted {resolved.amount} != {share}"
                assert [(p.credit_account.user_id, p.amount) for p in payouts] == [
                    (trade.buyer_id, share)
                ], f"{where}: payouts {payouts}"
                assert not fees, where

    def teardown(self) -> None:
        # Leave no pending settlement to the next example (examples share the database).
        for trade in self.trades.values():
            if trade.state in SETTLING:
                self.settle(trade)
        ledger.ledger_seal_pending()
        report = verify_ledger()
        assert report.ok, report.errors


@pytest.mark.django_db
# The model follows money, not the anti-abuse rules (their own tests cover those): dust trades
# are part of what it explores.
@override_settings(MIN_TRADE_EUR=Decimal(0))
def test_random_sequences_keep_the_ledger_and_escrow_consistent(refdata: None) -> None:
    require_postgres()
    run_state_machine_as_test(
        MarketplaceMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            database=None,  # don't write .hypothesis/ into the work tree
            suppress_health_check=[
                HealthCheck.function_scoped_fixture,
                HealthCheck.too_slow,
                HealthCheck.filter_too_much,
            ],
        ),
    )
