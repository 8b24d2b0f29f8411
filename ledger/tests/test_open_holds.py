"""The open holds PostgreSQL keeps (ledger_openhold, migration 0011's trigger): a hold is open
from its insert until its post or void, whatever inserted them (one by one, or a settlement
batch's one statement); the wallet reads them; verify_ledger holds the table to its replay; the
migration's backfill finds the holds open before the trigger."""

from __future__ import annotations

import importlib
from decimal import Decimal

import pytest
from django.db import connection

from accounts.tests.factories import complete
from escrow import services as escrow
from escrow.models import Settlement, Trade
from ledger import services
from ledger.models import Asset, OpenHold, Transfer
from ledger.replay import verify_ledger
from ledger.selectors import wallet_list_for_user
from marketplace.tests.factories import fund, make_trade

pytestmark = pytest.mark.django_db


def _open() -> dict[int, Decimal]:
    return dict(OpenHold.objects.values_list("transfer_id", "amount"))


def _hold(alice, bob, key: str, amount: str) -> Transfer:
    btc = Asset.objects.get(code="BTC")
    return services.transfer_post(
        idempotency_key=key,
        debit=services.account_for_user(user=alice, asset=btc),
        credit=services.account_for_user(user=bob, asset=btc),
        amount=Decimal(amount),
        kind=Transfer.Kind.ESCROW_HOLD,
        pending=True,
    )


def test_a_hold_is_open_until_it_is_posted_or_voided(alice, bob):
    fund(alice, "BTC", "1")
    posted, part, voided = (_hold(alice, bob, f"h{i}", "0.1") for i in range(3))
    assert _open() == {
        posted.pk: Decimal("0.1"),
        part.pk: Decimal("0.1"),
        voided.pk: Decimal("0.1"),
    }
    (btc_wallet,) = [w for w in wallet_list_for_user(user=alice) if w.asset.code == "BTC"]
    assert btc_wallet.escrow == Decimal("0.3")
    services.transfer_post_pending(idempotency_key="p0", pending=posted)
    services.transfer_post_pending(idempotency_key="p1", pending=part, amount=Decimal("0.04"))
    services.transfer_void_pending(idempotency_key="v2", pending=voided)
    assert _open() == {}
    (btc_wallet,) = [w for w in wallet_list_for_user(user=alice) if w.asset.code == "BTC"]
    assert btc_wallet.escrow == Decimal(0)
    assert btc_wallet.available == Decimal("1") - Decimal("0.1") - Decimal("0.04")
    assert verify_ledger().ok


def test_a_settlement_batch_closes_its_holds_in_one_statement(alice, bob, carol):
    trades = [make_trade(alice, bob, amount="0.01") for _ in range(3)]
    trades.append(make_trade(carol, bob, amount="0.02"))
    assert set(_open()) == {t.escrow_hold_id for t in trades}
    for trade in trades:
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
        escrow.escrow_release(trade_id=trade.pk, actor=trade.seller)
    assert escrow.settlements_execute_pending(batch_size=100) == 4
    assert Settlement.objects.filter(status=Settlement.Status.DONE).count() == 4
    assert _open() == {}
    assert verify_ledger().ok


def test_verify_ledger_finds_a_table_that_lost_or_invented_a_hold(alice, bob):
    trade = make_trade(alice, bob, amount="0.01")
    complete(make_trade(alice, bob, amount="0.02"))
    assert verify_ledger().ok
    OpenHold.objects.filter(transfer_id=trade.escrow_hold_id).delete()
    report = verify_ledger()
    assert not report.ok
    assert any(f"hold {trade.escrow_hold_id}: open for" in e for e in report.errors)


def test_the_migrations_backfill_finds_the_holds_open_before_it(alice, bob):
    open_ = make_trade(alice, bob, amount="0.01")
    cancelled = make_trade(alice, bob, amount="0.02")
    escrow.trade_cancel(trade_id=cancelled.pk, actor=bob)
    complete(make_trade(alice, bob, amount="0.03"))
    expected = _open()
    assert set(expected) == {Trade.objects.get(pk=open_.pk).escrow_hold_id}
    OpenHold.objects.all().delete()
    migration = importlib.import_module("ledger.migrations.0011_open_holds")
    with connection.cursor() as cursor:
        cursor.execute(migration.BACKFILL_SQL)
    assert _open() == expected
    assert verify_ledger().ok
