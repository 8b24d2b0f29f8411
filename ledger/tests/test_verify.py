"""verify_ledger re-computes the chain and the balances and names the first bad seq."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from escrow import services as escrow
from escrow.models import Settlement
from ledger import chain
from ledger.models import LedgerAccount, Transfer
from ledger.replay import verify_ledger
from ledger.services import ledger_seal_pending, transfer_entry
from marketplace.tests.factories import fund, make_trade

pytestmark = pytest.mark.django_db


@pytest.fixture
def sealed_ledger(alice, bob):
    """A few deposits and a completed trade, all sealed: 6+ entries."""
    fund(bob, "ETH", "2")
    trade = make_trade(alice, bob)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    escrow.escrow_release(trade_id=trade.pk, actor=alice)
    escrow.settlement_execute(settlement_id=Settlement.objects.get(trade=trade).pk)
    fund(alice, "USDT", "10")
    assert ledger_seal_pending(batch_size=2) == Transfer.objects.count()  # several batches
    return Transfer.objects.order_by("seq")


def _sql(statement: str, params: list) -> None:
    """Tamper as the database superuser would: with the append-only triggers switched off."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(statement, params)
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")


def test_a_clean_ledger_verifies(sealed_ledger, capsys):
    seqs = list(sealed_ledger.values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    call_command("verify_ledger", "--no-progress")
    assert "ledger OK" in capsys.readouterr().out


def test_hash_is_sha256_over_prev_hash_and_canonical_bytes(sealed_ledger):
    import hashlib

    first, second = sealed_ledger[0], sealed_ledger[1]
    data = chain.entry_bytes(transfer_entry(first, seq=1))
    assert first.prev_hash == "0" * 64
    assert first.hash == hashlib.sha256(bytes(32) + data).hexdigest()
    assert second.prev_hash == first.hash
    assert b'"amount":"' in data
    assert b" " not in data


def test_sealing_again_changes_nothing(sealed_ledger):
    before = list(sealed_ledger.values_list("seq", "hash"))
    assert ledger_seal_pending() == 0
    assert list(Transfer.objects.order_by("seq").values_list("seq", "hash")) == before


def _expect_bad(seq: int) -> None:
    report = verify_ledger()
    assert not report.ok
    assert report.first_bad_seq == seq, report.errors
    with pytest.raises(CommandError, match=f"first bad seq: {seq}"):
        call_command("verify_ledger", "--no-progress")


def test_altered_amount(sealed_ledger):
    victim = sealed_ledger[3]
    _sql("UPDATE ledger_transfer SET amount = amount + 1 WHERE id = %s", [victim.pk])
    _expect_bad(4)


def test_amount_altered_below_the_assets_precision(sealed_ledger):
    """The canonical bytes render the amount at its asset's precision, so a change below it
    hashes the same: the verifier refuses the finer digits themselves, at that entry."""
    victim = sealed_ledger.filter(asset__code="BTC").first()
    _sql("UPDATE ledger_transfer SET amount = amount + 0.000000004 WHERE id = %s", [victim.pk])
    _expect_bad(victim.seq)
    report = verify_ledger()
    assert "finer than BTC's 8 decimals" in report.errors[0]


def test_altered_merkle_node(sealed_ledger):
    assert sealed_ledger.count() >= 6
    _sql('UPDATE ledger_merklenode SET hash = %s WHERE level = 1 AND "index" = 2', ["ab" * 32])
    _expect_bad(5)  # the node over seq 5..6


def test_removed_entry(sealed_ledger):
    victim = sealed_ledger.get(kind="trade_payout")  # nothing references it
    _sql("DELETE FROM ledger_transfer WHERE id = %s", [victim.pk])
    _expect_bad(victim.seq)


def test_reordered_entries(sealed_ledger):
    a, b = sealed_ledger[1], sealed_ledger[2]
    _sql("UPDATE ledger_transfer SET seq = -1 WHERE id = %s", [a.pk])
    _sql(
        "UPDATE ledger_transfer SET seq = 2, prev_hash = %s, hash = %s WHERE id = %s",
        [a.prev_hash, a.hash, b.pk],
    )
    _sql(
        "UPDATE ledger_transfer SET seq = 3, prev_hash = %s, hash = %s WHERE id = %s",
        [b.prev_hash, b.hash, a.pk],
    )
    _expect_bad(2)


def test_altered_hash(sealed_ledger):
    victim = sealed_ledger[4]
    _sql("UPDATE ledger_transfer SET hash = %s WHERE id = %s", ["f" * 64, victim.pk])
    _expect_bad(5)


def test_altered_balance(sealed_ledger, alice):
    account = LedgerAccount.objects.get(code=f"user:{alice.pk}:USDT")
    _sql(
        "UPDATE ledger_ledgeraccount SET credits_posted = %s WHERE id = %s",
        [Decimal("11"), account.pk],
    )
    report = verify_ledger()
    assert not report.ok
    assert any(f"user:{alice.pk}:USDT" in e for e in report.errors)
    assert any("USDT: balances sum to 1.0" in e for e in report.errors), report.errors
