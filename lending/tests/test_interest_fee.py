"""The platform's fee on interest (LENDING_INTEREST_FEE, snapshotted in Loan.interest_fee at
activation): of every interest amount a lender receives, round_down(share * fee) goes to the fee
account instead; the borrower pays exactly the schedule either way."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command

from ledger import services as ledger
from ledger.models import Asset, Transfer
from lending import services
from lending.models import Loan
from lending.tests.helpers import at, bal, lenders, request_example
from lending.tests.test_example import TOTAL_INTEREST
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db

WEI = Decimal("1e-18")

# The example's interest shares, by hand: after installment k a lender holds their share of the
# first k installments' interest rounded down to the wei (the last lender the rest), so their
# share of installment k is the difference; each of those is charged 10 % rounded down to the
# wei. Interest per installment (test_example's schedule): 0.004166666666666666,
# 0.003479420927661158, 0.002789311664743127, 0.002096326946562938, 0.001400454792056998,
# 0.000701683170240616. Cumulative shares of 0.5 / 0.3 / the rest after installment 1:
# 0.002083333333333333 / 0.001249999999999999 / 0.000833333333333334, and so on; the fees per
# lender over the six installments add up to (10 % of the whole share would be
# 0.000731693208396575 for the first: per-installment rounding keeps 4 wei more for the lender):
FEES = [
    Decimal("0.000731693208396571"),
    Decimal("0.000439015925037942"),
    Decimal("0.000292677283358627"),
]
SHARES = [  # each lender's whole share of TOTAL_INTEREST
    Decimal("0.007316932083965751"),
    Decimal("0.004390159250379450"),
    Decimal("0.002926772833586302"),
]


def _fee_balance() -> Decimal:
    account = ledger.account_fees(asset=Asset.objects.get(code="ETH"))
    account.refresh_from_db()
    return account.credits_posted - account.debits_posted


def _example_loan(borrower, fee: str | None, settings) -> tuple[Loan, list]:
    if fee is not None:
        settings.LENDING_INTEREST_FEE = Decimal(fee)
    fund(borrower, "USDT", "6000")
    fund(borrower, "ETH", "0.1")
    request = request_example(borrower)
    people = lenders("0.5", "0.3", "0.2")
    for lender, amount in zip(people, ("0.5", "0.3", "0.2"), strict=True):
        services.loan_request_fund(request_id=request.pk, lender=lender, amount=amount)
    return Loan.objects.get(pk=request.pk), people


def _verify() -> None:
    ledger.ledger_seal_pending()
    call_command("verify_ledger", "--no-progress")


@pytest.mark.parametrize("path", ["beat", "one loan"])
def test_the_example_with_a_ten_percent_fee(alice, settings, monkeypatch, path):
    # given the example activated while LENDING_INTEREST_FEE is 10 %
    assert sum(SHARES) == TOTAL_INTEREST
    loan, (a, b, c) = _example_loan(alice, "0.10", settings)
    assert loan.interest_fee == Decimal("0.1")
    settings.LENDING_INTEREST_FEE = Decimal(0)  # a later change does not touch this loan

    # when the six installments are collected, by the beat (set-based batches; the last one
    # through loan_collect, which returns the collateral) or loan by loan
    for row in loan.installments.order_by("n"):
        at(monkeypatch, row.due_at + timedelta(minutes=1))
        if path == "beat":
            assert services.installments_collect_due() == 1
        else:
            assert services.loan_collect(loan_id=loan.pk) == 1

    # then each lender has their principal plus their interest share less the fee, to the wei
    principal = [Decimal("0.5"), Decimal("0.3"), Decimal("0.2")]
    for lender, p, share, fee in zip((a, b, c), principal, SHARES, FEES, strict=True):
        assert bal(lender, "ETH") == p + share - fee
    # the fee account holds exactly the fees, and the loan says so
    loan.refresh_from_db()
    assert _fee_balance() == sum(FEES) == Decimal("0.001463386416793140")
    assert loan.fees == sum(FEES)
    # one fee transfer per installment, from the borrower's wallet
    fees = Transfer.objects.filter(reference=loan.pk, kind=Transfer.Kind.LOAN_FEE)
    assert fees.count() == 6
    assert {t.idempotency_key for t in fees} == {f"loan:{loan.pk}:inst:{n}:fee" for n in
                                                 range(1, 7)}  # fmt: skip
    # the borrower paid exactly the schedule: the fee came out of the lenders' interest
    assert bal(alice, "ETH") == Decimal("0.1") - TOTAL_INTEREST
    assert (loan.state, bal(alice, "USDT")) == ("repaid", Decimal(6000))
    _verify()


def test_early_repayment_with_a_fee(alice, settings, monkeypatch):
    # given the example at 10 %, nothing collected yet
    loan, (a, b, c) = _example_loan(alice, "0.10", settings)

    # when the borrower repays 45 days after activation
    at(monkeypatch, loan.activated_at + timedelta(days=45, hours=1))
    services.loan_repay_early(loan_id=loan.pk, actor=alice)

    # then, by hand: interest = 1 ETH * 5 % * 45 / 365 = 0.00616438356164383561... -> rounded down
    interest = Decimal("0.006164383561643835")
    shares = [Decimal("0.003082191780821917"),  # 0.5 of it, rounded down
              Decimal("0.001849315068493150"),  # 0.3 of it, rounded down
              Decimal("0.001232876712328768")]  # the rest  # fmt: skip
    assert sum(shares) == interest
    fees = [Decimal("0.000308219178082191"), Decimal("0.000184931506849315"),
            Decimal("0.000123287671232876")]  # 10 % of each, rounded down  # fmt: skip
    principal = [Decimal("0.5"), Decimal("0.3"), Decimal("0.2")]
    for lender, p, share, fee in zip((a, b, c), principal, shares, fees, strict=True):
        assert bal(lender, "ETH") == p + share - fee
    loan.refresh_from_db()
    assert loan.state == "repaid"
    assert loan.fees == _fee_balance() == sum(fees) == Decimal("0.000616438356164382")
    fee_transfer = Transfer.objects.get(reference=loan.pk, kind=Transfer.Kind.LOAN_FEE)
    assert fee_transfer.idempotency_key == f"loan:{loan.pk}:repay:fee"
    # the borrower paid principal plus interest, nothing more
    assert bal(alice, "ETH") == Decimal("0.1") - interest
    assert bal(alice, "USDT") == Decimal(6000)
    _verify()


def test_no_fee_changes_nothing(alice, settings, monkeypatch):
    # given the example with the default fee (0)
    loan, (a, b, c) = _example_loan(alice, None, settings)
    assert loan.interest_fee == 0

    # when the first installment is collected and the rest repaid early a month later
    first = loan.installments.get(n=1)
    at(monkeypatch, first.due_at + timedelta(minutes=1))
    assert services.installments_collect_due() == 1
    at(monkeypatch, first.due_at + timedelta(days=30, minutes=1))
    quote = services.loan_payoff_quote(Loan.objects.get(pk=loan.pk))
    services.loan_repay_early(loan_id=loan.pk, actor=alice)

    # then the lenders got every unit of it and the fee account nothing
    assert not Transfer.objects.filter(reference=loan.pk, kind=Transfer.Kind.LOAN_FEE).exists()
    loan.refresh_from_db()
    assert loan.fees == 0
    assert _fee_balance() == 0
    assert sum(bal(x, "ETH") for x in (a, b, c)) == Decimal(1) + first.interest + quote.interest
    assert bal(alice, "ETH") == Decimal("0.1") - first.interest - quote.interest
    _verify()
