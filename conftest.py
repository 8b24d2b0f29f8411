"""Shared fixtures: reference data, traders, and a real Celery worker process over Redis."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from accounts.tests.factories import UserFactory
from marketplace.tests.factories import reference_data

ROOT = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    """The translation catalogues are built, not committed (common.i18n): compile them once
    before any test renders a page (each xdist worker finds them fresh and skips)."""
    from common.i18n import compile_catalogs

    compile_catalogs(ROOT / "locale")


@pytest.fixture(autouse=True)
def _no_real_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test asks a real resolver: a webhook host name (the API's schema examples, a bot's
    URL) resolves through this stub, to a documentation address that nothing connects to.
    notifications/tests has a fuller table of its own."""
    from notifications import egress

    def resolve(host: str, port: int) -> list[str]:
        if host.endswith(".example.com") or host.endswith(".example"):
            return ["93.184.216.34"]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(egress, "resolve", resolve)


@pytest.fixture
def refdata(db: None) -> None:
    reference_data()


@pytest.fixture
def alice(refdata: None):
    return UserFactory(username="alice")


@pytest.fixture
def bob(refdata: None):
    return UserFactory(username="bob")


@pytest.fixture
def carol(refdata: None):
    return UserFactory(username="carol")


def require_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: run through `make test` (it starts one)")


def broker_messages(queue_name: str) -> list[tuple[str, Any, Any]]:
    """The messages waiting in a queue of the test Redis broker that no worker reads, taken off
    it: (task name, args, the ops_context header) each, in order."""
    from config.celery import app

    got = []
    with app.connection_for_read() as conn:
        inbox = conn.SimpleQueue(queue_name)
        while True:
            try:
                message = inbox.get(block=False)
            except inbox.Empty:
                break
            args, _kwargs, _embed = message.decode()
            got.append((message.headers["task"], args, message.headers.get("ops_context")))
            message.ack()
        inbox.close()
    return got


def wait_for(
    predicate: Callable[[], object], *, timeout: float = 30.0, interval: float = 0.05
) -> object:
    """Poll until predicate() is truthy or the deadline passes (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class CeleryWorker:
    """A real `celery worker` process on the test database and the test Redis."""

    def __init__(
        self,
        db_name: str,
        *,
        queue: str | None = None,
        extra_env: dict[str, str] | None = None,
        pool: str = "threads",
        concurrency: int = 4,
    ) -> None:
        self.db_name = db_name
        # threads by default (quick to start); "prefork" is what production runs
        self.pool, self.concurrency = pool, concurrency
        # A test's own worker: only its queue, with its own settings (e.g. a real SMTP server).
        self.queue = queue
        self.extra_env = extra_env or {}
        self.name = f"test-{os.getpid()}{'-' + queue if queue else ''}@%h"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = (
            Path(os.environ.get("TEST_SERVICES_DIR") or tempfile.gettempdir())
            / f"celery-worker-{os.getpid()}{'-' + queue if queue else ''}.log"
        )

    def env(self) -> dict[str, str]:
        from django.conf import settings

        db = settings.DATABASES["default"]
        env = dict(os.environ)
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:{db['PORT']}/{self.db_name}"
        )
        env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        from config.celery import app

        if self.queue is None:
            app.control.purge()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-l",
                "info",
                "-P",
                self.pool,
                "-c",
                str(self.concurrency),
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-n",
                self.name,
                *(["-Q", self.queue] if self.queue else []),
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: b"ready." in self.log.read_bytes() or self._died(), timeout=60, interval=0.1
        )
        if self._died():
            raise RuntimeError(f"celery worker died:\n{self.log.read_text()[-3000:]}")

    def quiesce(self, timeout: float = 30.0) -> None:
        """Drop queued messages and wait until the worker runs no task, so that the test
        database can be flushed without racing a task that is still writing to it."""
        from config.celery import app

        def fresh_connections() -> None:
            # A broker connection that a Redis restart (the broker-outage tests) closed under
            # this process: the next attempt opens new ones.
            from kombu import pools

            with contextlib.suppress(Exception):
                app.pool.force_close_all()
            # A closed pool refuses to lend: kombu's registry and Celery's handle start afresh.
            pools.reset()
            app._pool = None
            # Celery keeps its own handle on the producer pool that `reset` just closed (the
            # control mailbox and `apply_async` borrow from it): drop it, or every later
            # publish and ping fails with "Acquire on closed pool".
            app.amqp._producer_pool = None
            with contextlib.suppress(AttributeError):
                del app.control.mailbox.producer_pool  # a cached copy of the same handle

        from redis.exceptions import ConnectionError as RedisConnectionError

        lost = (OSError, RedisConnectionError, RuntimeError)
        try:
            app.control.purge()
        except lost:
            fresh_connections()
            app.control.purge()
        name = self.name.replace("%h", socket.gethostname())

        def idle() -> bool:
            if self._died():
                return True
            try:
                inspect = app.control.inspect(destination=[name], timeout=1, limit=1)
                active = inspect.active() or {}
            except lost:
                fresh_connections()
                return False
            return not any(active.values()) and name in active

        wait_for(idle, timeout=timeout, interval=0.1)

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


RUNNING_WORKERS: list[CeleryWorker] = []


@pytest.fixture
def celery_worker_process(_celery_worker_session, transactional_db) -> CeleryWorker:
    """The session's real worker process, for a transactional test."""
    return _celery_worker_session


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    # Before any fixture is torn down (so before a transactional test's database flush): let the
    # session worker finish what this test queued, or its writes would race the TRUNCATE.
    marker = item.get_closest_marker("django_db")
    if RUNNING_WORKERS and marker is not None and marker.kwargs.get("transaction"):
        from common.outbox import publish_pending

        # What this process still holds for the worker goes out first (a merged message waits
        # for its linger): else a task could start after the worker looked idle, mid-flush.
        if not publish_pending():
            warnings.warn("the outbox publisher did not empty in time", stacklevel=1)
        for worker in RUNNING_WORKERS:
            try:
                worker.quiesce()
            except Exception as exc:
                # Raising here would skip the fixtures' teardown (no database flush, connections
                # kept) and fail every later test with "previous item was not torn down".
                warnings.warn(f"could not quiesce {worker.name}: {exc!r}", stacklevel=1)
    yield


@pytest.fixture(scope="session")
def _celery_worker_session(django_db_setup, django_db_blocker) -> Iterator[CeleryWorker]:
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs Redis: run through `make test` (it starts one)")
    with django_db_blocker.unblock():
        require_postgres()
        name = connection.settings_dict["NAME"]
    worker = CeleryWorker(name)
    worker.start()
    RUNNING_WORKERS.append(worker)
    yield worker
    RUNNING_WORKERS.remove(worker)
    worker.stop()


@pytest.fixture
def anvil() -> Iterator[Any]:
    """A fresh local Ethereum node (Anvil) for this test; stopped afterwards."""
    from tests.anvil import AnvilNode

    node = AnvilNode().start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def evm(anvil: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The chain switched on for this test: `anvil` with TestUSD deployed as USDT, a hot wallet
    holding 100 ETH and 1,000,000 USDT, and the deposit keys; settings and the environment (for
    workers this test starts: `evm.env()`) point at it. Returns tests.anvil.ChainSetup."""
    from tests.anvil import chain_setup

    setup = chain_setup(anvil)
    for name, value in setup.env().items():
        monkeypatch.setenv(name, value)
    settings.EVM_RPC_URL = anvil.url
    settings.EVM_XPUB = setup.xpub
    settings.EVM_HOT_WALLET_ADDRESS = setup.hot.address
    settings.EVM_ASSETS = {
        "ETH": {"kind": "native"},
        "USDT": {"kind": "erc20", "contract": setup.token},
    }
    return setup


# --- a move's news (notifications.tasks.announce_trade_moves) ---
@pytest.fixture
def trade_news_inline(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A request's move has its news (notifications, email and webhook rows, badges) written
    when it commits, in this process, through the worker's own task, instead of through the
    broker: tests of what the news says read the rows at once. Returns the event ids."""
    from notifications import listeners, tasks

    announced: list[int] = []

    def now(event_ids: list[int]) -> None:
        announced.extend(event_ids)
        tasks.announce_trade_moves(event_ids)

    monkeypatch.setattr(listeners, "_announce_later", now)
    return announced


# --- email and Telegram (notifications.outbound) ---
@pytest.fixture
def outbound_inline(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Emails and Telegram messages are sent when their row commits, in this process, through
    the task's own service (as the worker would), instead of through the broker: tests of who
    gets which email read `mail.outbox`. Returns the ids sent."""
    from notifications import outbound

    sent: list[int] = []

    def deliver(message_ids: list[int]) -> None:
        sent.extend(message_ids)
        outbound.outbound_deliver_many(message_ids=message_ids)

    monkeypatch.setattr(outbound, "_enqueue_many", deliver)
    return sent


# --- end ---
