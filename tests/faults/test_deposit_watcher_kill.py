"""The deposit watcher SIGKILLed in the middle of a run, then restarted: every deposit is credited
exactly once.

The watcher is a real process (`manage.py evm_watch --once`, what the beat task runs) against a
real local node (Anvil). It is stopped mid-run deterministically: this test holds the row lock of
bob's ledger account, so the run credits alice's deposit (committed), then waits inside bob's
credit; the test sees it waiting in pg_stat_activity, SIGKILLs it and lets go (PostgreSQL rolls
the orphaned transaction back and frees the watcher's advisory lock with its session). Restarted,
the watcher credits bob's deposit; alice's is not credited again, and further runs change
nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection, transaction

from conftest import require_postgres, wait_for
from ledger.evm.addresses import deposit_address_for
from ledger.models import Asset, ChainDeposit, Deposit, LedgerAccount, Transfer
from ledger.services import account_for_user

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


def _watcher_env() -> dict[str, str]:
    db = connection.settings_dict
    env = dict(os.environ)  # the evm fixture put the node's URL and the keys here
    env["DATABASE_URL"] = (
        f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    )
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    return env


def _watcher(log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "evm_watch", "--once"],
        cwd=ROOT,
        env=_watcher_env(),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])


def _status(user) -> str:
    return ChainDeposit.objects.get(user=user).status


def _balance(user) -> Decimal:
    account = LedgerAccount.objects.get(user=user, asset__code="ETH")
    return account.credits_posted - account.debits_posted


def test_a_watcher_killed_mid_run_and_restarted_credits_each_deposit_once(
    evm, alice, bob, tmp_path
):
    require_postgres()
    log = tmp_path / "watcher.log"
    # given two deposits, each with its confirmations (alice's first), and bob's ledger account
    eth = Asset.objects.get(code="ETH")
    bob_account = account_for_user(user=bob, asset=eth)
    evm.send_eth(deposit_address_for(user=alice).address, "1")
    evm.send_eth(deposit_address_for(user=bob).address, "2")
    evm.node.mine(2)
    # when a watcher process runs while bob's account is locked, and is killed -9 mid-run
    with transaction.atomic():
        LedgerAccount.objects.select_for_update().get(pk=bob_account.pk)
        proc = _watcher(log)
        try:
            wait_for(
                lambda: (
                    ChainDeposit.objects.filter(user=alice, status="credited").exists()
                    and _waiting_on_a_lock()
                ),
                timeout=60,
                interval=0.02,
            )
        except AssertionError:
            proc.kill()
            raise AssertionError(f"watcher log:\n{log.read_text()[-3000:]}") from None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # then alice's credit stands, bob's was rolled back with the killed run
    assert _status(alice) == "credited"
    assert _status(bob) == "seen"
    assert _balance(alice) == Decimal(1)
    assert _balance(bob) == 0

    # when the watcher is restarted (until it gets the lock the dead session held)
    def restarted() -> bool:
        _watcher(log).wait(60)
        return _status(bob) == "credited"

    wait_for(restarted, timeout=60, interval=0.1)
    # then each deposit is credited once, and more runs change nothing
    for _ in range(2):
        assert _watcher(log).wait(60) == 0
    assert _balance(alice) == Decimal(1)
    assert _balance(bob) == Decimal(2)
    assert Transfer.objects.filter(kind="deposit").count() == 2
    assert Deposit.objects.count() == 2
    assert ChainDeposit.objects.filter(status="credited").count() == 2
    assert b"credited 1" in log.read_bytes()
