"""Races on one loan at the liquidation line, on real PostgreSQL with real threads released by a
barrier: a repayment against a liquidation (called directly, and through the set-based LTV
check), a top-up against a liquidation, and repayments against each other. Each round exactly
one of them takes effect; the loser gets a clear domain error or does nothing; every balance is
the one that single outcome gives, to the unit; and the ledger verifies.

Each round makes its own loan: 1 ETH borrowed by a fresh borrower against 6000 USDT, funded 0.6
and 0.4 by two fresh lenders at the reference prices (ETH 3000 EUR, USDT 0.92 EUR), then ETH
moves to 5000 EUR: LTV = 1.0146 ETH owed x 5000 / (6000 x 0.92) = 0.919, past the 0.83 line.
Liquidated the same day (no interest accrued), each lender takes USDT worth their principal
plus 5 %, rounded down to the micro-USDT: 0.6 x 1.05 x 5000 / 0.92 = 3423.913043 and
0.4 x 1.05 x 5000 / 0.92 = 2282.608695; the borrower keeps 6000 - 5706.521738 = 293.478262.
Repaid the same day, the lenders get exactly their principal back and the borrower all of the
collateral.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from accounts.tests.factories import UserFactory
from common.errors import ApplicationError, Conflict, InvalidTransition
from conftest import require_postgres
from escrow.tests.test_concurrency import run_at_once
from ledger import services as ledger
from ledger.models import LedgerAccount, Transfer
from ledger.replay import verify_ledger
from lending import services
from lending.models import Loan, LoanEvent
from lending.tests.helpers import bal, move_price, request_example
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 8
CRASH_PRICE = "5000"  # ETH in EUR: the loan's LTV 0.919, past the liquidation line
LIQUIDATED = {  # what each party ends with, by hand (see the module's docstring)
    "big": Decimal("3423.913043"),
    "small": Decimal("2282.608695"),
    "borrower": Decimal("293.478262"),
}
_serial = itertools.count(1)


@pytest.fixture(autouse=True)
def _pg(refdata: None) -> None:
    require_postgres()


@dataclass
class Round:
    loan: Loan
    borrower: Any
    big: Any  # lent 0.6 ETH
    small: Any  # lent 0.4 ETH


def loan_at_the_line() -> Round:
    """A fresh 1 ETH loan (6000 USDT collateral, lenders 0.6 + 0.4), then ETH at 5000 EUR."""
    n = next(_serial)
    move_price("ETH", "3000")
    borrower = UserFactory(username=f"race{n}-borrower")
    big = UserFactory(username=f"race{n}-big")
    small = UserFactory(username=f"race{n}-small")
    fund(borrower, "USDT", "7000")  # 6000 pledged, 1000 left for a top-up
    fund(big, "ETH", "0.6")
    fund(small, "ETH", "0.4")
    request = request_example(borrower)
    services.loan_request_fund(request_id=request.pk, lender=big, amount="0.6")
    services.loan_request_fund(request_id=request.pk, lender=small, amount="0.4")
    loan = Loan.objects.get(pk=request.pk)
    assert loan.state == "active"
    move_price("ETH", CRASH_PRICE)
    return Round(loan, borrower, big, small)


def outcome(result: object) -> str:
    if isinstance(result, ApplicationError):
        return f"{type(result).__name__}:{result.code}"
    if isinstance(result, Exception):
        return f"CRASH:{type(result).__name__}:{result}"
    return "ok"


def assert_repaid(r: Round) -> None:
    r.loan.refresh_from_db()
    assert (r.loan.state, r.loan.collateral_amount, r.loan.shortfall) == ("repaid", 0, 0)
    # the lenders have their principal back (no day passed: no interest), nothing in USDT
    assert (bal(r.big, "ETH"), bal(r.small, "ETH")) == (Decimal("0.6"), Decimal("0.4"))
    assert (bal(r.big, "USDT"), bal(r.small, "USDT")) == (0, 0)
    # the borrower paid back the 1 ETH and has every unit of the collateral back
    assert (bal(r.borrower, "ETH"), bal(r.borrower, "USDT")) == (0, Decimal("7000"))
    kinds = Counter(Transfer.objects.filter(reference=r.loan.pk).values_list("kind", flat=True))
    assert kinds["loan_liquidation"] == 0, kinds
    assert set(r.loan.installments.values_list("status", flat=True)) == {"closed"}
    _assert_one_closing_event(r, "repaid")


def assert_liquidated(r: Round, *, topped_up: bool = False) -> None:
    r.loan.refresh_from_db()
    assert (r.loan.state, r.loan.collateral_amount, r.loan.shortfall) == ("liquidated", 0, 0)
    assert bal(r.big, "USDT") == LIQUIDATED["big"]
    assert bal(r.small, "USDT") == LIQUIDATED["small"]
    assert (bal(r.big, "ETH"), bal(r.small, "ETH")) == (0, 0)
    # the borrower keeps the borrowed ETH and the rest of the collateral (and the USDT a
    # refused top-up left in the wallet)
    assert bal(r.borrower, "ETH") == 1
    assert bal(r.borrower, "USDT") == LIQUIDATED["borrower"] + (0 if topped_up else 1000)
    kinds = Counter(Transfer.objects.filter(reference=r.loan.pk).values_list("kind", flat=True))
    assert kinds["loan_liquidation"] == 2, kinds
    assert set(r.loan.installments.values_list("status", flat=True)) == {"closed"}
    _assert_one_closing_event(r, "liquidated")


def _assert_one_closing_event(r: Round, state: str) -> None:
    closing = LoanEvent.objects.filter(
        request_id=r.loan.pk, subject="loan", new_state__in=("repaid", "liquidated")
    ).exclude(old_state__in=("repaid", "liquidated"))
    assert list(closing.values_list("new_state", flat=True)) == [state]
    collateral = LedgerAccount.objects.get(code=f"loan:collateral:{r.loan.pk}")
    assert (collateral.balance, collateral.debits_pending) == (0, 0)


def assert_ledger_verifies() -> None:
    ledger.ledger_seal_pending()
    report = verify_ledger()
    assert report.ok, report.errors[:10]


def race(calls: list[Callable[[], object]]) -> list[str]:
    results = run_at_once(calls)
    outcomes = [outcome(x) for x in results]
    assert not [o for o in outcomes if o.startswith("CRASH")], outcomes
    return outcomes


def test_repayment_racing_a_liquidation_exactly_one_wins() -> None:
    winners: Counter[str] = Counter()
    for _ in range(ROUNDS):
        # given a loan at the liquidation line whose borrower can pay it off
        r = loan_at_the_line()

        # when the borrower repays while the liquidation runs
        repay, liquidate = race(
            [
                lambda r=r: services.loan_repay_early(loan_id=r.loan.pk, actor=r.borrower),
                lambda r=r: services.loan_liquidate(loan_id=r.loan.pk, reason="race"),
            ]
        )

        # then exactly one of them took effect, and the other was told why it could not
        assert sorted([repay, liquidate]) == ["InvalidTransition:invalid_transition", "ok"], (
            repay,
            liquidate,
        )
        if repay == "ok":
            assert_repaid(r)
            winners["repay"] += 1
        else:
            assert_liquidated(r)
            winners["liquidation"] += 1
    assert_ledger_verifies()
    print(f"\n[races] repay vs loan_liquidate over {ROUNDS} rounds: {dict(winners)}")


def test_repayment_racing_the_ltv_check_exactly_one_wins() -> None:
    winners: Counter[str] = Counter()
    for _ in range(ROUNDS):
        r = loan_at_the_line()
        checks: list[dict[str, int]] = []

        def check(checks: list[dict[str, int]] = checks) -> None:
            checks.append(services.loans_check_ltv())

        repay, _ = race(
            [lambda r=r: services.loan_repay_early(loan_id=r.loan.pk, actor=r.borrower), check]
        )

        # the check never fails: a loan repaid under it is left alone (logged, not liquidated)
        (result,) = checks
        assert repay in ("ok", "InvalidTransition:invalid_transition"), repay
        if repay == "ok":
            assert result["liquidated"] == 0, result
            assert_repaid(r)
            winners["repay"] += 1
        else:
            assert result["liquidated"] == 1, result
            assert_liquidated(r)
            winners["liquidation"] += 1
    assert_ledger_verifies()
    print(f"\n[races] repay vs loans_check_ltv over {ROUNDS} rounds: {dict(winners)}")


def test_top_up_racing_a_liquidation_exactly_one_wins() -> None:
    # 1000 USDT more makes 7000: LTV 1.0146 x 5000 / (7000 x 0.92) = 0.788, below the line
    winners: Counter[str] = Counter()
    for _ in range(ROUNDS):
        r = loan_at_the_line()

        top_up, liquidate = race(
            [
                lambda r=r: services.loan_add_collateral(
                    loan_id=r.loan.pk, actor=r.borrower, amount="1000"
                ),
                lambda r=r: services.loan_liquidate(loan_id=r.loan.pk, reason="race"),
            ]
        )

        if top_up == "ok":
            # the liquidation saw the topped-up collateral and refused: below the line now
            assert liquidate == "Conflict:not_liquidatable", liquidate
            r.loan.refresh_from_db()
            assert (r.loan.state, r.loan.collateral_amount) == ("active", Decimal("7000"))
            assert bal(r.borrower, "USDT") == 0
            assert (bal(r.big, "USDT"), bal(r.small, "USDT")) == (0, 0)
            assert not Transfer.objects.filter(reference=r.loan.pk, kind="loan_liquidation")
            collateral = LedgerAccount.objects.get(code=f"loan:collateral:{r.loan.pk}")
            assert collateral.balance == Decimal("7000")
            winners["top-up"] += 1
        else:
            # liquidated first: the top-up is refused and takes nothing from the wallet
            assert (top_up, liquidate) == ("InvalidTransition:invalid_transition", "ok")
            assert_liquidated(r)
            winners["liquidation"] += 1
    assert_ledger_verifies()
    print(f"\n[races] top-up vs loan_liquidate over {ROUNDS} rounds: {dict(winners)}")


def test_repayments_racing_each_other_pay_once() -> None:
    for _ in range(ROUNDS // 2):
        # given a loan (at the line or not makes no difference to a repayment)
        r = loan_at_the_line()
        fund(r.borrower, "ETH", "1")  # enough for a second payoff, if one were wrongly taken

        # when the borrower's repayment arrives four times at once (a double click, a retry)
        outcomes = race(
            [
                lambda r=r: services.loan_repay_early(loan_id=r.loan.pk, actor=r.borrower)
                for _ in range(4)
            ]
        )

        # then one pays, three are told the loan is repaid, the lenders are paid once
        assert Counter(outcomes) == {"ok": 1, "InvalidTransition:invalid_transition": 3}
        r.loan.refresh_from_db()
        assert r.loan.state == "repaid"
        assert (bal(r.big, "ETH"), bal(r.small, "ETH")) == (Decimal("0.6"), Decimal("0.4"))
        assert (bal(r.borrower, "ETH"), bal(r.borrower, "USDT")) == (1, Decimal("7000"))
        payouts = Transfer.objects.filter(reference=r.loan.pk, kind="loan_installment")
        assert sum(payouts.values_list("amount", flat=True)) == 1
    assert_ledger_verifies()


def test_the_loser_of_each_race_gets_a_domain_error() -> None:
    # The losers' errors, one after the other (no race needed): what the API would answer.
    r = loan_at_the_line()
    services.loan_repay_early(loan_id=r.loan.pk, actor=r.borrower)
    with pytest.raises(InvalidTransition) as caught:
        services.loan_liquidate(loan_id=r.loan.pk)
    assert caught.value.fields == {"state": ["repaid"]}
    r = loan_at_the_line()
    services.loan_add_collateral(loan_id=r.loan.pk, actor=r.borrower, amount="1000")
    with pytest.raises(Conflict) as refused:
        services.loan_liquidate(loan_id=r.loan.pk)
    assert refused.value.code == "not_liquidatable"
