"""The issue's example, exactly: 1 ETH at 5 % over 6 months, monthly amortized, USDT collateral,
three lenders with 0.5, 0.3 and 0.2 ETH, six installments collected under a moving clock."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command

from ledger import services as ledger
from ledger.models import Transfer
from lending import services
from lending.models import Installment, Loan, LoanEvent, LoanRequest
from lending.tests.helpers import at, bal, lenders, request_example
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db

# The annuity by hand: r = 0.05 / 12, payment = r / (1 - (1 + r)^-6) = 0.16910564402798858...
# for 1 ETH, so 6 payments - 1 = 0.0146338641679315060... of interest; each month's interest is
# the outstanding principal times r rounded down to the wei, which loses 3 wei over the six.
TOTAL_INTEREST = Decimal("0.014633864167931503")


def test_schedule_of_the_example_by_hand():
    from django.utils import timezone

    rows = services.loan_schedule(principal=Decimal(1), annual_rate=Decimal(5), term_months=6,
                                  plan="amortized", precision=18, start=timezone.now())  # fmt: skip
    assert len(rows) == 6
    assert sum(r.principal for r in rows) == Decimal(1)
    assert sum(r.interest for r in rows) == TOTAL_INTEREST
    # month 1: interest on the whole ether, 1 * 0.05 / 12, rounded down to the wei
    assert rows[0].interest == Decimal("0.004166666666666666")
    # equal payments but the last, which absorbs the rounding (a few wei at most)
    payments = {r.total for r in rows[:-1]}
    assert len(payments) == 1
    assert abs(rows[-1].total - payments.pop()) < Decimal("1e-15")
    bullet = services.loan_schedule(principal=Decimal(1), annual_rate=Decimal(5), term_months=6,
                                    plan="bullet", precision=18, start=timezone.now())  # fmt: skip
    assert [(r.n, r.principal, r.interest) for r in bullet] == [(6, Decimal(1), Decimal("0.025"))]


def test_the_example_end_to_end(alice, monkeypatch):

    # given a borrower with the collateral, and a little ETH for the interest
    fund(alice, "USDT", "6000")
    fund(alice, "ETH", "0.1")
    request = request_example(alice)
    assert bal(alice, "USDT") == 0  # the collateral is held
    a, b, c = lenders("0.5", "0.3", "0.2")

    # when three lenders fund 0.5, 0.3 and 0.2
    services.loan_request_fund(request_id=request.pk, lender=a, amount="0.5")
    services.loan_request_fund(request_id=request.pk, lender=b, amount="0.3")
    assert LoanRequest.objects.get(pk=request.pk).state == "open"
    services.loan_request_fund(request_id=request.pk, lender=c, amount="0.2")

    # then the loan is active, the borrower has the ether, the schedule is fixed
    request.refresh_from_db()
    loan = Loan.objects.get(pk=request.pk)
    assert (request.state, loan.state, loan.principal) == ("active", "active", Decimal(1))
    assert bal(alice, "ETH") == Decimal("1.1")
    assert [bal(x, "ETH") for x in (a, b, c)] == [0, 0, 0]
    rows = list(loan.installments.order_by("n"))
    assert sum(r.interest for r in rows) == TOTAL_INTEREST

    # when each installment is collected under a clock moved past its due date
    for row in rows:
        assert services.installments_collect_due() == 0 or row.n > 1  # nothing early
        at(monkeypatch, row.due_at + timedelta(minutes=1))
        assert services.installments_collect_due() == 1

    # then every lender has their principal plus their share of the interest, to the wei
    share_a = (TOTAL_INTEREST * Decimal("0.5")).quantize(Decimal("1e-18"), "ROUND_DOWN")
    share_b = (TOTAL_INTEREST * Decimal("0.3")).quantize(Decimal("1e-18"), "ROUND_DOWN")
    share_c = TOTAL_INTEREST - share_a - share_b
    assert bal(a, "ETH") == Decimal("0.5") + share_a
    assert bal(b, "ETH") == Decimal("0.3") + share_b
    assert bal(c, "ETH") == Decimal("0.2") + share_c
    assert bal(alice, "ETH") == Decimal("0.1") - TOTAL_INTEREST
    # the loan is repaid and the collateral is back
    loan.refresh_from_db()
    assert loan.state == "repaid"
    assert bal(alice, "USDT") == Decimal("6000")
    assert set(Installment.objects.filter(loan=loan).values_list("status", flat=True)) == {"paid"}
    assert Transfer.objects.filter(reference=loan.pk, kind="loan_installment").count() == 18
    assert list(
        LoanEvent.objects.filter(request_id=loan.pk).exclude(old_state=models_f("new_state"))
        .values_list("subject", "old_state", "new_state")
    ) == [("request", "", "open"), ("request", "open", "active"), ("loan", "", "active"),
          ("loan", "active", "repaid")]  # fmt: skip
    # and the ledger verifies
    ledger.ledger_seal_pending()
    call_command("verify_ledger", "--no-progress")


def models_f(name: str):
    from django.db.models import F

    return F(name)
