"""A lender who funds a request again adds to their one commitment: the old hold is released
and the whole held again, so their share stays one number and one hold."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledger.models import Transfer
from ledger.replay import verify_ledger
from ledger.services import ledger_seal_pending
from lending import services
from lending.models import Loan, LoanCommitment
from lending.tests.helpers import bal, lenders, request_example
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db


def test_funding_again_adds_to_the_commitment(alice):
    fund(alice, "USDT", "6000")
    request = request_example(alice)
    bob, carol = lenders("1", "1")
    services.loan_request_fund(request_id=request.pk, lender=bob, amount="0.4")
    # when bob adds 0.3
    again = services.loan_request_fund(request_id=request.pk, lender=bob, amount="0.3")
    # then one commitment of 0.7, one live hold of 0.7, 0.3 left in his wallet
    (only,) = LoanCommitment.objects.filter(request=request, lender=bob)
    assert (only.pk, only.amount, only.hold_seq) == (again.pk, Decimal("0.7"), 2)
    assert only.hold.amount == Decimal("0.7")
    assert bal(bob, "ETH") == Decimal("0.3")
    released = Transfer.objects.get(idempotency_key=f"loan:{request.pk}:fund:{only.pk}:2:release")
    assert (
        released.pending_id
        == Transfer.objects.get(idempotency_key=f"loan:{request.pk}:fund:{only.pk}").pk
    )
    # more than is left is still refused, and changes nothing
    with pytest.raises(Exception, match="left"):
        services.loan_request_fund(request_id=request.pk, lender=bob, amount="0.31")
    assert bal(bob, "ETH") == Decimal("0.3")
    # carol funds the rest: the loan activates with bob's share 0.7
    services.loan_request_fund(request_id=request.pk, lender=carol, amount="0.3")
    loan = Loan.objects.get(pk=request.pk)
    assert loan.principal == Decimal("1")
    assert bal(bob, "ETH") == Decimal("0.3")
    assert bal(alice, "ETH") == Decimal("1")
    shares = dict(LoanCommitment.objects.filter(request=request).values_list("lender", "amount"))
    assert shares == {bob.pk: Decimal("0.7"), carol.pk: Decimal("0.3")}
    ledger_seal_pending()
    assert verify_ledger().ok


def test_cancelling_releases_the_whole_topped_up_commitment(alice):
    fund(alice, "USDT", "6000")
    request = request_example(alice)
    (bob,) = lenders("1")
    services.loan_request_fund(request_id=request.pk, lender=bob, amount="0.2")
    services.loan_request_fund(request_id=request.pk, lender=bob, amount="0.2")
    assert bal(bob, "ETH") == Decimal("0.6")
    services.loan_request_cancel(request_id=request.pk, actor=alice)
    assert bal(bob, "ETH") == Decimal("1")
