"""30 lenders racing for the last 0.1 ETH on real PostgreSQL with real threads: the request row
lock lets each see the others' funding, so the request is never overfunded."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from conftest import require_postgres
from escrow.tests.test_concurrency import outcome, run_at_once
from ledger import services as ledger
from ledger.models import Transfer
from ledger.replay import verify_ledger
from lending import services
from lending.models import Loan, LoanCommitment, LoanRequest
from lending.tests.helpers import bal, lenders, request_example
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db(transaction=True)


def test_thirty_lenders_racing_for_the_last_tenth_never_overfund(alice):
    require_postgres()
    # given a request of 1 ETH funded up to 0.9
    fund(alice, "USDT", "6000")
    request = request_example(alice)
    (first,) = lenders("0.9", prefix="first")
    services.loan_request_fund(request_id=request.pk, lender=first, amount="0.9")
    racers = lenders(*["0.01"] * 30, prefix="racer")

    # when 30 lenders each try to fund 0.01 of the last 0.1 at once
    results = run_at_once(
        [
            lambda user=user: services.loan_request_fund(
                request_id=request.pk, lender=user, amount="0.01"
            )
            for user in racers
        ]
    )

    # then exactly ten win, the rest are refused cleanly, and the loan activated once
    outcomes = Counter(outcome(r) for r in results)
    assert outcomes["ok"] == 10, outcomes
    assert not [o for o in outcomes if o.startswith("CRASH")], outcomes
    request.refresh_from_db()
    assert (request.state, request.funded) == ("active", Decimal(1))
    assert sum(LoanCommitment.objects.filter(request=request).values_list("amount", flat=True)) == 1
    assert Loan.objects.get(pk=request.pk).principal == Decimal(1)
    assert (
        LoanRequest.objects.get(pk=request.pk)
        .events.filter(new_state="active", subject="request")
        .count()
        == 1
    )
    # the losers got their holds back (none was taken), the borrower got exactly 1 ETH
    assert sorted(bal(u, "ETH") for u in racers) == [0] * 10 + [Decimal("0.01")] * 20
    assert bal(alice, "ETH") == Decimal(1)
    pending = Transfer.objects.filter(reference=request.pk, kind="loan_funding", flags="pending")
    assert pending.count() == 11
    ledger.ledger_seal_pending()
    assert verify_ledger().ok
