"""The issue's example (lending/tests/test_example.py) collected by a real Celery worker process:
each installment's due date is moved into the past in the database (the worker is another
process, so a patched clock here would not reach it) and the beat task is sent to the worker."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from conftest import wait_for
from ledger import services as ledger
from ledger.models import Transfer
from ledger.tasks import seal_pending
from lending import services
from lending.models import Installment, Loan
from lending.tasks import collect_installments
from lending.tests.helpers import bal, lenders, request_example
from lending.tests.test_example import TOTAL_INTEREST
from marketplace.tests.factories import fund

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def _status(loan_id: int, n: int) -> str:
    return Installment.objects.values_list("status", flat=True).get(loan_id=loan_id, n=n)


def test_the_example_collected_by_the_worker(celery_worker_process, alice):
    # given the loan, funded by three lenders with 0.5, 0.3 and 0.2 ETH
    fund(alice, "USDT", "6000")
    fund(alice, "ETH", "0.1")
    request = request_example(alice)
    a, b, c = lenders("0.5", "0.3", "0.2")
    for lender, amount in ((a, "0.5"), (b, "0.3"), (c, "0.2")):
        services.loan_request_fund(request_id=request.pk, lender=lender, amount=amount)
    loan = Loan.objects.get(pk=request.pk)
    assert loan.state == "active"
    assert bal(alice, "USDT") == 0
    rows = list(loan.installments.order_by("n"))
    assert len(rows) == 6

    # when, for each installment in turn, its due date passes and beat's task runs on the worker
    for row in rows:
        Installment.objects.filter(pk=row.pk).update(due_at=timezone.now() - timedelta(minutes=1))
        collect_installments.delay()
        wait_for(lambda n=row.n: _status(loan.pk, n) == "paid")

    # then every lender has their principal plus their share of the interest, to the wei
    wait_for(lambda: Loan.objects.get(pk=loan.pk).state == "repaid")
    share_a = (TOTAL_INTEREST * Decimal("0.5")).quantize(Decimal("1e-18"), "ROUND_DOWN")
    share_b = (TOTAL_INTEREST * Decimal("0.3")).quantize(Decimal("1e-18"), "ROUND_DOWN")
    share_c = TOTAL_INTEREST - share_a - share_b
    assert bal(a, "ETH") == Decimal("0.5") + share_a
    assert bal(b, "ETH") == Decimal("0.3") + share_b
    assert bal(c, "ETH") == Decimal("0.2") + share_c
    assert bal(alice, "ETH") == Decimal("0.1") - TOTAL_INTEREST
    # the loan is repaid and the borrower's collateral is back
    assert bal(alice, "USDT") == Decimal("6000")
    assert set(Installment.objects.filter(loan=loan).values_list("status", flat=True)) == {"paid"}
    # each installment collected once: the service posts one transfer per lender, straight from
    # the borrower's wallet (no separate borrower debit), so 6 installments x 3 lenders
    wallet = ledger.account_for_user(user=alice, asset=loan.asset)
    payouts = Transfer.objects.filter(reference=loan.pk, kind="loan_installment")
    assert payouts.count() == 6 * 3
    assert set(payouts.values_list("debit_account_id", flat=True)) == {wallet.pk}
    assert sorted(payouts.values_list("idempotency_key", flat=True)) == sorted(
        f"loan:{loan.pk}:inst:{n}:lender:{lender.pk}" for n in range(1, 7) for lender in (a, b, c)
    )
    # and the worker seals the chain; verify_ledger passes
    seal_pending.delay()
    wait_for(lambda: not Transfer.objects.filter(seq__isnull=True).exists())
    call_command("verify_ledger", "--no-progress")
