"""verify_ledger in ranges: worker processes on their own connections (committed data, so these
tests are transactional) and the same ranges in this process, with ranges of a few entries so
that every check crosses range boundaries: the first bad seq is the one one loop would name."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from conftest import require_postgres
from escrow import services as escrow
from escrow.models import Settlement
from ledger import replay
from ledger.models import Checkpoint, LedgerAccount, Transfer
from ledger.replay import verify_ledger
from ledger.services import checkpoint_create, ledger_seal_pending
from marketplace.tests.factories import fund, make_trade

# workers=1: this process; workers=2: `python -m ledger.scan` processes.
WAYS = [pytest.param(1, id="here"), pytest.param(2, id="workers")]


@pytest.fixture(autouse=True)
def small_ranges(monkeypatch):
    monkeypatch.setattr(replay, "REPLAY_CHUNK", 2)  # holds resolved in a later range


@pytest.fixture
def ledger_entries(alice, bob):
    """Deposits, two trades (holds, payouts, fees), an unsealed deposit; checkpoints every 4."""
    require_postgres()
    fund(bob, "ETH", "2")
    for _ in range(2):
        trade = make_trade(alice, bob)
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
        escrow.escrow_release(trade_id=trade.pk, actor=alice)
        escrow.settlement_execute(settlement_id=Settlement.objects.get(trade=trade).pk)
    fund(alice, "USDT", "10")
    ledger_seal_pending(batch_size=3)
    checkpoint_create()
    fund(bob, "BTC", "0.5")  # committed, not sealed
    return Transfer.objects.filter(seq__isnull=False).count()


def _sql(statement: str, params: list) -> None:
    """Tamper as the database superuser would: with the append-only triggers switched off."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(statement, params)


def _verify(workers: int) -> replay.Report:
    report = verify_ledger(workers=workers, chunk=2)
    assert report.workers == (workers if workers > 1 else 0)
    return report


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", WAYS)
def test_a_clean_ledger_verifies_in_ranges(ledger_entries, workers):
    seen: list[int] = []
    report = verify_ledger(seen.append, workers=workers, chunk=2)
    assert report.ok, report.errors
    assert report.entries == ledger_entries
    assert sum(seen) == ledger_entries  # the progress bar's count
    assert report.unsealed == 1
    assert report.accounts == LedgerAccount.objects.count()
    assert Checkpoint.objects.count() >= 3
    assert report.workers == (2 if workers == 2 else 0)
    if workers == 2:
        assert 0 < report.worker_peak_rss_kib < 200 * 1024


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", WAYS)
def test_altered_amount(ledger_entries, workers):
    _sql("UPDATE ledger_transfer SET amount = amount + 1 WHERE seq = 5", [])
    report = _verify(workers)
    assert report.first_bad_seq == 5, report.errors
    assert "seq 5: entry was altered" in report.errors[0]
    assert report.entries == 4


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", WAYS)
@pytest.mark.parametrize("seq", [3, 4])  # first and last of a range of 2
def test_removed_entry(ledger_entries, workers, seq):
    _sql("DELETE FROM ledger_transfer WHERE seq = %s", [seq])
    assert _verify(workers).first_bad_seq == seq


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", WAYS)
def test_swapped_entries_across_ranges(ledger_entries, workers):
    a, b = Transfer.objects.get(seq=4), Transfer.objects.get(seq=5)
    _sql("UPDATE ledger_transfer SET seq = -1 WHERE id = %s", [a.pk])
    _sql(
        "UPDATE ledger_transfer SET seq = 4, prev_hash = %s, hash = %s WHERE id = %s",
        [a.prev_hash, a.hash, b.pk],
    )
    _sql(
        "UPDATE ledger_transfer SET seq = 5, prev_hash = %s, hash = %s WHERE id = %s",
        [b.prev_hash, b.hash, a.pk],
    )
    assert _verify(workers).first_bad_seq == 4


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", WAYS)
def test_altered_hash_is_caught_where_it_is(ledger_entries, workers):
    # seq 6's hash is also seq 7's prev_hash: 6 is named, in another range than 7.
    _sql("UPDATE ledger_transfer SET hash = %s WHERE seq = 6", ["f" * 64])
    assert _verify(workers).first_bad_seq == 6


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", WAYS)
def test_altered_prev_hash_at_a_range_start(ledger_entries, workers):
    _sql("UPDATE ledger_transfer SET prev_hash = %s WHERE seq = 7", ["e" * 64])
    report = _verify(workers)
    assert report.first_bad_seq == 7
    assert "prev_hash" in report.errors[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", WAYS)
def test_forged_checkpoint_root(ledger_entries, workers):
    checkpoint = Checkpoint.objects.order_by("tree_size")[1]
    _sql("UPDATE ledger_checkpoint SET root_hash = %s WHERE id = %s", ["ab" * 32, checkpoint.pk])
    report = _verify(workers)
    assert report.first_bad_seq == checkpoint.tree_size
    assert any("signed root" in e for e in report.errors), report.errors


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", WAYS)
def test_altered_stored_leaf_hash(ledger_entries, workers):
    _sql("UPDATE ledger_transfer SET leaf_hash = %s WHERE seq = 2", ["0" * 64])
    report = _verify(workers)
    assert report.first_bad_seq == 2
    assert "leaf hash" in report.errors[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", WAYS)
@pytest.mark.parametrize(
    ("level", "index", "first", "last"),
    [
        pytest.param(1, 2, 5, 6, id="inside-a-range"),  # ranges of 2: level 1 is the scan's
        pytest.param(2, 1, 5, 8, id="above-the-ranges"),  # combined by the command
    ],
)
def test_altered_stored_merkle_node(ledger_entries, workers, level, index, first, last):
    """Proofs are served from the stored nodes: one altered is named, with the seqs under it."""
    _sql(
        'UPDATE ledger_merklenode SET hash = %s WHERE level = %s AND "index" = %s',
        ["cd" * 32, level, index],
    )
    report = _verify(workers)
    assert report.first_bad_seq == first
    assert report.errors == [
        f"seq {first}: stored Merkle node (level {level}, index {index}) over seq "
        f"{first}..{last} differs from the entries"
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", WAYS)
def test_missing_stored_merkle_node(ledger_entries, workers):
    _sql('DELETE FROM ledger_merklenode WHERE level = 1 AND "index" = 0', [])
    report = _verify(workers)
    assert report.first_bad_seq == 1
    assert report.errors == [
        "seq 1: stored Merkle node (level 1, index 0) over seq 1..2 is missing"
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", WAYS)
def test_altered_balance_and_open_hold(ledger_entries, workers, alice):
    account = LedgerAccount.objects.get(code=f"user:{alice.pk}:USDT")
    _sql(
        "UPDATE ledger_ledgeraccount SET credits_posted = %s WHERE id = %s",
        [Decimal("11"), account.pk],
    )
    report = _verify(workers)
    assert any(f"user:{alice.pk}:USDT" in e for e in report.errors), report.errors
    assert any("USDT: balances sum to 1.0" in e for e in report.errors), report.errors
    assert report.first_bad_seq == Transfer.objects.get(credit_account=account).seq


@pytest.mark.django_db(transaction=True)
def test_the_command_uses_workers(ledger_entries, capsys, settings):
    settings.LEDGER_VERIFY_WORKERS = 2
    call_command("verify_ledger", "--no-progress")
    assert f"ledger OK: {ledger_entries} sealed entries" in capsys.readouterr().out
