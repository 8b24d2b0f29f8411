"""The read replica, on a real one: the streaming hot standby scripts/with-services.sh starts
(DATABASE_REPLICA_URL; `make test`). Its replay is paused to tell which server answered a read:
a row written on the primary meanwhile is missing from the replica only.

Transactional tests: the replica sees committed rows only; the `replica` alias mirrors the test
database on the standby (settings.DATABASES["replica"]["TEST"]["MIRROR"])."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections, transaction
from django.test import Client
from rest_framework.test import APIClient

from common import db as replica_db
from conftest import wait_for
from ledger.models import LedgerAccount
from marketplace.models import Offer
from marketplace.tests.factories import fund, make_offer
from tests.test_api import client_for

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])

BOOK = "/api/v1/offers/?side=sell&asset=BTC&fiat=EUR"


class Replica:
    """The standby: pause and resume its replay, stop and start it (as pg_ctl's user)."""

    def __init__(self) -> None:
        self.dir = Path(os.environ["TEST_SERVICES_DIR"])
        self.pg_bin = Path(os.environ["PG_BIN"])
        self.port = int(os.environ["REPLICA_PORT_TEST"])

    def sql(self, query: str) -> Any:
        with connections["replica"].cursor() as cursor:
            cursor.execute(query)
            return cursor.fetchone()[0]

    def primary_position(self) -> str:
        """The primary's WAL insert position, once it is sent to the standby. The insert
        position, not pg_current_wal_lsn() (the write position): with synchronous_commit=off
        (the test server's) a commit's record may still wait in the WAL buffers, and the standby
        would look caught up with a position before it. And then one synchronous commit, which
        flushes the WAL up to it: the WAL writer flushes only up to the last commit, so a record
        inserted after it (the background writer's snapshot of running transactions, every 15
        s) stays in the buffers, unsent, for as long as nothing else commits."""
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
            (primary,) = cursor.fetchone()
            with transaction.atomic():
                cursor.execute("SET LOCAL synchronous_commit = on")
                cursor.execute("SELECT txid_current()")  # a transaction id: a commit record
        return str(primary)

    def replayed(self, position: str) -> bool:
        return bool(self.sql(f"SELECT pg_last_wal_replay_lsn() >= '{position}'::pg_lsn"))

    def wait_caught_up(self) -> None:
        # Up to 90 s: a replay that waits on a conflicting standby query waits up to its
        # max_standby_streaming_delay (5 s in scripts/with-services.sh) before cancelling it.
        position = self.primary_position()
        wait_for(lambda: self.replayed(position), timeout=90, interval=0.1)

    def pause(self) -> None:
        self.sql("SELECT pg_wal_replay_pause()::text")
        wait_for(lambda: self.sql("SELECT pg_get_wal_replay_pause_state()") == "paused")

    def resume(self) -> None:
        self.sql("SELECT pg_wal_replay_resume()::text")

    def resumed(self) -> bool:
        """Resumes its replay, if it answers (its pool may still be reconnecting)."""
        try:
            self.resume()
        except OperationalError:
            return False
        return True

    def _pg_ctl(self, *args: str) -> None:
        command = [str(self.pg_bin / "pg_ctl"), *args]
        if os.getuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, cwd=self.dir, capture_output=True, text=True, timeout=90, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr

    def running(self) -> bool:
        command = [str(self.pg_bin / "pg_ctl"), "status", "-D", str(self.dir / "replica")]
        if os.getuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return (
            subprocess.run(command, cwd=self.dir, capture_output=True, check=False).returncode == 0
        )

    def stop(self, *, close: bool = True) -> None:
        if close:
            connections["replica"].close()
        self._pg_ctl("stop", "-D", str(self.dir / "replica"), "-m", "fast", "-w")

    def start(self) -> None:
        # the options of its first start (port, sockets, ...) come from postmaster.opts
        self._pg_ctl(
            "restart",
            "-D",
            str(self.dir / "replica"),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.dir / "replica.log"),
        )


@pytest.fixture
def replica(settings) -> Iterator[Replica]:
    if not os.environ.get("DATABASE_REPLICA_URL") or not os.environ.get("REPLICA_PORT_TEST"):
        pytest.skip("needs the streaming replica of scripts/with-services.sh (`make test`)")
    standby = Replica()
    assert standby.sql("SELECT pg_is_in_recovery()") is True, "the replica alias is no standby"
    settings.READ_REPLICA = True
    # Lag is what the lag test is about; the others read a paused standby on purpose.
    settings.REPLICA_MAX_LAG_SECONDS = 3600
    settings.REPLICA_CHECK_SECONDS = 0  # measured on every request
    settings.REPLICA_RETRY_SECONDS = 0.5
    replica_db.health.reset()
    try:
        yield standby
    finally:
        if not standby.running():
            standby.start()
        wait_for(standby.resumed, timeout=30, interval=0.2)
        standby.wait_caught_up()
        replica_db.health.reset()
        connections["replica"].close()


def book_ids(client: APIClient) -> set[int]:
    response = client.get(BOOK)
    assert response.status_code == 200, response.content
    return {row["id"] for row in response.json()["results"]}


def btc_balance(client: APIClient) -> str:
    response = client.get("/api/v1/wallets/")
    assert response.status_code == 200, response.content
    return next(w["available"] for w in response.json()["results"] if w["asset"] == "BTC")


def test_the_book_reads_the_replica_and_the_wallet_the_primary(refdata, alice, bob, replica):
    # given an offer in the book, on both servers
    fund(alice, "BTC", "1")
    first = make_offer(alice, amount="0.1")
    viewer = client_for(bob)
    replica.wait_caught_up()
    assert book_ids(viewer) == {first.pk}
    # when the replica stops replaying and the primary takes a new offer and a deposit
    replica.pause()
    second = make_offer(alice, amount="0.2")
    fund(bob, "BTC", "0.5")
    # then the book (API and page) is read from the replica: the new offer is not there yet
    assert book_ids(viewer) == {first.pk}
    page = Client()
    page.force_login(bob)
    html = page.get("/?side=buy&asset=BTC&fiat=EUR").content.decode()
    assert f"/offers/{first.pk}/" in html
    assert f"/offers/{second.pk}/" not in html
    # while the viewer's wallet is read from the primary: the deposit is there
    assert btc_balance(viewer) == "0.50000000"
    # and so is every read inside a transaction
    with transaction.atomic(), replica_db.reads_from_replica(replica_db.REPLICA):
        assert Offer.objects.filter(pk=second.pk).exists()
    # when the replay resumes, the book shows it
    replica.resume()
    wait_for(lambda: book_ids(viewer) == {first.pk, second.pk}, timeout=30)


def test_writes_go_to_the_primary_even_inside_a_replica_scope(refdata, alice, replica):
    fund(alice, "BTC", "1")
    replica.wait_caught_up()
    replica.pause()
    with replica_db.reads_from_replica(replica_db.REPLICA):
        # a row read on the replica, saved: the primary gets it (the standby refuses writes)
        account = LedgerAccount.objects.get(user=alice, asset__code="BTC")
        assert account._state.db == "replica"
        offer = make_offer(alice, amount="0.1")
        assert offer._state.db == DEFAULT_DB_ALIAS
    assert Offer.objects.using(DEFAULT_DB_ALIAS).filter(pk=offer.pk).exists()
    assert not Offer.objects.using("replica").filter(pk=offer.pk).exists()


def test_a_lagging_replica_is_skipped(refdata, alice, bob, settings, replica, caplog):
    fund(alice, "BTC", "1")
    first = make_offer(alice, amount="0.1")
    viewer = client_for(bob)
    replica.wait_caught_up()
    replica.pause()
    second = make_offer(alice, amount="0.2")
    assert book_ids(viewer) == {first.pk}  # within the bound: the (stale) replica answers
    # when the lag passes the bound (replay paused, commits on the primary go on)
    settings.REPLICA_MAX_LAG_SECONDS = 0.2

    def lag() -> float:
        fund(bob, "BTC", "0.01")  # a commit the replica has not replayed
        return float(replica.sql(replica_db.LAG_SQL))

    wait_for(lambda: lag() > 0.2, timeout=10)
    # then the book is read from the primary: the new offer shows at once
    assert book_ids(viewer) == {first.pk, second.pk}
    assert "read replica lagging" in caplog.text
    # and once it has caught up, from the replica again
    replica.resume()
    replica.wait_caught_up()
    replica.pause()
    third = make_offer(alice, amount="0.3")
    wait_for(lambda: book_ids(viewer) == {first.pk, second.pk}, timeout=10)
    assert third.pk not in book_ids(viewer)


def test_a_replica_that_is_down_falls_back_to_the_primary_and_comes_back(
    refdata, alice, bob, replica, caplog
):
    fund(alice, "BTC", "1")
    first = make_offer(alice, amount="0.1")
    viewer = client_for(bob)
    replica.wait_caught_up()
    assert book_ids(viewer) == {first.pk}
    # when the standby stops (its pooled connections die with it)
    replica.stop()
    second = make_offer(alice, amount="0.2")
    # then the book still answers, from the primary, and says so once in the log
    for _ in range(3):
        assert book_ids(viewer) == {first.pk, second.pk}
    page = Client().get("/?side=buy&asset=BTC&fiat=EUR")
    assert page.status_code == 200
    assert f"/offers/{second.pk}/" in page.content.decode()
    assert caplog.text.count("read replica unavailable") == 1
    # when it is back, the book is read there again (told by pausing its replay)
    replica.start()
    replica.wait_caught_up()
    replica.pause()
    third = make_offer(alice, amount="0.3")
    wait_for(lambda: book_ids(viewer) == {first.pk, second.pk}, timeout=30)
    assert third.pk not in book_ids(viewer)


def test_a_replica_dying_under_a_read_retries_it_on_the_primary(
    refdata, alice, bob, settings, replica, caplog
):
    fund(alice, "BTC", "1")
    first = make_offer(alice, amount="0.1")
    viewer = client_for(bob)
    replica.wait_caught_up()
    assert book_ids(viewer) == {first.pk}  # the replica's connection is open (pooled)
    # the health check passed a moment ago (cached), then the standby went away
    settings.REPLICA_CHECK_SECONDS = 60
    assert book_ids(viewer) == {first.pk}
    # (the test client keeps this thread's replica connection between requests)
    replica.stop(close=False)
    second = make_offer(alice, amount="0.2")
    # then the read fails on the replica and runs again on the primary
    assert book_ids(viewer) == {first.pk, second.pk}
    assert "read replica unavailable" in caplog.text
    assert replica_db.replica_alias() == DEFAULT_DB_ALIAS  # the breaker is open
