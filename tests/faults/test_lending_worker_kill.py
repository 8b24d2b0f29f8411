"""Worker crash in an installment run: the Celery worker running `collect_installments` is
SIGKILLed in the middle of the run, again and again, and restarted; in the end every installment
is paid, none twice and none lost, and each lender holds exactly what the schedule owes them.

Two ways of killing, alternately:
- mid-installment, deterministically: this test holds the row lock of the ledger account of one
  lender of a loan a little way into the run (the last of its three lenders, that loan's alone),
  so the worker's transaction stops on it with the writes it made before (collecting one loan
  per transaction: that loan's first two lenders paid their share of an installment); the test
  sees the worker waiting on the lock in pg_stat_activity, SIGKILLs it, then lets go
  (PostgreSQL rolls the orphaned transaction back, never committing it);
- as soon as the worker made progress (as test_worker_crash.py does), and inside a transaction
  if it opens one within two seconds.

After every kill the next worker gets the task again, as beat would send it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from common.money import round_down
from conftest import wait_for
from ledger.models import LedgerAccount, Transfer
from lending import services
from lending.models import Installment, Loan, LoanCommitment
from lending.tasks import collect_installments
from marketplace.tests.factories import fund

from .conftest import assert_ledger_verifies, make_traders, wait_quietly

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]

LOANS = 30
BORROWERS = 3
KILLS = 6
SHARES = ("0.5", "0.3", "0.2")  # two lenders shared by every loan, then one of the loan's own


def _paid() -> int:
    return Installment.objects.filter(status=Installment.Status.PAID).count()


def _open_transactions() -> int:
    """Other sessions of this database inside a transaction right now (the worker's run)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
        )
        return cursor.fetchone()[0]


def _waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        # Polled inside this test's own transaction: without this, PostgreSQL would answer from
        # the snapshot of the activity it took at the transaction's first look.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def _wait(worker: Any, predicate: Any) -> None:
    try:
        wait_for(predicate, timeout=60, interval=0.01)
    except AssertionError:
        raise AssertionError(f"worker log:\n{worker.log_text()[-4000:]}") from None


def _make_loans() -> tuple[list[Any], list[Any], list[Loan]]:
    """LOANS loans of 1 ETH at 5 % over 6 months, USDT collateral, from BORROWERS borrowers;
    each funded 0.5 / 0.3 / 0.2 by the two shared lenders and one lender of its own (last, so
    it absorbs the rounding and its account locks that loan alone)."""
    users = [user for user, _ in make_traders("kill", BORROWERS + 2 + LOANS)]
    borrowers, shared, own = (
        users[:BORROWERS],
        users[BORROWERS : BORROWERS + 2],
        users[BORROWERS + 2 :],
    )
    per_borrower = LOANS // BORROWERS
    for borrower in borrowers:
        fund(borrower, "USDT", str(6000 * per_borrower))
        fund(borrower, "ETH", "1")  # the interest on top of the principal they get back
    fund(shared[0], "ETH", str(Decimal(SHARES[0]) * LOANS))
    fund(shared[1], "ETH", str(Decimal(SHARES[1]) * LOANS))
    loans = []
    for i in range(LOANS):
        fund(own[i], "ETH", SHARES[2])
        request = services.loan_request_create(
            borrower=borrowers[i % BORROWERS], asset="ETH", amount="1", annual_rate="5",
            term_months=6, plan="amortized", collateral_asset="USDT", collateral_amount="6000",
            funding_deadline=timezone.now() + timedelta(days=2),
        )  # fmt: skip
        for lender, share in zip((*shared, own[i]), SHARES, strict=True):
            services.loan_request_fund(request_id=request.pk, lender=lender, amount=share)
        loans.append(Loan.objects.get(pk=request.pk))
    assert {loan.state for loan in loans} == {"active"}
    return borrowers, shared, loans


def _all_due() -> None:
    """Every installment of every loan falls due: the due dates move into the past, in order
    (the worker is another process: a patched clock here would not reach it)."""
    now = timezone.now()
    for n in range(1, 7):
        Installment.objects.filter(n=n).update(due_at=now - timedelta(minutes=10 - n))


def _expected_receipts(loans: list[Loan]) -> dict[int, Decimal]:
    """What each lender must hold in the end: on every loan, their commitment plus their share
    of its scheduled interest rounded down, the last lender taking what rounding left."""
    expected: dict[int, Decimal] = defaultdict(Decimal)
    for loan in loans:
        interest = sum(loan.installments.values_list("interest", flat=True), Decimal(0))
        commitments = list(
            LoanCommitment.objects.filter(request_id=loan.pk)
            .order_by("pk")
            .values_list("lender_id", "amount")
        )
        given = Decimal(0)
        for i, (lender_id, amount) in enumerate(commitments):
            if i < len(commitments) - 1:
                share = round_down(interest * amount / loan.principal, 18)
                given += share
            else:
                share = interest - given
            expected[lender_id] += amount + share
    return expected


def _first_unpaid_loans() -> list[int]:
    return list(
        Installment.objects.filter(status__in=("due", "missed"))
        .values_list("loan_id", flat=True)
        .distinct()
        .order_by("loan_id")
    )


def test_installment_run_survives_repeated_sigkill_of_the_worker(refdata, fault_worker):
    # given 30 loans with all 6 installments due: 180 installments, 540 lender payments
    borrowers, _, loans = _make_loans()
    worker = fault_worker(concurrency=1)
    worker.prewarm(2)
    _all_due()
    total = Installment.objects.count()
    assert total == LOANS * 6
    assert _paid() == 0

    # when the worker running the collection is SIGKILLed mid-run, restarted, again and again
    progress, mid_transaction, held_by_lock = [], 0, 0
    for round_ in range(KILLS):
        worker.start()
        worker.prewarm(2)
        before = _paid()
        assert before < total, f"all paid after only {worker.kills} kills"
        if round_ % 2 == 0:
            # stop it on a loan a little way into what is left, after that loan's first two
            # lenders were paid their share of an installment, inside its transaction
            target = _first_unpaid_loans()[min(3, len(_first_unpaid_loans()) - 1)]
            own_lender = (
                LoanCommitment.objects.filter(request_id=target).order_by("pk").last().lender_id
            )
            with transaction.atomic():
                # (of=self: locking the joined asset row too would stop every transfer in ETH)
                LedgerAccount.objects.select_for_update(of=("self",)).get(
                    kind="user", user_id=own_lender, asset__code="ETH"
                )
                collect_installments.delay()
                _wait(worker, _waiting_on_a_lock)
                mid_transaction += _open_transactions() > 0
                held_by_lock += 1
                worker.kill()
            # the lock is let go only now: the orphaned transaction goes on, finds its
            # client gone and is rolled back
        else:
            collect_installments.delay()
            _wait(worker, lambda before=before: _paid() > before)
            # and, if it is still at work, once it is inside its next transaction
            mid_transaction += wait_quietly(_open_transactions, timeout=2)
            worker.kill()
        wait_for(lambda: _open_transactions() == 0, timeout=30)  # the orphan is gone
        progress.append(_paid())
    assert progress[-1] < total, "the kills came too late: nothing was left to interrupt"

    # then a worker left running, sent the task again as beat would, collects the rest
    worker.start()
    collect_installments.delay()
    wait_for(lambda: _paid() == total, timeout=120, interval=0.1)
    wait_for(lambda: not Loan.objects.exclude(state="repaid").exists(), timeout=30)

    # every installment paid, every loan repaid, every borrower's collateral back
    assert set(Installment.objects.values_list("status", flat=True)) == {"paid"}
    for borrower in borrowers:
        wallet = LedgerAccount.objects.get(kind="user", user=borrower, asset__code="USDT")
        assert wallet.available == 6000 * (LOANS // BORROWERS)
    # no installment collected twice, none lost: each lender holds exactly what the schedule
    # owes them, to the wei; and the loans paid out exactly principal plus interest
    # (each lender lent exactly what they had deposited, so what they hold is what came back)
    expected = _expected_receipts(loans)
    holds = {
        a.user_id: a.available
        for a in LedgerAccount.objects.filter(
            kind="user", asset__code="ETH", user_id__in=list(expected)
        )
    }
    assert holds == expected
    for loan in loans:
        owed = sum((i.principal + i.interest for i in loan.installments.all()), Decimal(0))
        paid_out = sum(
            Transfer.objects.filter(reference=loan.pk, kind="loan_installment").values_list(
                "amount", flat=True
            ),
            Decimal(0),
        )
        assert paid_out == owed, (loan.pk, paid_out, owed)
    # every transfer was posted once under its key
    assert not (
        Transfer.objects.values("idempotency_key").annotate(n=Count("id")).filter(n__gt=1).exists()
    )
    assert_ledger_verifies()
    print(
        f"\n[lending-worker-kill] {worker.kills} SIGKILLs ({mid_transaction} with a transaction "
        f"open, {held_by_lock} stopped mid-installment on a held lender account); installments "
        f"paid after each: {progress} of {total}"
    )
