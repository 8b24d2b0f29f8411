"""Set-based installment collection (installments_collect_due): batches of loans, a constant
number of statements per batch, the same amounts and keys as loan_collect, short wallets left to
loan_collect (late), and every installment paid once however many workers run it."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts.tests.factories import UserFactory
from conftest import require_postgres
from escrow.tests.test_concurrency import outcome, run_at_once
from ledger import services as ledger
from ledger.models import Asset, Transfer
from ledger.replay import verify_ledger
from lending import services
from lending.models import Installment, Loan, LoanEvent
from lending.services import collection
from lending.tests.helpers import at, bal, lenders, request_example
from marketplace.tests.factories import fund

# Each loan's three commitments (ETH), cycled: uneven weights so the shares round differently.
SPLITS = [("0.5", "0.3", "0.2"), ("0.37", "0.41", "0.22"), ("0.1", "0.6", "0.3")]


def make_loans(count: int, prefix: str, *, pool: int = 4, extra: str = "0.05") -> tuple:
    """`count` loans of 1 ETH (the issue's example), each from its own borrower (USDT collateral,
    `extra` ETH besides the principal) and three lenders of a pool of `pool`."""
    pool_users = lenders(*["50"] * pool, prefix=f"{prefix}lender")
    loans, borrowers = [], []
    for k in range(count):
        borrower = UserFactory(username=f"{prefix}borrower{k}")
        fund(borrower, "USDT", "6000")
        if Decimal(extra):
            fund(borrower, "ETH", extra)
        request = request_example(borrower)
        for j, amount in enumerate(SPLITS[k % len(SPLITS)]):
            services.loan_request_fund(
                request_id=request.pk, lender=pool_users[(k + j) % pool], amount=amount
            )
        loans.append(Loan.objects.get(pk=request.pk))
        borrowers.append(borrower)
    return loans, borrowers, pool_users


def spend(user: Any, amount: Decimal, key: str) -> None:
    """The borrower spends ETH elsewhere (paid out to the world)."""
    asset = Asset.objects.get(code="ETH")
    with transaction.atomic():
        ledger.transfer_post(idempotency_key=key,
                             debit=ledger.account_for_user(user=user, asset=asset),
                             credit=ledger.account_world(asset=asset), amount=amount,
                             kind="withdrawal")  # fmt: skip


def due_time(loans: list[Loan], n: int) -> Any:
    return max(loan.installments.get(n=n).due_at for loan in loans) + timedelta(minutes=1)


def paid_once(loans: list[Loan], n: int) -> None:
    """Installment n of each loan is paid, with one transfer per lender and nothing else."""
    for loan in loans:
        inst = loan.installments.get(n=n)
        assert inst.status == "paid", (loan.pk, inst.status)
        keys = Counter(
            Transfer.objects.filter(
                reference=loan.pk, idempotency_key__startswith=f"loan:{loan.pk}:inst:{n}:"
            ).values_list("idempotency_key", flat=True)
        )
        assert set(keys.values()) == {1}
        assert len(keys) == 3 + (1 if loan.interest_fee else 0)  # 3 lenders (+ the fee)
        paid_events = LoanEvent.objects.filter(
            request_id=loan.pk, reason__startswith=f"installment {n} paid: "
        )
        assert paid_events.count() == 1


def paid_to(loan: Loan, pool: list[Any]) -> dict[tuple[str, int | None], Decimal]:
    """{(kind, the lender's place in the pool or None for the fee): amount} of a loan."""
    place = {u.pk: k for k, u in enumerate(pool)}
    return {
        (t.kind, place.get(t.credit_account.user_id)): t.amount  # type: ignore[arg-type]
        for t in Transfer.objects.filter(reference=loan.pk, kind__in=["loan_installment",
                                         "loan_fee"]).select_related("credit_account")
    }  # fmt: skip


def sealed_and_verified() -> bool:
    ledger.ledger_seal_pending()
    return verify_ledger().ok


@pytest.mark.django_db
def test_a_batch_pays_what_loan_by_loan_pays(alice, settings, monkeypatch):
    # given two identical sets of 50 loans (three lenders each, a 10 % fee on interest)
    settings.LENDING_INTEREST_FEE = Decimal("0.1")
    one_by_one, xb, xl = make_loans(50, "x")
    batched, yb, yl = make_loans(50, "y")
    fees = ledger.account_fees(asset=Asset.objects.get(code="ETH"))

    # when the first installment of one set is collected loan by loan
    at(monkeypatch, due_time(one_by_one + batched, 1))
    assert sum(services.loan_collect(loan_id=loan.pk) for loan in one_by_one) == 50
    fees.refresh_from_db()
    fees_one_by_one = fees.credits_posted
    # and the other's by the beat, in one batch
    with CaptureQueriesContext(connection) as queries:
        assert services.installments_collect_due(batch_size=100) == 50

    # then every balance and every transfer amount is the same on both sides
    assert [bal(u, "ETH") for u in xl] == [bal(u, "ETH") for u in yl]
    assert [bal(u, "ETH") for u in xb] == [bal(u, "ETH") for u in yb]
    fees.refresh_from_db()
    assert fees.credits_posted == 2 * fees_one_by_one > 0
    for x, y in zip(one_by_one, batched, strict=True):
        assert paid_to(x, xl) == paid_to(y, yl)
        x.refresh_from_db()
        y.refresh_from_db()
        assert x.fees == y.fees > 0
    paid_once(batched, 1)
    # a constant number of statements for the whole batch (savepoints included), whatever the
    # number of loans and transfers (50 loans, 200 transfers here): 20 when this was written,
    # the empty look for a next batch that ends the run included
    assert len(queries) <= 24, [q["sql"][:80] for q in queries.captured_queries]
    # and the events read as loan_collect's (notifications parse them)
    event = LoanEvent.objects.filter(request_id=batched[0].pk).latest("id")
    inst = batched[0].installments.get(n=1)
    assert (event.old_state, event.new_state, event.actor_role) == ("active", "active", "system")
    assert event.reason == f"installment 1 paid: {inst.principal + inst.interest}"
    assert sealed_and_verified()


@pytest.mark.django_db
def test_short_wallets_go_late_the_rest_are_paid(refdata, monkeypatch):
    # given 12 loans; the borrowers of every third spent their ETH
    loans, borrowers, _ = make_loans(12, "m")
    for k in range(0, 12, 3):
        spend(borrowers[k], bal(borrowers[k], "ETH"), f"test:spend:{k}")

    # when the first installment falls due and the beat runs (batches of 5)
    at(monkeypatch, due_time(loans, 1))
    assert services.installments_collect_due(batch_size=5) == 8

    # then the covered ones are paid and still active, the others late with a missed installment
    for k, loan in enumerate(loans):
        loan.refresh_from_db()
        first = loan.installments.get(n=1)
        if k % 3 == 0:
            assert (loan.state, first.status) == ("late", "missed")
            assert not Transfer.objects.filter(reference=loan.pk, kind="loan_installment")
            assert LoanEvent.objects.filter(request_id=loan.pk, new_state="late",
                                            reason="installment 1 not covered").count() == 1  # fmt: skip
        else:
            assert (loan.state, first.status) == ("active", "paid")
    paid_once([x for k, x in enumerate(loans) if k % 3], 1)

    # when those borrowers top up and the beat runs again
    for k in range(0, 12, 3):
        fund(borrowers[k], "ETH", "1")
    assert services.installments_collect_due(batch_size=5) == 4

    # then they are cured (late -> active, set-based) and paid once
    for k in range(0, 12, 3):
        loans[k].refresh_from_db()
        assert (loans[k].state, loans[k].late_since) == ("active", None)
        assert LoanEvent.objects.filter(request_id=loans[k].pk, old_state="late",
                                        new_state="active").count() == 1  # fmt: skip
    paid_once(loans, 1)
    assert services.installments_collect_due(batch_size=5) == 0
    assert sealed_and_verified()


@pytest.mark.django_db
def test_a_borrower_with_two_loans_and_money_for_one(alice, monkeypatch):
    # given alice with two loans in the same batch and ETH for one installment only
    fund(alice, "USDT", "12000")
    pool = lenders("5", "5")
    ids = []
    for _ in range(2):
        request = request_example(alice)
        services.loan_request_fund(request_id=request.pk, lender=pool[0], amount="0.5")
        services.loan_request_fund(request_id=request.pk, lender=pool[1], amount="0.5")
        ids.append(request.pk)
    first, second = (Loan.objects.get(pk=pk) for pk in ids)
    owed = first.installments.get(n=1).total
    assert second.installments.get(n=1).total == owed
    spend(alice, bal(alice, "ETH") - owed - Decimal("0.01"), "test:spend:alice")

    # when the installments fall due and the beat runs
    at(monkeypatch, due_time([first, second], 1))
    assert services.installments_collect_due() == 1

    # then the older loan is paid and the other is late: the wallet covers one, not both
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, first.installments.get(n=1).status) == ("active", "paid")
    assert (second.state, second.installments.get(n=1).status) == ("late", "missed")
    assert bal(alice, "ETH") == Decimal("0.01")
    assert bal(pool[0], "ETH") + bal(pool[1], "ETH") == Decimal(8) + owed
    assert sealed_and_verified()


@pytest.mark.django_db
def test_collecting_twice_pays_nothing_twice(refdata, monkeypatch):
    # given 6 loans with their first installment due
    loans, borrowers, pool = make_loans(6, "i")
    at(monkeypatch, due_time(loans, 1))
    # and one of them already collected on its own (loan_collect), same keys
    assert services.loan_collect(loan_id=loans[2].pk) == 1

    # when the beat runs twice
    assert services.installments_collect_due(batch_size=4) == 5
    before = (Transfer.objects.count(), [bal(u, "ETH") for u in [*pool, *borrowers]])
    assert services.installments_collect_due(batch_size=4) == 0

    # then the second run changed nothing and each installment was paid once
    assert (Transfer.objects.count(), [bal(u, "ETH") for u in [*pool, *borrowers]]) == before
    paid_once(loans, 1)
    assert Installment.objects.filter(loan__in=loans, status="paid").count() == 6
    assert sealed_and_verified()


@pytest.mark.django_db
def test_a_wallet_spent_during_the_batch_falls_back_loan_by_loan(refdata, monkeypatch, caplog):
    # given 4 loans due, and a borrower who spends their ETH while the batch is being written
    loans, borrowers, _ = make_loans(4, "s")
    at(monkeypatch, due_time(loans, 1))
    real = collection.transfers_post_select

    def spent_meanwhile(*args: Any, **kwargs: Any) -> int:
        spend(borrowers[1], bal(borrowers[1], "ETH"), "test:spend:meanwhile")
        return real(*args, **kwargs)

    monkeypatch.setattr(collection, "transfers_post_select", spent_meanwhile)

    # when the beat runs: the database refuses the overdraft, the batch is undone
    with caplog.at_level(logging.WARNING, logger="lending.services.collection"):
        paid = services.installments_collect_due()

    # then loan_collect took every loan of it: the spending was undone with the batch's
    # savepoint, so all four are paid, once
    assert "loan by loan" in caplog.text
    assert paid == 4
    paid_once(loans, 1)
    assert sealed_and_verified()


@pytest.mark.django_db(transaction=True)
def test_two_workers_collect_each_installment_exactly_once(refdata, settings, monkeypatch):
    require_postgres()
    # given 30 loans over a shared pool of lenders (their accounts meet in every batch), the
    # borrowers of every fifth without the ETH, and a 10 % fee (the fee account in every batch)
    settings.LENDING_INTEREST_FEE = Decimal("0.1")
    loans, borrowers, pool = make_loans(30, "c", pool=3)
    short = set(range(0, 30, 5))
    for k in short:
        spend(borrowers[k], bal(borrowers[k], "ETH"), f"test:spend:{k}")
    lent = sum(bal(u, "ETH") for u in pool)
    at(monkeypatch, due_time(loans, 1))

    # when two workers run the beat at once, in small batches
    results = run_at_once([lambda: services.installments_collect_due(batch_size=4)] * 2)

    # then nothing crashed, and together they paid each covered installment once
    assert [outcome(r) for r in results] == ["ok", "ok"], results
    assert sum(results) == 30 - len(short)  # type: ignore[arg-type]
    paid = [x for k, x in enumerate(loans) if k not in short]
    paid_once(paid, 1)
    for k in short:
        loans[k].refresh_from_db()
        assert (loans[k].state, loans[k].installments.get(n=1).status) == ("late", "missed")
        assert LoanEvent.objects.filter(request_id=loans[k].pk, new_state="late").count() == 1
    owed = sum(x.installments.get(n=1).total for x in paid)
    fees = sum(Loan.objects.filter(pk__in=[x.pk for x in paid]).values_list("fees", flat=True))
    assert fees > 0
    assert sum(bal(u, "ETH") for u in pool) == lent + owed - fees
    assert sealed_and_verified()
