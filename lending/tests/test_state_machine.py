"""A randomized, model-based test of lending (a hypothesis state machine) on PostgreSQL.

Random sequences of loan requests (some with zero or negative amounts, rates, terms or
collateral, some below the initial LTV, in ETH against USDT and in USDT against ETH, amortized
or bullet, some accepting a partial fill), cancellations by the borrower and by strangers,
funding by several lenders (parts, the rest, more than is left, twice, one's own request),
price moves up and down past the margin-call and liquidation lines (each followed by the LTV
check, as the price listener queues it), a clock that moves by days or weeks (prices refreshed
or left to go stale, then beat's sweeps: deadlines, installments, defaults, the LTV check),
early repayments, top-ups, borrowers spending what they borrowed (so installments are missed)
and moderators pausing liquidations, all through the real services.

Each call's outcome is checked against the rules it may break: a call that breaks none must
work; one that breaks some must raise one of their `ApplicationError`s (a bad field named in it)
and change nothing. After every step: every asset's ledger accounts sum to zero (posted and
pending), no account but the world's is overdrawn or negative, each request's holds match its
funding, each open loan's collateral account holds its collateral; every lender has received
from a loan at most their principal plus their share of the interest (the schedule's, plus
what accrues actual/365 for as long as the loan runs), plus the liquidation penalty on that
when it was liquidated; a liquidated borrower lost collateral worth at most what they still
owed plus the penalty, and got the rest back. At the end of every example the chain is sealed
and `verify_ledger()` must pass.

The clock is one patched `timezone.now` (the services and auto_now read it) that only moves
forward, across examples too: the database accumulates over the examples of the test (one
transaction), each example makes its own users, and beat's sweeps see earlier examples' loans
as well (the global sums cover them). on_commit callbacks never fire in this transaction, so no
Celery task is queued.
"""

from __future__ import annotations

import inspect
import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission
from django.db import transaction
from django.db.models import F, Q, Sum
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
from common.money import round_down
from conftest import require_postgres
from ledger import services as ledger
from ledger.models import Asset, LedgerAccount, Transfer
from ledger.replay import verify_ledger
from lending import services
from lending.models import Loan, LoanCommitment, LoanRequest
from marketplace.models import PriceIndex
from marketplace.services import price_index_set

PRECISION = {"ETH": 18, "USDT": 6}
REFERENCE = {"ETH": Decimal(3000), "USDT": Decimal("0.92")}  # EUR, as reference_data sets them
PAIRS = (("ETH", "USDT"), ("USDT", "ETH"))  # (borrowed, pledged)
AMOUNTS = {"ETH": ("0.1", "0.5", "1", "2"), "USDT": ("300", "1000", "2500")}
OPEN_LOAN = ("active", "late")

_serial = itertools.count(1)
# What the examples did, printed at the end (pytest -s): how often each call worked or why not,
# and in what states the loans ended.
SEEN: Counter[str] = Counter()


class Clock:
    """What timezone.now returns while the test runs; only ever moved forward."""

    now: datetime = timezone.now()


def chance(data: st.DataObject, num: int, den: int) -> bool:
    return data.draw(st.sampled_from(range(den))) < num


def unit(asset: str) -> Decimal:
    return Decimal(1).scaleb(-PRECISION[asset])


@dataclass
class RequestModel:
    pk: int
    borrower: int  # index into users
    asset: str
    collateral_asset: str
    amount: Decimal
    rate: Decimal
    term: int
    plan: str
    collateral: Decimal
    deadline: datetime
    allow_partial: bool
    min_fill: Decimal | None
    lenders: dict[int, Decimal] = field(default_factory=dict)  # user index -> commitment


@dataclass
class LiquidationSeen:
    asset_price: Decimal  # EUR per unit of the loan's asset when it was seen liquidated
    collateral_price: Decimal


class LendingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.serial = next(_serial)
        self.users: list[Any] = []
        self.borrowers: list[int] = []
        self.lenders: list[int] = []
        self.moderator: Any = None
        self.requests: dict[int, RequestModel] = {}
        self.liquidated: dict[int, LiquidationSeen] = {}
        self.fresh_until = Clock.now
        self.paused = False

    # --- helpers -----------------------------------------------------------------------------

    def tick(self, delta: timedelta) -> None:
        Clock.now = Clock.now + delta

    def refresh_prices(self, prices: dict[str, Decimal] | None = None) -> None:
        for code, price in (prices or self.prices()).items():
            price_index_set(asset_code=code, fiat_code="EUR", price=format(price, "f"))
        self.fresh_until = Clock.now + timedelta(seconds=django_settings.PRICE_MAX_AGE)

    def prices(self) -> dict[str, Decimal]:
        return dict(
            PriceIndex.objects.filter(fiat__code="EUR", asset__code__in=PRECISION).values_list(
                "asset__code", "price"
            )
        )

    def balance(self, user: int, asset: str) -> Decimal:
        from ledger.selectors import balance_available

        return balance_available(user=self.users[user], asset_code=asset)

    def snapshot(self) -> tuple[Any, ...]:
        """What a refused call must leave as it was."""
        ids = [u.pk for u in self.users]
        accounts = sorted(
            LedgerAccount.objects.filter(Q(user_id__in=ids) | Q(code__startswith="loan:"))
            .values_list("code", "debits_pending", "debits_posted", "credits_pending",
                         "credits_posted")
        )  # fmt: skip
        reqs = sorted(
            LoanRequest.objects.filter(pk__in=list(self.requests)).values_list(
                "pk", "state", "funded"
            )
        )
        loans = sorted(
            Loan.objects.filter(pk__in=list(self.requests)).values_list(
                "pk", "state", "collateral_amount"
            )
        )
        return accounts, reqs, loans, Transfer.objects.count(), LoanCommitment.objects.count()

    def attempt(self, call: Any, broken: dict[type[ApplicationError], str | None]) -> Any:
        """Run a call: with no rule broken it must work; otherwise it must raise the error of
        one of the broken rules (naming the field, when the rule is about one) and change
        nothing."""
        before = self.snapshot()
        error: ApplicationError | None = None
        try:
            # (no atomic block around it: the services' own are durable)
            result = call()
        except ApplicationError as exc:
            error = exc
        caller = inspect.stack()[1].function
        SEEN[f"{caller}: {type(error).__name__ if error else 'ok'}"] += 1
        if error is None:
            assert not broken, f"worked though it should not: {broken}"
            return result
        assert broken, f"refused though no rule was broken: {error!r} {error.fields}"
        matches = [k for k in broken if isinstance(error, k)]
        assert matches, f"{error!r} {error.fields}: expected one of {broken}"
        named = {broken[k] for k in matches}
        if None not in named:
            assert named & set(error.fields), f"{error!r}: fields {error.fields}, not {named}"
        assert self.snapshot() == before, f"{error!r} changed something"
        return error

    def open_requests(self) -> list[RequestModel]:
        states = dict(
            LoanRequest.objects.filter(pk__in=list(self.requests)).values_list("pk", "state")
        )
        return [r for r in self.requests.values() if states[r.pk] == "open"]

    def loans(self) -> dict[int, Loan]:
        return {
            loan.pk: loan
            for loan in Loan.objects.filter(pk__in=list(self.requests)).select_related(
                "asset", "collateral_asset"
            )
        }

    def beat(self) -> None:
        """Beat's lending sweeps, in the order a busy minute may run them."""
        services.loan_requests_sweep()
        services.installments_collect_due()
        services.loans_default_overdue()
        services.loans_check_ltv()

    def pick_request(self, data: st.DataObject) -> RequestModel:
        """Mostly one that became a loan, when there is one."""
        loans = sorted(Loan.objects.filter(pk__in=list(self.requests)).values_list("pk", flat=True))
        pool = loans if loans and chance(data, 4, 5) else sorted(self.requests)
        return self.requests[data.draw(st.sampled_from(pool))]

    # --- rules -------------------------------------------------------------------------------

    @initialize()
    def make_users(self) -> None:
        """Two borrowers and three lenders with money in both assets; a moderator."""
        self.tick(timedelta(hours=1))
        self.refresh_prices(REFERENCE)
        for i in range(5):
            user = UserFactory(username=f"lsm{self.serial}-u{i}")
            self.users.append(user)
            (self.borrowers if i < 2 else self.lenders).append(i)
            for code, amount in (("ETH", "6"), ("USDT", "20000")):
                ledger.deposit_credit(
                    user=user, asset_code=code, amount=amount, reference="lsm", actor=None
                )
        mod = UserFactory(username=f"lsm{self.serial}-mod", is_staff=True)
        mod.user_permissions.add(Permission.objects.get(codename="decide_trade"))
        self.moderator = type(mod).objects.get(pk=mod.pk)

    def create(self, data: st.DataObject, *, bad: str = "") -> RequestModel | None:
        """A request with valid terms, or with the one bad field `bad` names."""
        borrower = data.draw(st.sampled_from(self.borrowers))
        asset, coll = data.draw(st.sampled_from(PAIRS))
        amount = Decimal(data.draw(st.sampled_from(AMOUNTS[asset])))
        rate = Decimal(data.draw(st.sampled_from(["5", "12.5", "3"])))
        term = data.draw(st.sampled_from([1, 2, 3, 6, 12]))
        plan = data.draw(st.sampled_from(["amortized", "amortized", "bullet"]))
        # collateral as a multiple of what the initial LTV needs (below 1: refused)
        factor = Decimal(data.draw(st.sampled_from(["1.05", "1.2", "1.6", "3"])))
        if bad == "amount":
            amount = Decimal(data.draw(st.sampled_from(["0", "-1"])))
        elif bad == "annual_rate":
            rate = Decimal(data.draw(st.sampled_from(["0", "-2", "101"])))
        elif bad == "term_months":
            term = data.draw(st.sampled_from([0, -3, 25]))
        elif bad == "ltv":
            # (what it needs is estimated with simple interest, above the amortized schedule's:
            # 0.8 of it is below the line whatever the plan)
            factor = Decimal(data.draw(st.sampled_from(["0.5", "0.8"])))
        prices = self.prices()
        with localcontext() as ctx:
            ctx.prec = 50
            debt = amount * (1 + max(rate, Decimal(0)) * max(term, 0) / 1200)
            needed = debt * prices[asset] / prices[coll] / django_settings.LENDING_INITIAL_LTV
        collateral = round_down(needed * factor, PRECISION[coll])
        if bad == "collateral_amount":
            collateral = Decimal(data.draw(st.sampled_from(["0", "-10"])))
        partial = chance(data, 1, 3) and bad != "amount"
        min_fill = round_down(amount / 2, PRECISION[asset]) if partial else None
        deadline = Clock.now + timedelta(days=data.draw(st.integers(1, 5)), hours=1)

        broken: dict[type[ApplicationError], str | None] = {}
        if bad == "ltv":
            broken[ValidationFailed] = "collateral_amount"
        elif bad:
            broken[ValidationFailed] = bad
        elif Clock.now > self.fresh_until:
            broken[Conflict] = None  # a stale price: no loan can be valued now
        elif collateral > self.balance(borrower, coll):
            broken[InsufficientFunds] = "collateral_amount"
        if bad == "ltv" and Clock.now > self.fresh_until:
            broken = {Conflict: None}

        result = self.attempt(
            lambda: services.loan_request_create(
                borrower=self.users[borrower], asset=asset, amount=format(amount, "f"),
                annual_rate=format(rate, "f"), term_months=term, plan=plan,
                collateral_asset=coll, collateral_amount=format(collateral, "f"),
                funding_deadline=deadline, allow_partial=partial,
                min_fill=None if min_fill is None else format(min_fill, "f"),
            ),
            broken,
        )  # fmt: skip
        if not isinstance(result, LoanRequest):
            return None
        req = RequestModel(
            result.pk, borrower, asset, coll, amount, rate, term, plan, collateral, deadline,
            partial, min_fill,
        )  # fmt: skip
        self.requests[result.pk] = req
        return req

    @rule(data=st.data())
    def create_request(self, data: st.DataObject) -> None:
        """A request, one in three with bad input (zero or negative amount, rate, term or
        collateral; collateral below the initial LTV)."""
        bad = data.draw(
            st.sampled_from(["", "", "", "", "", "", "amount", "annual_rate", "term_months",
                             "collateral_amount", "ltv"])
        )  # fmt: skip
        self.create(data, bad=bad)

    @rule(data=st.data())
    def borrow_and_fund(self, data: st.DataObject) -> None:
        """A request funded at once by one to three lenders, in parts that add up."""
        req = self.create(data)
        if req is None:
            return
        count = data.draw(st.integers(1, 3))
        parts = [round_down(req.amount / count, PRECISION[req.asset])] * (count - 1)
        parts.append(req.amount - sum(parts, Decimal(0)))
        for lender, part in zip(self.lenders, parts, strict=False):
            if part > self.balance(lender, req.asset):
                return  # this lender can't afford it: the request stays open
            self.attempt(
                lambda lender=lender, part=part: services.loan_request_fund(
                    request_id=req.pk, lender=self.users[lender], amount=format(part, "f")
                ),
                {},
            )
            req.lenders[lender] = part
        assert Loan.objects.get(pk=req.pk).principal == req.amount

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def fund_request(self, data: st.DataObject) -> None:
        req = self.pick_request(data)
        row = LoanRequest.objects.get(pk=req.pk)
        lender = data.draw(st.sampled_from([*self.lenders, req.borrower]))
        left = row.amount - row.funded
        how = data.draw(st.sampled_from(["rest", "rest", "part", "part", "more", "zero"]))
        amount = {
            "rest": left,
            "part": round_down(left * data.draw(st.sampled_from([1, 2, 3])) / 4,
                               PRECISION[req.asset]),
            "more": left + unit(req.asset),
            "zero": Decimal(0),
        }[how]  # fmt: skip
        broken: dict[type[ApplicationError], str | None] = {}
        if amount <= 0:
            broken[ValidationFailed] = "amount"
        elif lender == req.borrower:
            broken[PermissionDenied] = "request"
        elif row.state != "open":
            broken[Conflict] = "state"
        elif Clock.now >= row.funding_deadline:
            broken[Conflict] = "funding_deadline"
        elif amount > left:
            broken[ValidationFailed] = "amount"
        elif amount > self.balance(lender, req.asset):
            broken[InsufficientFunds] = None
        result = self.attempt(
            lambda: services.loan_request_fund(
                request_id=req.pk, lender=self.users[lender], amount=format(amount, "f")
            ),
            broken,
        )
        if isinstance(result, LoanCommitment):
            # funding again adds to the lender's one commitment
            req.lenders[lender] = req.lenders.get(lender, Decimal(0)) + amount
            assert result.amount == req.lenders[lender]
            row.refresh_from_db()
            assert row.funded == sum(req.lenders.values())
            assert row.state == ("active" if row.funded == row.amount else "open")
            assert Loan.objects.filter(pk=req.pk).exists() == (row.state == "active")

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def cancel_request(self, data: st.DataObject) -> None:
        req = self.pick_request(data)
        actor = data.draw(st.sampled_from([req.borrower, req.borrower, *self.lenders]))
        state = LoanRequest.objects.values_list("state", flat=True).get(pk=req.pk)
        broken: dict[type[ApplicationError], str | None] = {}
        if actor != req.borrower:
            broken[PermissionDenied] = None
        elif state != "open":
            broken[InvalidTransition] = "state"
        result = self.attempt(
            lambda: services.loan_request_cancel(request_id=req.pk, actor=self.users[actor]),
            broken,
        )
        if isinstance(result, LoanRequest):
            assert result.state == "cancelled"

    @rule(data=st.data())
    def move_price(self, data: st.DataObject) -> None:
        """The index moves (ETH mostly; sometimes USDT de-pegs); the LTV check follows."""
        code = "ETH" if chance(data, 5, 6) else "USDT"
        factor = Decimal(
            data.draw(st.sampled_from(["0.5", "0.6", "0.8", "0.95", "1.05", "1.3", "1.6", "2"]))
        )
        prices = self.prices()
        low, high = REFERENCE[code] / 4, REFERENCE[code] * 4
        prices[code] = min(max(round(prices[code] * factor, 8), low), high)
        self.refresh_prices(prices)
        services.loans_check_ltv()

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def price_to_a_line(self, data: st.DataObject) -> None:
        """ETH moves so that one open loan's LTV lands just past the margin call, the
        liquidation line, or under water (collateral worth less than the debt)."""
        req = self.pick_request(data)
        loan = Loan.objects.filter(pk=req.pk, state__in=OPEN_LOAN).first()
        if loan is None:
            return
        target = Decimal(data.draw(st.sampled_from(["0.78", "0.85", "0.95", "1.3"])))
        debt = services.loan_scheduled_debt(loan)
        prices = self.prices()
        with localcontext() as ctx:
            ctx.prec = 50
            if req.asset == "ETH":  # ETH borrowed against USDT: ETH up
                eth = target * loan.collateral_amount * prices["USDT"] / debt
            else:  # USDT borrowed against ETH: ETH down
                eth = debt * prices["USDT"] / (target * loan.collateral_amount)
        prices["ETH"] = max(round(eth, 8), Decimal("0.01"))
        self.refresh_prices(prices)
        services.loans_check_ltv()

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def miss_an_installment(self, data: st.DataObject) -> None:
        """A borrower spends what they borrowed; the next installment falls due (late), then
        the grace period may run out (default, then liquidation), or a top-up cures it."""
        req = self.pick_request(data)
        loan = Loan.objects.filter(pk=req.pk, state="active").first()
        if loan is None:
            return
        self.drain(req.borrower, req.asset, Decimal(1))
        due = loan.installments.filter(status="due").order_by("n").first()
        assert due is not None
        if due.due_at > Clock.now:
            self.tick(due.due_at - Clock.now + timedelta(minutes=5))
        self.refresh_prices()
        self.beat()
        how = data.draw(st.sampled_from(["grace runs out", "top-up", "nothing"]))
        if how == "top-up":
            ledger.deposit_credit(user=self.users[req.borrower], asset_code=req.asset,
                                  amount=format(req.amount, "f"), reference="lsm", actor=None)  # fmt: skip
            self.tick(timedelta(hours=24))
        elif how == "grace runs out":
            self.tick(timedelta(hours=django_settings.LENDING_GRACE_HOURS + 1))
        else:
            return
        self.refresh_prices()
        self.beat()

    @rule(data=st.data())
    def advance_clock(self, data: st.DataObject) -> None:
        """Days or weeks pass (prices refreshed, or left to go stale); beat's sweeps run."""
        self.tick(timedelta(days=data.draw(st.sampled_from([1, 2, 4, 10, 31, 45])),
                            hours=data.draw(st.integers(0, 23))))  # fmt: skip
        if chance(data, 3, 4):
            self.refresh_prices()
        self.beat()

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def repay_early(self, data: st.DataObject) -> None:
        req = self.pick_request(data)
        actor = data.draw(st.sampled_from([req.borrower, req.borrower, *self.lenders]))
        loan = Loan.objects.filter(pk=req.pk).select_related("asset").first()
        broken: dict[type[ApplicationError], str | None] = {}
        if loan is None or (actor != req.borrower and actor not in req.lenders):
            broken[NotFound] = "loan"
        elif actor != req.borrower:
            broken[PermissionDenied] = None
        elif loan.state not in OPEN_LOAN:
            broken[InvalidTransition] = "state"
        elif services.loan_payoff_quote(loan).total > self.balance(actor, req.asset):
            broken[InsufficientFunds] = None
        result = self.attempt(
            lambda: services.loan_repay_early(loan_id=req.pk, actor=self.users[actor]), broken
        )
        if isinstance(result, Loan):
            assert result.state == "repaid"

    @precondition(lambda self: self.requests)
    @rule(data=st.data())
    def add_collateral(self, data: st.DataObject) -> None:
        req = self.pick_request(data)
        actor = data.draw(st.sampled_from([req.borrower, req.borrower, *self.lenders]))
        amount = round_down(
            req.collateral * Decimal(data.draw(st.sampled_from(["0.1", "0.5", "2", "0", "-1"]))),
            PRECISION[req.collateral_asset],
        )
        loan = Loan.objects.filter(pk=req.pk).first()
        broken: dict[type[ApplicationError], str | None] = {}
        if loan is None or (actor != req.borrower and actor not in req.lenders):
            broken[NotFound] = "loan"
        elif actor != req.borrower:
            broken[PermissionDenied] = None
        elif amount <= 0:
            broken[ValidationFailed] = "amount"
        elif loan.state not in OPEN_LOAN:
            broken[InvalidTransition] = "state"
        elif amount > self.balance(actor, req.collateral_asset):
            broken[InsufficientFunds] = None
        before = loan.collateral_amount if loan else None
        result = self.attempt(
            lambda: services.loan_add_collateral(
                loan_id=req.pk, actor=self.users[actor], amount=format(amount, "f")
            ),
            broken,
        )
        if isinstance(result, Loan):
            assert result.collateral_amount == before + amount

    def drain(self, user: int, code: str, part: Decimal) -> None:
        amount = round_down(self.balance(user, code) * part, PRECISION[code])
        if amount <= 0:
            return
        asset = Asset.objects.get(code=code)
        with transaction.atomic():
            ledger.transfer_post(
                idempotency_key=f"lsm:spend:{self.serial}:{next(_serial)}",
                debit=ledger.account_for_user(user=self.users[user], asset=asset),
                credit=ledger.account_world(asset=asset),
                amount=amount,
                kind=Transfer.Kind.WITHDRAWAL,
            )

    @rule(data=st.data())
    def spend(self, data: st.DataObject) -> None:
        """A borrower spends (withdraws) all or most of an asset: installments will be missed."""
        user = data.draw(st.sampled_from(self.borrowers))
        code = data.draw(st.sampled_from(sorted(PRECISION)))
        self.drain(user, code, Decimal(data.draw(st.sampled_from(["1", "0.9"]))))

    @rule(data=st.data())
    def top_up_wallet(self, data: st.DataObject) -> None:
        """Money arrives in a borrower's wallet (a deposit): the next run can collect."""
        user = data.draw(st.sampled_from(self.borrowers))
        code = data.draw(st.sampled_from(sorted(PRECISION)))
        amount = {"ETH": "3", "USDT": "5000"}[code]
        ledger.deposit_credit(
            user=self.users[user], asset_code=code, amount=amount, reference="lsm", actor=None
        )

    @rule(data=st.data())
    def pause_liquidations(self, data: st.DataObject) -> None:
        paused = chance(data, 1, 3)  # mostly: running again
        services.liquidations_set_paused(paused=paused, actor=self.moderator, reason="lsm")
        self.paused = paused

    # --- after every step --------------------------------------------------------------------

    @invariant()
    def every_asset_sums_to_zero_and_nothing_is_overdrawn(self) -> None:
        sums = LedgerAccount.objects.values("asset__code").annotate(
            posted=Sum(F("credits_posted") - F("debits_posted")),
            pending=Sum(F("credits_pending") - F("debits_pending")),
        )
        for row in sums:
            assert (row["posted"], row["pending"]) == (0, 0), row
        bad = LedgerAccount.objects.exclude(kind="world").filter(
            Q(debits_posted__gt=F("credits_posted") - F("debits_pending"))
            | Q(debits_pending__lt=0) | Q(credits_pending__lt=0)
        )  # fmt: skip
        assert not bad.exists(), list(bad.values_list("code", flat=True))

    @invariant()
    def holds_match_requests_and_loans(self) -> None:
        rows = LoanRequest.objects.filter(pk__in=list(self.requests)).select_related(
            "asset", "collateral_asset"
        )
        loans = self.loans()
        for row in rows:
            committed = sum(
                LoanCommitment.objects.filter(request=row).values_list("amount", flat=True),
                Decimal(0),
            )
            assert row.funded == committed, row
            funding = LedgerAccount.objects.filter(code=f"loan:funding:{row.pk}").first()
            coll = LedgerAccount.objects.get(code=f"loan:collateral:{row.pk}")
            held = (funding.credits_pending, funding.balance) if funding else (0, 0)
            if row.state == "open":
                # the lenders' parts and the collateral are held, nothing posted yet
                assert held == (row.funded, 0), (row, held)
                assert (coll.credits_pending, coll.balance) == (row.collateral_amount, 0), row
            elif row.state == "active":
                # posted and paid out to the borrower; the collateral is the loan's
                assert held == (0, 0), (row, held)
                loan = loans[row.pk]
                assert (coll.credits_pending, coll.balance) == (0, loan.collateral_amount), (
                    loan,
                    coll.balance,
                )
                if loan.state in ("repaid", "liquidated"):
                    assert loan.collateral_amount == 0, loan
            else:
                # cancelled or expired: every hold voided
                assert held == (0, 0), (row, held)
                assert (coll.credits_pending, coll.balance) == (0, 0), row

    @invariant()
    def lenders_and_borrowers_get_no_more_than_their_due(self) -> None:
        penalty = django_settings.LENDING_LIQUIDATION_PENALTY
        prices = self.prices()
        for loan in self.loans().values():
            req = self.requests[loan.pk]
            if loan.state == "liquidated" and loan.pk not in self.liquidated:
                # seen for the first time after the step that liquidated it: at these prices
                self.liquidated[loan.pk] = LiquidationSeen(prices[req.asset],
                                                           prices[req.collateral_asset])  # fmt: skip
            seen = self.liquidated.get(loan.pk)
            scheduled = sum(loan.installments.values_list("interest", flat=True), Decimal(0))
            end = loan.closed_at or Clock.now
            days = max((end - loan.activated_at).days, 0) + 1
            with localcontext() as ctx:
                ctx.prec = 60
                # the schedule's interest, plus actual/365 on the whole principal for as long as
                # the loan has run (a late loan repaid early pays interest to that day)
                interest = scheduled + loan.principal * loan.annual_rate / 100 * days / 365
                transfers = Transfer.objects.filter(reference=loan.pk)
                paid_in = Decimal(0)
                lenders = dict(
                    LoanCommitment.objects.filter(request_id=loan.pk).values_list(
                        "lender_id", "amount"
                    )
                )
                slack = 10 * unit(req.asset)
                for lender_id, committed in lenders.items():
                    share = committed + interest * committed / loan.principal
                    got = sum(
                        transfers.filter(
                            kind="loan_installment", credit_account__user_id=lender_id
                        ).values_list("amount", flat=True),
                        Decimal(0),
                    )
                    paid_in += got
                    liquidated = sum(
                        transfers.filter(
                            kind="loan_liquidation", credit_account__user_id=lender_id
                        ).values_list("amount", flat=True),
                        Decimal(0),
                    )
                    if liquidated:
                        assert seen is not None, f"loan {loan.pk}: liquidation payout, {loan}"
                        got += liquidated * seen.collateral_price / seen.asset_price
                        share *= 1 + penalty
                    assert got <= share + slack, (
                        f"loan {loan.pk} ({loan.state}): lender {lender_id} received {got}, "
                        f"more than {share}"
                    )
                if seen is not None:
                    taken = sum(
                        transfers.filter(kind="loan_liquidation").values_list("amount", flat=True),
                        Decimal(0),
                    )
                    owed = loan.principal + interest - paid_in
                    value = taken * seen.collateral_price / seen.asset_price
                    assert value <= owed * (1 + penalty) + slack, (
                        f"loan {loan.pk}: the borrower lost collateral worth {value}, more than "
                        f"{owed} owed plus the penalty"
                    )
                    assert loan.collateral_amount == 0

    def teardown(self) -> None:
        for state in Loan.objects.filter(pk__in=list(self.requests)).values_list(
            "state", flat=True
        ):
            SEEN[f"loan ended {state}"] += 1
        if self.paused and self.moderator is not None:
            services.liquidations_set_paused(paused=False, actor=self.moderator, reason="lsm")
        ledger.ledger_seal_pending()
        report = verify_ledger()
        assert report.ok, report.errors[:10]


@pytest.mark.django_db
def test_random_lending_sequences_keep_the_ledger_and_every_share_right(
    refdata: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_postgres()
    Clock.now = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: Clock.now)
    run_state_machine_as_test(
        LendingMachine,
        settings=settings(
            max_examples=20,
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
    print("\n[lending-state-machine] " + ", ".join(f"{k} {v}" for k, v in sorted(SEEN.items())))


# --- what the machine found --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_top_up_cures_a_missed_last_installment(
    alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lending.tests.helpers import at, bal, lenders, request_example
    from marketplace.tests.factories import fund

    # given a one-month bullet loan whose borrower spent the ETH and missed the payment
    fund(alice, "USDT", "6000")
    request = request_example(alice, term_months=1, plan="bullet")
    (lender,) = lenders("1")
    services.loan_request_fund(request_id=request.pk, lender=lender, amount="1")
    loan = Loan.objects.get(pk=request.pk)
    asset = Asset.objects.get(code="ETH")
    with transaction.atomic():
        ledger.transfer_post(idempotency_key="lsm:spent", kind=Transfer.Kind.WITHDRAWAL,
                             debit=ledger.account_for_user(user=alice, asset=asset),
                             credit=ledger.account_world(asset=asset), amount=Decimal(1))  # fmt: skip
    (only,) = loan.installments.all()
    at(monkeypatch, only.due_at + timedelta(minutes=1))
    services.installments_collect_due()
    assert Loan.objects.get(pk=loan.pk).state == "late"

    # when the borrower tops up within the grace period and beat collects
    at(monkeypatch, only.due_at + timedelta(hours=24))
    fund(alice, "ETH", "2")
    services.installments_collect_due()

    # then the loan is repaid: the lender has principal and interest, the collateral is back
    loan.refresh_from_db()
    assert loan.state == "repaid"
    assert bal(lender, "ETH") == 1 + only.interest
    assert bal(alice, "USDT") == 6000
