"""Batch settlement on PostgreSQL: a claimed batch is settled with a constant number of statements,
gives exactly the rows the one-by-one path gives, and falls back to that path for whatever the
batch cannot take."""

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.tests.factories import UserFactory
from conftest import require_postgres
from escrow import services
from escrow import services as escrow_services
from escrow.models import Settlement, Trade
from escrow.services import transitions
from ledger import services as ledger
from ledger.models import Asset, LedgerAccount, Transfer
from ledger.replay import verify_ledger
from ledger.selectors import balance_available
from marketplace.tests.factories import fund, make_offer

S = Trade.State
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _postgres_and_no_broker(monkeypatch):
    require_postgres()
    # the outbox rows wait for the test to settle them
    monkeypatch.setattr(transitions, "_enqueue", lambda settlement_id: None)


def _moderator():
    model = UserFactory._meta.model
    if not model.objects.filter(username="mod").exists():
        user = UserFactory(username="mod", is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="decide_trade"))
    return model.objects.get(username="mod")  # a fresh permission cache


def _released(seller, buyer, n: int, amount: str = "0.01") -> list[Trade]:
    offer = make_offer(seller, amount="2")
    trades = []
    for _ in range(n):
        trade = escrow_services.trade_open(offer_id=offer.pk, taker=buyer, amount=amount)
        services.trade_mark_paid(trade_id=trade.pk, actor=buyer)
        trades.append(services.escrow_release(trade_id=trade.pk, actor=seller))
    return trades


def _decided(seller, buyer, outcome: str, buyer_amount: str | None = None) -> Trade:
    offer = make_offer(seller, amount="1")
    trade = escrow_services.trade_open(offer_id=offer.pk, taker=buyer, amount="0.02")
    services.escrow_dispute(trade_id=trade.pk, actor=buyer, reason="no answer")
    return services.escrow_decide(
        trade_id=trade.pk,
        actor=_moderator(),
        outcome=outcome,
        reason="evidence",
        buyer_amount=Decimal(buyer_amount) if buyer_amount else None,
    )


def _state(trade: Trade) -> str:
    return Trade.objects.values_list("state", flat=True).get(pk=trade.pk)


def _queries_to_settle_all() -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        settled = services.settlements_execute_pending(batch_size=500)
    return settled, len(queries)


def test_one_batch_settles_every_kind_in_a_constant_number_of_queries(alice, bob, carol):
    fund(alice, "BTC", "5")
    fund(carol, "BTC", "5")
    fund(bob, "BTC", "0.001")  # bob's account and the fee account exist, as they would
    ledger.account_fees(asset=Asset.objects.get(code="BTC"))
    # a small batch of releases, refunds and splits ...
    small = [
        *_released(alice, bob, 2),
        _decided(carol, bob, "release"),
        _decided(carol, bob, "refund"),
        _decided(carol, bob, "split", "0.005"),
    ]
    settled_small, queries_small = _queries_to_settle_all()
    # ... and one five times the size
    big = [*_released(alice, bob, 10), *_released(carol, bob, 10)]
    for outcome, share in [("refund", None), ("split", "0.01"), ("release", None)] * 2:
        big.append(_decided(carol, bob, outcome, share))
    settled_big, queries_big = _queries_to_settle_all()

    assert (settled_small, settled_big) == (5, 26)
    assert queries_big == queries_small, "the batch's statements grew with its size"
    finals = {S.RELEASING: S.COMPLETED, S.REFUNDING: S.REFUNDED, S.SPLITTING: S.SPLIT}
    for trade in small + big:
        assert _state(trade) == finals[trade.state], trade
    done = Settlement.objects.filter(status=Settlement.Status.DONE)
    assert done.count() == 31
    assert set(done.values_list("attempts", flat=True)) == {1}
    # every trade paid out what the one-by-one path pays: the buyer got amount - buyer fee on a
    # release, the share on a split, nothing on a refund; fees from releases only
    payouts = dict(Transfer.objects.filter(kind="trade_payout").values_list("reference", "amount"))
    for trade in small + big:
        expected = {
            S.RELEASING: trade.buyer_receives,
            S.SPLITTING: Decimal("0.005") if trade in small else Decimal("0.01"),
        }.get(trade.state)
        assert payouts.get(trade.pk) == expected, trade
    released = [t for t in small + big if t.state == S.RELEASING]
    fees = LedgerAccount.objects.get(code="fees:BTC")
    assert fees.balance == sum(t.fee for t in released)
    assert balance_available(user=bob, asset_code="BTC") == Decimal("0.001") + sum(payouts.values())
    # the audit trail: one system event into the final state per trade
    for trade in small + big:
        last = Trade.objects.get(pk=trade.pk).events.order_by("-id").first()
        assert (last.old_state, last.new_state, last.actor_role) == (
            trade.state,
            finals[trade.state],
            "system",
        )
    ledger.ledger_seal_pending()
    report = verify_ledger()
    assert report.ok, report.errors


def test_a_batch_the_database_refuses_is_settled_one_by_one(alice, bob, caplog):
    fund(alice, "BTC", "2")
    good, bad, also_good = _released(alice, bob, 3)
    # the bad one's hold was resolved behind the state machine's back: the batch's INSERT of its
    # resolution breaks the one-resolution-per-hold constraint, so the whole batch rolls back
    hold = Trade.objects.get(pk=bad.pk).escrow_hold
    ledger.transfer_void_pending(idempotency_key="manual-void", pending=hold)

    assert services.settlements_execute_pending(batch_size=10) == 2

    assert "settling one by one" in caplog.text
    assert [_state(t) for t in (good, bad, also_good)] == [S.COMPLETED, S.RELEASING, S.COMPLETED]
    assert Settlement.objects.get(trade=bad).status == Settlement.Status.PENDING
    assert Transfer.objects.filter(reference=bad.pk, kind="trade_payout").count() == 0
    assert Transfer.objects.filter(kind="trade_payout").count() == 2


def test_a_settlement_that_does_not_fit_the_batch_stays_pending(alice, bob):
    fund(alice, "BTC", "2")
    good, odd = _released(alice, bob, 2)
    # an outbox row whose trade is not in the state it settles (releasing) anymore
    Trade.objects.filter(pk=odd.pk).update(state=S.PAID)

    assert services.settlements_execute_pending(batch_size=10) == 1

    assert (_state(good), _state(odd)) == (S.COMPLETED, S.PAID)
    assert Settlement.objects.get(trade=odd).status == Settlement.Status.PENDING
    assert not Transfer.objects.filter(reference=odd.pk, flags="post_pending").exists()


def test_an_overdraft_in_a_batch_settles_the_rest_and_doubles_nothing(alice, bob, caplog):
    # given three released trades, and one of them with a fee larger than its escrow holds (a
    # row changed behind the state machine's back): paying it out would overdraw its escrow
    fund(alice, "BTC", "2")
    good, bad, also_good = _released(alice, bob, 3)
    Trade.objects.filter(pk=bad.pk).update(seller_fee=Decimal("0.5"))
    fees_before = (
        LedgerAccount.objects.filter(code="fees:BTC")
        .values_list("credits_posted", flat=True)
        .first()
    ) or Decimal(0)

    # when a worker settles the batch
    settled = services.settlements_execute_pending(batch_size=10)

    # then the database refused the batch (no overdraft), the one-by-one path settled the other
    # two and refused the bad one in code, which stays pending for a person to look at
    assert settled == 2
    assert "settling one by one" in caplog.text
    assert "account_no_overdraft" in caplog.text
    assert [_state(t) for t in (good, bad, also_good)] == [S.COMPLETED, S.RELEASING, S.COMPLETED]
    assert Settlement.objects.get(trade=bad).status == Settlement.Status.PENDING
    assert not Transfer.objects.filter(reference=bad.pk).exclude(flags="pending").exists()
    for trade in (good, also_good):
        rows = Transfer.objects.filter(reference=trade.pk).exclude(flags="pending")
        assert sorted(rows.values_list("kind", flat=True)) == [
            "escrow_hold",
            "trade_fee",
            "trade_payout",
        ], "posted once each, not once by the batch and again one by one"
        assert Settlement.objects.get(trade=trade).attempts == 1
    fees = LedgerAccount.objects.get(code="fees:BTC").credits_posted
    assert fees == fees_before + good.fee + also_good.fee
    escrow = LedgerAccount.objects.get(code=f"escrow:trade:{bad.pk}")
    assert escrow.credits_pending == Trade.objects.get(pk=bad.pk).escrow_hold.amount
    ledger.ledger_seal_pending()
    assert verify_ledger().ok


def test_a_split_the_batch_cannot_take_goes_the_careful_way_and_stays_pending(alice, bob):
    # given a split whose share is larger than the hold (it cannot fit the batch) among releases
    fund(alice, "BTC", "2")
    fund(bob, "BTC", "1")
    first, second = _released(alice, bob, 2)
    split = _decided(bob, alice, "split", "0.01")
    Settlement.objects.filter(trade=split).update(buyer_amount=Decimal("5"))

    # when
    settled = services.settlements_execute_pending(batch_size=10)

    # then the releases settle in the batch; the split goes the careful way, which refuses it
    assert settled == 2
    assert (_state(first), _state(second), _state(split)) == (
        S.COMPLETED,
        S.COMPLETED,
        S.SPLITTING,
    )
    assert Settlement.objects.get(trade=split).status == Settlement.Status.PENDING
    assert Transfer.objects.filter(pending=Trade.objects.get(pk=split.pk).escrow_hold).count() == 0
    # a second run settles nothing twice
    assert services.settlements_execute_pending(batch_size=10) == 0
    assert Transfer.objects.filter(kind="trade_payout").count() == 2
