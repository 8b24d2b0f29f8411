"""A prefork Celery worker keeps its PostgreSQL sessions from task to task (config/celery.py):
Celery's Django fixup would close the connection pool around every task, so that each task opened
a new session (a backend forked, authenticated, configured). And a session that dies under the
worker (a database restart, a terminated backend) is replaced without failing the next task."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.db import connection

from conftest import CeleryWorker, require_postgres, wait_for
from escrow import services
from escrow.models import Settlement, Trade
from escrow.services import transitions
from escrow.tasks import settle
from marketplace.tests.factories import make_trade

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]

APP_NAME = f"pool-test-{os.getpid()}"


@pytest.fixture
def prefork_worker() -> Iterator[CeleryWorker]:
    """A prefork worker of this test's own (one child), on its own queue; its sessions are
    named (libpq's PGAPPNAME) so that the test can find them."""
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs Redis: run through `make test` (it starts one)")
    require_postgres()
    worker = CeleryWorker(
        connection.settings_dict["NAME"],
        queue=f"pool-{os.getpid()}",
        pool="prefork",
        concurrency=1,
        extra_env={"PGAPPNAME": APP_NAME},
    )
    worker.start()
    yield worker
    worker.stop()


def _sessions() -> int:
    """Sessions ever opened on the test database (PostgreSQL's own count)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def _succeeded(worker: CeleryWorker) -> int:
    return worker.log.read_bytes().count(b" succeeded in ")


def _run(worker: CeleryWorker, settlement_id: int, n: int) -> None:
    before = _succeeded(worker)
    for _ in range(n):
        settle.apply_async((settlement_id,), queue=worker.queue)
    wait_for(lambda: _succeeded(worker) >= before + n, timeout=60)


def _worker_pids() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s",
            [APP_NAME],
        )
        return [row[0] for row in cursor.fetchall()]


def test_tasks_reuse_the_pooled_session_and_survive_a_lost_one(
    prefork_worker, alice, bob, monkeypatch
):
    # given the worker's child has run one task (its pool is open)
    _run(prefork_worker, 0, 1)  # no such settlement: the task reads, settles nothing
    opened = _sessions()
    # when it runs 30 more
    _run(prefork_worker, 0, 30)
    # then they ran on the session it had: no new session per task (there were >= 30 before)
    assert _sessions() - opened <= 1
    assert _worker_pids(), "the child keeps its pooled session between tasks"

    # given that session is terminated under the worker (as a database restart does)
    with connection.cursor() as cursor:
        for pid in _worker_pids():
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_for(lambda: not _worker_pids())
    # and a trade is released whose settlement the worker will be asked for
    trade = make_trade(alice, bob)
    services.trade_mark_paid(trade_id=trade.pk, actor=bob)
    monkeypatch.setattr(transitions, "_enqueue", lambda settlement_id: None)
    services.escrow_release(trade_id=trade.pk, actor=alice)
    settlement = Settlement.objects.get(trade=trade)
    # when the worker settles it
    _run(prefork_worker, settlement.pk, 1)
    # then on its first attempt, on a fresh session from the pool
    trade.refresh_from_db()
    assert trade.state == Trade.State.COMPLETED
    log = prefork_worker.log.read_text()
    assert "Retry in" not in log, log[-3000:]
    assert "OperationalError" not in log, log[-3000:]
