"""Session advisory locks behind PgBouncer (issue 17): with DATABASE_DIRECT_URL set, the chain's
sequencer and deposit watcher take their lock on a session of its own (the `direct` alias), never
on `default`, whose server connection PgBouncer hands to someone else between transactions.

Run in a child process: the aliases are read from the settings once per process. Both URLs name
this test database on the same server (here no PgBouncer is in between; what is checked is which
session holds the lock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, django
django.setup()
from django.db import connections
from common.db import session_lock
from ledger.evm.deposits import WATCHER_LOCK, _watcher_lock

def holder(key):
    with connections["default"].cursor() as c:
        c.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND ((classid::bigint << 32) | objid::bigint) = %s",
            [key],
        )
        row = c.fetchone()
    return row and row[0]

def pid(alias):
    with connections[alias].cursor() as c:
        c.execute("SELECT pg_backend_pid()")
        return c.fetchone()[0]

with _watcher_lock() as held:
    inside = {"held": held, "holder": holder(WATCHER_LOCK), "direct": pid("direct"),
              "default": pid("default")}
    with session_lock(WATCHER_LOCK) as again:  # another process's try: refused while held
        pass
after = holder(WATCHER_LOCK)
print(json.dumps({**inside, "again_from_same_session": again, "after": after}))
"""


def test_session_locks_are_taken_on_the_direct_connection():
    settings_dict = connection.settings_dict
    url = os.environ["DATABASE_URL"]
    test_url = urlunsplit(urlsplit(url)._replace(path="/" + settings_dict["NAME"]))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": test_url,
        "DATABASE_DIRECT_URL": test_url,
        "DATABASE_BEHIND_PGBOUNCER": "true",
        "DATABASE_REPLICA_URL": "",
    }
    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["held"] is True
    # the lock is held by the direct session, not by the pooled default one
    assert got["holder"] == got["direct"]
    assert got["direct"] != got["default"]
    # released at the end of the block
    assert not got["after"]
