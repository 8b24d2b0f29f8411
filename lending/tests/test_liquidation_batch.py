"""Liquidations in batches (loans_liquidate, which loans_check_ltv uses): the same figures as one
loan at a time, a mixed book after a crash, stale prices and the moderators' pause, a batch the
ledger refuses, and two checks racing on real PostgreSQL."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.tests.factories import UserFactory
from conftest import require_postgres
from escrow.tests.test_concurrency import outcome, run_at_once
from ledger import services as ledger
from ledger.models import Asset, Transfer
from ledger.replay import verify_ledger
from lending import listeners, services
from lending.models import Loan, LoanEvent
from lending.tests.helpers import at, bal
from marketplace.models import PriceIndex
from marketplace.services import price_index_set
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db

# (asset borrowed, collateral, collateral amount, its EUR value at the reference prices)
PAIRS = [
    ("USDT", "ETH", "1", Decimal(3000)),
    ("USDT", "BTC", "0.05", Decimal(4250)),
    ("ETH", "BTC", "0.05", Decimal(4250)),
]
EUR = {"USDT": Decimal("0.92"), "ETH": Decimal(3000)}
SPLITS = [[Decimal(1)], [Decimal("0.6"), Decimal("0.4")], [Decimal("0.5"), Decimal("0.3")]]


def book(prefix: str, n: int) -> list[Loan]:
    """`n` active loans over the three pairs, starting at LTVs spread from 0.30 to 0.63, funded
    by one, two or three of the book's three lenders (the last takes the rest of the amount)."""
    pool = [UserFactory(username=f"{prefix}-lender{k}") for k in range(3)]
    for user in pool:
        fund(user, "USDT", "1000000")
        fund(user, "ETH", "1000")
    loans = []
    for i in range(n):
        asset, collateral, held, value = PAIRS[i % 3]
        ltv = Decimal("0.30") + Decimal("0.33") * i / n
        places = Decimal("0.01") if asset == "USDT" else Decimal("0.0001")
        amount = (ltv * value / EUR[asset]).quantize(places)
        borrower = UserFactory(username=f"{prefix}-borrower{i}")
        fund(borrower, collateral, held)
        request = services.loan_request_create(
            borrower=borrower, asset=asset, amount=str(amount), annual_rate="5", term_months=6,
            plan="amortized", collateral_asset=collateral, collateral_amount=held,
            funding_deadline=timezone.now() + timedelta(days=2),
        )  # fmt: skip
        shares = SPLITS[i % 3]
        parts = [(amount * s).quantize(places) for s in shares[:-1]] if len(shares) > 1 else []
        parts.append(amount - sum(parts, Decimal(0)))
        for lender, part in zip(pool, parts, strict=False):
            services.loan_request_fund(request_id=request.pk, lender=lender, amount=str(part))
        loans.append(Loan.objects.get(pk=request.pk))
    assert all(x.state == "active" for x in loans)
    return loans


def crash(monkeypatch: Any, loans: list[Loan]) -> None:
    """20 days on (interest accrued, nothing due yet), ETH 3000 -> 1600 and BTC 85000 -> 50000
    EUR, every price fresh. The LTV check a price move queues is not sent: a Celery worker that
    another test left running would otherwise join in (the test runs the checks itself)."""
    monkeypatch.setattr(listeners, "publish_after_commit", lambda task, *args: None)
    at(monkeypatch, max(x.activated_at for x in loans) + timedelta(days=20))
    price_index_set(asset_code="ETH", fiat_code="EUR", price="1600")
    price_index_set(asset_code="BTC", fiat_code="EUR", price="50000")
    price_index_set(asset_code="USDT", fiat_code="EUR", price="0.92")


def outcome_of(loan: Loan) -> tuple[Any, ...]:
    """Everything a liquidation decided about a loan, with its parties named by their role."""
    loan.refresh_from_db()
    names = {loan.borrower_id: "borrower"}
    names.update({c.lender_id: f"lender{k}" for k, c in enumerate(loan.request.commitments.all())})
    transfers = sorted(
        (t.idempotency_key.replace(f"loan:{loan.pk}:", "").split(":lender:")[0], t.kind,
         t.amount, names.get(t.credit_account.user_id, t.credit_account.kind))
        for t in Transfer.objects.filter(reference=loan.pk, kind__in=["loan_liquidation",
                                         "loan_fee", "loan_collateral"],
                                         idempotency_key__contains=":liquidation:")
    )  # fmt: skip
    last = LoanEvent.objects.filter(request_id=loan.pk).last()
    return (loan.state, loan.collateral_amount, loan.shortfall, loan.fees_collateral,
            loan.closed_at, last.reason, sorted(loan.installments.values_list("status", flat=True)),
            transfers)  # fmt: skip


@pytest.fixture
def with_fee(settings):
    settings.LENDING_INTEREST_FEE = Decimal("0.10")


def test_batches_pay_exactly_what_one_loan_at_a_time_pays(refdata, with_fee, monkeypatch):
    # given two identical books of 21 loans, after a crash
    first, second = book("a", 21), book("b", 21)
    crash(monkeypatch, first + second)
    at_line = [
        pk for pk, _, ltv in services.loans_ltv() if ltv >= Decimal("0.83")
    ]  # the same loans of each book
    index = {x.pk: i for i, x in enumerate(first)} | {x.pk: i for i, x in enumerate(second)}
    assert len(at_line) > 8
    # when the first book is liquidated in batches of 4 and the second one loan at a time
    ones = [x.pk for x in second if x.pk in at_line]
    batched = services.loans_liquidate(
        loan_ids=[x.pk for x in first if x.pk in at_line], reason="crash", batch_size=4
    )
    single = [services.loan_liquidate(loan_id=pk, reason="crash").state for pk in ones]
    # then the same loans were liquidated, with the same figures to the unit
    assert batched == len(ones) == single.count("liquidated")
    assert {index[pk] for pk in at_line if pk in {x.pk for x in first}} == {
        index[pk] for pk in ones
    }
    for a, b in zip(first, second, strict=True):
        assert outcome_of(a) == outcome_of(b), index[a.pk]
    # and every party's balances match their twin's
    for role in ["lender0", "lender1", "lender2", *[f"borrower{i}" for i in range(21)]]:
        for asset in ("USDT", "ETH", "BTC"):
            twin = Loan.objects.model.borrower.field.related_model.objects
            assert bal(twin.get(username=f"a-{role}"), asset) == bal(
                twin.get(username=f"b-{role}"), asset
            ), (role, asset)
    # and some took a fee, some were underwater (no fee, a shortfall)
    liquidated = Loan.objects.filter(pk__in=at_line)
    assert liquidated.filter(fees_collateral__gt=0).exists()
    assert liquidated.filter(shortfall__gt=0, fees_collateral=0).exists()
    ledger.ledger_seal_pending()
    assert verify_ledger().ok


def test_a_crash_over_a_mixed_book(refdata, with_fee, monkeypatch):
    # given 30 loans, and what each one's LTV is after the crash
    loans = book("m", 30)
    crash(monkeypatch, loans)
    ltvs = {pk: ltv for pk, _, ltv in services.loans_ltv()}
    untouched = {pk for pk, v in ltvs.items() if v < Decimal("0.75")}
    called = {pk for pk, v in ltvs.items() if Decimal("0.75") <= v < Decimal("0.83")}
    below = {pk for pk, v in ltvs.items() if v >= Decimal("0.83")}
    assert min(len(untouched), len(called), len(below)) >= 3, (untouched, called, below)
    # when the check runs (liquidations in one batch)
    with CaptureQueriesContext(connection) as queries:
        result = services.loans_check_ltv()
    # then the loans past the liquidation line are liquidated, those between the lines are
    # margin called (and stay active), and the rest is left alone
    assert result == {"checked": 30, "margin_calls": len(called | below),
                      "liquidated": len(below)}  # fmt: skip
    states = dict(Loan.objects.values_list("pk", "state"))
    assert {pk for pk, s in states.items() if s == "liquidated"} == below
    margin_called = Loan.objects.filter(margin_called=True, state="active")
    assert set(margin_called.values_list("pk", flat=True)) == called
    assert not Loan.objects.filter(pk__in=untouched, margin_called=True).exists()
    # set-based: a constant number of statements (the LTV query, the margin calls' 3, about 30
    # for the batch of liquidations), whatever the number of loans
    assert len(queries) <= 40, [q["sql"][:60] for q in queries.captured_queries]
    assert Transfer.objects.filter(kind="loan_liquidation").count() == sum(
        len(Loan.objects.get(pk=pk).request.commitments.all()) for pk in below
    )
    # and a second run does nothing more
    assert services.loans_check_ltv()["liquidated"] == 0
    assert LoanEvent.objects.filter(new_state="liquidated").count() == len(below)
    ledger.ledger_seal_pending()
    assert verify_ledger().ok


def test_a_stale_price_blocks_every_liquidation_of_the_batch(
    refdata, monkeypatch, django_capture_on_commit_callbacks
):
    # given a book after a crash whose USDT price is two hours old
    loans = book("s", 12)
    crash(monkeypatch, loans)
    PriceIndex.objects.filter(asset__code="USDT").update(
        updated_at=timezone.now() - timedelta(hours=2)
    )
    below = [pk for pk, _, ltv in services.loans_ltv() if ltv >= Decimal("0.83")]
    assert below
    told: list[int] = []
    services.liquidation_blocked_listeners.append(lambda loan, why: told.append(loan.pk))
    try:
        # when the check runs
        with django_capture_on_commit_callbacks(execute=True):
            result = services.loans_check_ltv(batch_size=5)
    finally:
        services.liquidation_blocked_listeners.pop()
    # then nothing is liquidated; each loan at the line records the refusal, moderators are told
    assert result["liquidated"] == 0
    blocked = Loan.objects.filter(pk__in=below)
    assert set(blocked.values_list("state", flat=True)) == {"active"}
    assert set(blocked.values_list("liquidation_blocked_at", flat=True)) == {timezone.now()}
    assert sorted(told) == sorted(below)
    reasons = LoanEvent.objects.filter(reason__startswith="liquidation blocked: price index stale")
    assert sorted(reasons.values_list("request_id", flat=True)) == sorted(below)
    assert not Transfer.objects.filter(kind="loan_liquidation").exists()


def test_paused_liquidations_leave_the_batch_as_it_is(refdata, monkeypatch):
    # given a moderator paused liquidations, then a crash
    loans = book("p", 12)
    moderator = UserFactory(username="mod", is_staff=True)
    moderator.user_permissions.add(Permission.objects.get(codename="decide_trade"))
    moderator = type(moderator).objects.get(pk=moderator.pk)
    services.liquidations_set_paused(paused=True, actor=moderator, reason="feed stuck")
    crash(monkeypatch, loans)
    below = [pk for pk, _, ltv in services.loans_ltv() if ltv >= Decimal("0.83")]
    # when the check runs
    result = services.loans_check_ltv(batch_size=5)
    # then nothing is liquidated and each loan's trail says why
    assert result["liquidated"] == 0
    assert not Loan.objects.filter(state="liquidated").exists()
    why = LoanEvent.objects.filter(reason__contains="liquidations paused by moderators: feed stuck")
    assert sorted(why.values_list("request_id", flat=True)) == sorted(below)
    # when they resume: liquidated
    services.liquidations_set_paused(paused=False, actor=moderator)
    assert services.loans_check_ltv()["liquidated"] == len(below)


def test_a_batch_the_ledger_refuses_falls_back_to_one_loan_at_a_time(refdata, monkeypatch):
    # given a crash, and one loan at the line whose borrower's liquidation key is already taken
    # by some other transfer
    loans = book("f", 12)
    crash(monkeypatch, loans)
    below = [pk for pk, _, ltv in services.loans_ltv() if ltv >= Decimal("0.83")]
    poisoned = Loan.objects.get(pk=below[0])
    eth = Asset.objects.get(code="ETH")
    fund(poisoned.borrower, "ETH", "1")
    with transaction.atomic():
        ledger.transfer_post(
            idempotency_key=f"loan:{poisoned.pk}:liquidation:borrower",
            debit=ledger.account_for_user(user=poisoned.borrower, asset=eth),
            credit=ledger.account_world(asset=eth), amount=Decimal("0.5"), kind="withdrawal",
        )  # fmt: skip
    # when the check runs: the ledger refuses the batch (a key used twice)
    result = services.loans_check_ltv()
    # then every other loan was liquidated one by one, the poisoned one refused and untouched
    assert result["liquidated"] == len(below) - 1
    poisoned.refresh_from_db()
    assert poisoned.state == "active"
    assert not Transfer.objects.filter(reference=poisoned.pk, kind="loan_liquidation").exists()
    assert set(Loan.objects.filter(pk__in=below[1:]).values_list("state", flat=True)) == {
        "liquidated"
    }
    ledger.ledger_seal_pending()
    assert verify_ledger().ok


@pytest.mark.django_db(transaction=True)
def test_two_checks_racing_liquidate_each_loan_once(refdata, with_fee, monkeypatch):
    require_postgres()
    # given a book after a crash
    loans = book("r", 24)
    crash(monkeypatch, loans)
    ltvs = {pk: ltv for pk, _, ltv in services.loans_ltv()}
    below = {pk for pk, v in ltvs.items() if v >= Decimal("0.83")}
    crossing = {pk for pk, v in ltvs.items() if v >= Decimal("0.75")}
    assert len(below) > 5
    # when two checks run at once (in batches of 3, so they interleave)
    results = run_at_once([lambda: services.loans_check_ltv(batch_size=3)] * 2)
    # then neither crashed, and together they liquidated each loan once and called each once
    assert [outcome(r) for r in results] == ["ok", "ok"], results
    assert sum(r["liquidated"] for r in results) == len(below)  # type: ignore[index]
    assert sum(r["margin_calls"] for r in results) == len(crossing)  # type: ignore[index]
    moves = Counter(
        LoanEvent.objects.filter(new_state="liquidated").values_list("request_id", flat=True)
    )
    assert set(moves) == below
    assert set(moves.values()) == {1}
    calls = Counter(
        LoanEvent.objects.filter(reason__startswith="margin call").values_list(
            "request_id", flat=True
        )
    )
    assert set(calls) == crossing
    assert set(calls.values()) == {1}
    borrowers = Transfer.objects.filter(idempotency_key__endswith=":liquidation:borrower")
    assert borrowers.count() <= len(below)
    ledger.ledger_seal_pending()
    assert verify_ledger().ok
