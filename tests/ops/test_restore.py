"""docs/operations.md's backup and restore, done: pg_dump in custom format of a database with a
ledger, pg_restore into a fresh database, and verify_ledger passes there with the same head."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from conftest import ROOT, require_postgres
from escrow import services as escrow
from ledger import services as ledger
from ledger.models import Checkpoint, Transfer
from marketplace.tests.factories import make_trade

pytestmark = pytest.mark.django_db(transaction=True)


def pg_tool(name: str) -> str:
    return str(Path(os.environ.get("PG_BIN") or "/usr/lib/postgresql/15/bin") / name)


def head(dsn: str) -> tuple[int, str, int]:
    with psycopg.connect(dsn) as conn:
        seq, chain_head = conn.execute(
            "SELECT seq, hash FROM ledger_transfer WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        (checkpoints,) = conn.execute("SELECT count(*) FROM ledger_checkpoint").fetchone()
    return seq, chain_head, checkpoints


def test_a_custom_format_dump_restores_to_a_ledger_that_verifies(alice, bob, tmp_path, monkeypatch):
    require_postgres()
    # The settlements are executed here, not queued: a Celery worker another test left on the
    # shared broker could claim one and commit it after this test has sealed.
    monkeypatch.setattr("escrow.services.transitions.publish_after_commit", lambda *a: None)
    # given a ledger with trades settled, sealed and checkpointed
    for _ in range(3):
        trade = make_trade(alice, bob)
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
        escrow.escrow_release(trade_id=trade.pk, actor=alice)
    escrow.settlements_execute_pending()
    ledger.checkpoint_create()
    assert Transfer.objects.filter(seq__isnull=True).count() == 0
    assert Checkpoint.objects.exists()
    db = connection.settings_dict
    server = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}"
    source = f"{server}/{db['NAME']}"
    # when it is backed up as docs/operations.md says and restored into a new database
    dump = tmp_path / "marketplace.dump"
    subprocess.run(
        [pg_tool("pg_dump"), "-Fc", "--no-owner", "-f", str(dump), "-d", source], check=True
    )
    restored_name = f"restored_{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [pg_tool("createdb"), "--maintenance-db", f"{server}/postgres", restored_name], check=True
    )
    restored = f"{server}/{restored_name}"
    try:
        subprocess.run(
            [pg_tool("pg_restore"), "--no-owner", "--exit-on-error", "-d", restored, str(dump)],
            check=True,
        )
        verified = subprocess.run(
            [sys.executable, "manage.py", "verify_ledger", "--no-progress"],
            cwd=ROOT,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "config.settings.test",
                "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{restored_name}",
            },
            capture_output=True,
            text=True,
            timeout=120,
        )
        # then the restored ledger verifies: chain, Merkle roots, signatures, balances
        assert verified.returncode == 0, verified.stderr
        assert "ledger OK" in verified.stdout
        # and it ends where the original does, with the same checkpoints
        assert head(restored) == head(source)
        assert head(restored)[0] == Transfer.objects.filter(seq__isnull=False).count()
    finally:
        subprocess.run(
            [pg_tool("dropdb"), "--force", "--maintenance-db", f"{server}/postgres", restored_name],
            check=False,
        )
