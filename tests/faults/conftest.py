"""Fixtures of the fault tests: processes the tests start, stop, kill and restart themselves.

- FaultWorker: a dedicated `celery worker` process on its own queue (tests.faults.worker), which a
  test may SIGKILL and restart; the session-wide worker of the root conftest.py is never killed
  (only started again, as its supervisor would, if a Redis outage made it exit).
- RedisControl / PostgresControl: stop, freeze and restart the throwaway Redis and PostgreSQL that
  scripts/with-services.sh started (same port, same options), always restored on teardown.
- ApiClient, make_traders, run_together, Watch and the ledger checks the tests share.

Everything runs on 127.0.0.1, every wait polls with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import connection, connections
from django.db.models import F, Q

from conftest import require_postgres, wait_for

ROOT = Path(__file__).resolve().parents[2]

# --- settings every fault test runs with --------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_connection_pool() -> None:
    """Each fault test starts from a fresh connection pool in this process (the live server's
    threads use it too). Threads of earlier tests that ended without closing their connection
    never gave it back; with the pool at its size, and those connections dead after a database
    restart, no new one could be made and every later test would wait for the pool's timeout."""
    for conn in connections.all(initialized_only=True):
        if conn.settings_dict.get("OPTIONS", {}).get("pool"):
            with suppress(Exception):
                conn.close_pool()


@pytest.fixture(autouse=True)
def _fault_settings(settings) -> None:
    # Limits and rate limits are not what these tests are about: hundreds of trades and requests
    # must not be refused by a tier limit or a throttle (the live server runs in this process,
    # so it sees these settings too).
    big = {"per_trade": "1000000000", "per_30_days": "1000000000"}
    settings.KYC_LIMITS_EUR = {0: big, 1: big, 2: big}
    settings.API_RATE_LIMITS = {"key": "1000000/min", "ip": "1000000/min", "auth": "1000000/min"}
    # The sweeper re-queues settlements pending for more than a second (production: 60 s).
    settings.SETTLEMENT_REQUEUE_AFTER = timedelta(seconds=1)


# --- the services of scripts/with-services.sh ---------------------------------------------------


@dataclass(frozen=True)
class Services:
    dir: Path
    pg_bin: Path
    pg_port: int
    redis_port: int

    @property
    def pgdata(self) -> Path:
        return self.dir / "pgdata"


@pytest.fixture
def services_env() -> Services:
    names = ("TEST_SERVICES_DIR", "PG_BIN", "PGPORT_TEST", "REDIS_PORT_TEST", "REDIS_URL")
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        pytest.skip(f"needs scripts/with-services.sh (missing {', '.join(missing)})")
    require_postgres()
    return Services(
        dir=Path(os.environ["TEST_SERVICES_DIR"]),
        pg_bin=Path(os.environ["PG_BIN"]),
        pg_port=int(os.environ["PGPORT_TEST"]),
        redis_port=int(os.environ["REDIS_PORT_TEST"]),
    )


# --- Celery: routing and a worker of our own ----------------------------------------------------


@contextmanager
def tasks_routed_to(queue: str) -> Iterator[None]:
    """Every task this process sends goes to `queue` (restored afterwards)."""
    from config.celery import app

    amqp = app.amqp
    saved_routes, saved_router = app.conf.task_routes, amqp.router
    app.conf.task_routes = {"*": {"queue": queue}}
    amqp.flush_routes()
    amqp.router = amqp.Router()
    try:
        yield
    finally:
        app.conf.task_routes = saved_routes
        amqp.flush_routes()
        amqp.router = saved_router


def ping_workers(timeout: float = 0.5) -> set[str]:
    """The names of the workers that answer a broadcast ping."""
    from config.celery import app

    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception:
        return set()
    return {name for reply in replies for name in reply}


def refresh_broker_clients() -> None:
    """After Redis restarted: this process's pooled broker connections still hold sockets to
    the old server, and the first use of each raises "Connection closed by server" (redis-py
    then reconnects it). Not every caller retries (the root conftest's teardown hook does not),
    so use the pool here until it answers three times in a row."""
    from config.celery import app

    def usable() -> bool:
        try:
            app.control.ping(timeout=0.1)
        except Exception:
            return False
        return True

    wait_for(lambda: all(usable() for _ in range(3)), timeout=15, interval=0.1)


class FaultWorker:
    """A real `celery worker` process of this test alone, on its own queue: SIGKILL it at will."""

    def __init__(self, *, queue: str, env: dict[str, str], concurrency: int) -> None:
        self.queue = queue
        self.extra_env = env
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None
        self.standby: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
        self.spawned = 0
        self.kills = 0
        self.logs: list[Path] = []
        self.exits: list[int | None] = []  # exit codes of the times it exited on its own
        self.startup_seconds: list[float] = []
        self.log_dir = Path(os.environ.get("TEST_SERVICES_DIR") or tempfile.gettempdir())

    @property
    def name(self) -> str:
        return f"{self.queue}@faults"

    def env(self) -> dict[str, str]:
        db = connection.settings_dict
        env = dict(os.environ)
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:{db['PORT']}"
            f"/{db['NAME']}"
        )
        env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
        env["FAULTS_QUEUE"] = self.queue
        env.update(self.extra_env)
        return env

    def _spawn(self) -> tuple[subprocess.Popen[bytes], Path, Path]:
        self.spawned += 1
        log = self.log_dir / f"{self.queue}-{self.spawned}.log"
        go = self.log_dir / f"{self.queue}-{self.spawned}.go"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.faults.worker",
                "-Q",
                self.queue,
                "-l",
                "info",
                "-P",
                "threads",
                "-c",
                str(self.concurrency),
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-n",
                self.name,
            ],
            cwd=ROOT,
            env={**self.env(), "FAULTS_GO_FILE": str(go)},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        return proc, log, go

    def prewarm(self, count: int = 1) -> None:
        """Start the next processes now, loaded but idle until start(): warm standbys (a cold
        start loads Django and Celery: seconds on a busy machine; a warm one, a fraction)."""
        while len(self.standby) < count:
            self.standby.append(self._spawn())

    def start(self, timeout: float = 60) -> None:
        assert not self.alive, "already running"
        began = time.monotonic()
        self.proc, log, go = self.standby.pop(0) if self.standby else self._spawn()
        self.logs.append(log)
        go.touch()
        wait_for(lambda: b"ready." in log.read_bytes() or not self.alive, timeout=timeout)
        if not self.alive:
            raise RuntimeError(f"fault worker died at start:\n{self.log_text()[-3000:]}")
        self.startup_seconds.append(time.monotonic() - began)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no acks, no rollback from the worker's side."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None
        self.kills += 1

    def stop(self) -> None:
        for proc, _, _ in self.standby:
            proc.kill()
            proc.wait(timeout=10)
        self.standby.clear()
        if self.alive:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def supervise(self) -> None:
        """What the production supervisor does (docker-compose: restart: unless-stopped):
        start the worker again if it exited on its own."""
        if self.proc is not None and not self.alive:
            self.exits.append(self.proc.returncode)
            self.proc = None
            self.start()

    def wait_answering(self, timeout: float = 60) -> float:
        """Until this worker, supervised, answers a broadcast ping (after a broker outage:
        reconnected, or restarted if it exited); returns how long that took."""
        began = time.monotonic()

        def answering() -> bool:
            self.supervise()
            return self.name in ping_workers()

        try:
            wait_for(answering, timeout=timeout, interval=0.5)
        except AssertionError:
            raise AssertionError(
                f"worker {self.name} (alive: {self.alive}) not answering after {timeout}s:\n"
                f"{self.log_text()[-4000:]}"
            ) from None
        return time.monotonic() - began

    def exit_reasons(self) -> list[str]:
        """The lines in which the worker said why it stopped."""
        words = ("Unrecoverable", "CRITICAL", "Error:")
        return [
            line.strip()[:300]
            for line in self.log_text().splitlines()
            if any(w in line for w in words) and "Traceback" not in line
        ][-5:]

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())


@pytest.fixture
def fault_worker(services_env: Services) -> Iterator[Callable[..., FaultWorker]]:
    """make(concurrency=..., **env): a worker of this test's own queue (not started yet); this
    process routes every task it sends to that queue while the test runs."""
    queue = f"faults-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    made: list[FaultWorker] = []

    def make(*, concurrency: int = 2, **env: Any) -> FaultWorker:
        worker = FaultWorker(
            queue=queue, env={k: str(v) for k, v in env.items()}, concurrency=concurrency
        )
        made.append(worker)
        return worker

    with tasks_routed_to(queue):
        yield make
    for worker in made:
        worker.stop()


# --- Redis and PostgreSQL -----------------------------------------------------------------------


class RedisControl:
    """The test Redis of scripts/with-services.sh: stop it, freeze it, start it again on the
    same port with the same options."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.port = services.redis_port
        self.pidfile = services.dir / "redis.pid"

    def ping(self) -> bool:
        import redis

        try:
            client = redis.Redis(
                host="127.0.0.1", port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5
            )
            return bool(client.ping())
        except Exception:
            return False
        finally:
            client.close()

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """`redis-cli shutdown nosave`: the server is gone, with every queued message."""
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        wait_for(lambda: not self.ping(), timeout=10)

    def start(self) -> None:
        """As scripts/with-services.sh starts it (its pidfile says it is ours)."""
        self.pidfile.unlink(missing_ok=True)
        subprocess.run(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                str(self.services.dir),
                "--pidfile",
                str(self.pidfile),
                "--logfile",
                str(self.services.dir / "redis.log"),
            ],
            check=True,
            timeout=10,
        )
        wait_for(lambda: self.pid() and self.ping(), timeout=10)
        refresh_broker_clients()

    def freeze(self) -> None:
        pid = self.pid()
        assert pid, "no redis pid"
        os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        pid = self.pid()
        if pid:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def ensure_up(self) -> None:
        self.thaw()
        if not self.ping():
            self.start()


@pytest.fixture
def redis_control(services_env: Services) -> Iterator[RedisControl]:
    """Always leaves Redis up again (tests restore it themselves too: the root conftest's
    teardown hook talks to the broker before fixtures are torn down), and waits until every
    worker that answered a ping before the test answers again. The session-wide worker of the
    root conftest.py is supervised as production's would be: started again if it exited during
    the outage (Celery's consumer can exit on a lost Redis connection; see test_broker_outage)."""
    from conftest import RUNNING_WORKERS

    control = RedisControl(services_env)
    assert control.ping(), "the test Redis is not up"
    before = ping_workers()
    try:
        yield control
    finally:
        control.ensure_up()
        for worker in RUNNING_WORKERS:
            if worker.proc is not None and worker.proc.poll() is not None:
                print(f"\n[redis-control] the session worker exited ({worker.proc.returncode})")
                worker.start()
        if before:
            wait_for(lambda: before <= ping_workers(), timeout=90, interval=0.5)


class PostgresControl:
    """The test PostgreSQL of scripts/with-services.sh (as the `postgres` user when root)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def _pg_ctl(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        command = [str(self.services.pg_bin / "pg_ctl"), *args]
        if os.getuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        # cwd: the postgres user may not be able to read ours.
        return subprocess.run(
            command,
            cwd=self.services.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def is_running(self) -> bool:
        return self._pg_ctl("status", "-D", str(self.services.pgdata)).returncode == 0

    def restart(self) -> float:
        """pg_ctl restart -m fast (the options of the first start come from postmaster.opts):
        open sessions are terminated, in-flight transactions roll back. Returns its duration."""
        began = time.monotonic()
        result = self._pg_ctl(
            "restart",
            "-D",
            str(self.services.pgdata),
            "-m",
            "fast",
            "-w",
            "-t",
            "60",
            "-l",
            str(self.services.dir / "pg.log"),
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return time.monotonic() - began

    def stop(self) -> None:
        """pg_ctl stop -m fast: down until ensure_up() starts it again."""
        result = self._pg_ctl("stop", "-D", str(self.services.pgdata), "-m", "fast", "-w")
        assert result.returncode == 0, result.stdout + result.stderr

    def ensure_up(self) -> None:
        if self.is_running():
            return
        options = (
            f"-p {self.services.pg_port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.services.dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        result = self._pg_ctl(
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.services.pgdata),
            "-l",
            str(self.services.dir / "pg.log"),
            "-o",
            options,
        )
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def postgres_control(services_env: Services) -> Iterator[PostgresControl]:
    control = PostgresControl(services_env)
    try:
        yield control
    finally:
        control.ensure_up()
        connections.close_all()  # this thread's connection died with the old server


# --- traders, HTTP, threads ---------------------------------------------------------------------


TRADER_PASSWORD = "demo-pass-123"


def make_traders(prefix: str, count: int) -> list[tuple[Any, str]]:
    """`count` users with profiles and API tokens, in three bulk inserts: [(user, token)]. Their
    password (hashed once) is TRADER_PASSWORD: they confirm releases with it (no 2FA)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from rest_framework.authtoken.models import Token

    from accounts.models import Profile

    User = get_user_model()
    hashed = make_password(TRADER_PASSWORD)
    users = User.objects.bulk_create(
        [
            User(username=f"{prefix}{i}", email=f"{prefix}{i}@example.test", password=hashed)
            for i in range(count)
        ]
    )
    Profile.objects.bulk_create([Profile(user=user) for user in users])
    tokens = Token.objects.bulk_create(
        [Token(user=user, key=Token.generate_key()) for user in users]
    )
    return [(user, token.key) for user, token in zip(users, tokens, strict=True)]


def token_for(user: Any) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.get_or_create(user=user)[0].key


@dataclass
class Reply:
    status: int  # 0: no HTTP answer at all (connection refused, reset or timed out)
    data: Any
    seconds: float
    content_type: str = ""
    error: str = ""

    @property
    def is_json_error(self) -> bool:
        return (
            self.content_type.startswith("application/json")
            and isinstance(self.data, dict)
            and isinstance(self.data.get("error"), dict)
            and bool(self.data["error"].get("message"))
        )

    @property
    def code(self) -> str:
        return self.data["error"]["code"] if self.is_json_error else ""

    @property
    def message(self) -> str:
        return self.data["error"]["message"] if self.is_json_error else ""


class ApiClient:
    """A bot with a token, over HTTP; every write carries a fresh Idempotency-Key unless given."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base = f"{base_url}/api/v1"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"

    def call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        key: str | None = None,
        timeout: float = 30,
    ) -> Reply:
        headers = {}
        if method != "GET":
            headers["Idempotency-Key"] = key or str(uuid.uuid4())
        began = time.monotonic()
        try:
            response = self.http.request(
                method, f"{self.base}{path}", json=body, headers=headers, timeout=timeout
            )
        except requests.RequestException as exc:
            return Reply(0, None, time.monotonic() - began, error=f"{type(exc).__name__}: {exc}")
        seconds = time.monotonic() - began
        content_type = response.headers.get("Content-Type", "")
        try:
            data = response.json()
        except ValueError:
            data = response.text[:500]
        return Reply(response.status_code, data, seconds, content_type)

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.call("GET", path, **kw)

    def post(self, path: str, body: dict | None = None, **kw: Any) -> Reply:
        return self.call("POST", path, body or {}, **kw)


def server_idle() -> bool:
    """No live-server thread is still serving a connection (one whose client gave up may still
    be working; close the clients' keep-alive sessions first)."""
    return not any(
        "process_request_thread" in thread.name and thread.is_alive()
        for thread in threading.enumerate()
    )


def require(condition: object, message: str) -> None:
    """A precondition of an xfail test: pytest.fail, not AssertionError, so that it is never
    mistaken for the expected failure (those tests say xfail(raises=AssertionError))."""
    if not condition:
        pytest.fail(message)


def wait_quietly(predicate: Callable[[], object], timeout: float) -> bool:
    """wait_for that says whether it happened instead of raising (for clean-up code)."""
    try:
        wait_for(predicate, timeout=timeout)
    except AssertionError:
        return False
    return True


def run_together(calls: list[Callable[[], Any]], *, timeout: float = 120) -> list[Any]:
    """Each call on its own thread (and database connection), released at once by a barrier;
    an exception is returned in the call's place."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=60)
            results[i] = call()
        except Exception as exc:
            results[i] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a call hung (deadlock?)"
    return results


@dataclass
class Watch:
    """Polls check() on its own thread and connection until stopped; collects what it found."""

    check: Callable[[], list[str]]
    interval: float = 0.005
    found: list[str] = field(default_factory=list)
    polls: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.found += self.check()
                self.polls += 1
                self._stop.wait(self.interval)
        finally:
            connections.close_all()

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# --- ledger checks ------------------------------------------------------------------------------


def overdrawn_accounts() -> list[str]:
    """Accounts (the outside world excepted) whose columns break the CHECK constraints: a
    negative column, or posted debits plus pending debits above posted credits."""
    from ledger.models import LedgerAccount

    bad = LedgerAccount.objects.exclude(kind=LedgerAccount.Kind.WORLD).filter(
        Q(debits_posted__gt=F("credits_posted") - F("debits_pending"))
        | Q(debits_pending__lt=0)
        | Q(debits_posted__lt=0)
        | Q(credits_pending__lt=0)
        | Q(credits_posted__lt=0)
    )
    return [
        f"{a.code}: cp={a.credits_posted} dp={a.debits_posted} dpe={a.debits_pending}" for a in bad
    ]


def assert_ledger_verifies() -> None:
    """Seal whatever is unsealed, then the whole verify_ledger: chain, signatures, replayed
    balances, each asset summing to zero."""
    from ledger.replay import verify_ledger
    from ledger.services import ledger_seal_pending

    ledger_seal_pending()
    report = verify_ledger()
    assert report.ok, report.errors[:10]
    assert report.unsealed == 0
    assert not overdrawn_accounts()


def assert_settled_once(trades: list[Any]) -> None:
    """Each trade completed exactly once: one payout, one fee, one completion event, its
    settlement done in one committed attempt, its escrow account empty."""
    from escrow.models import EscrowEvent, Settlement, Trade
    from ledger.models import LedgerAccount, Transfer

    ids = [t.pk for t in trades]
    states = dict(Trade.objects.filter(pk__in=ids).values_list("pk", "state"))
    assert set(states.values()) == {Trade.State.COMPLETED}, _count(states.values())
    for kind in ("trade_payout", "trade_fee"):
        per_trade = _count(
            Transfer.objects.filter(reference__in=ids, kind=kind).values_list(
                "reference", flat=True
            )
        )
        assert per_trade == dict.fromkeys(ids, 1), (kind, {k: v for k, v in per_trade.items()})
    completions = _count(
        EscrowEvent.objects.filter(trade_id__in=ids, new_state=Trade.State.COMPLETED).values_list(
            "trade_id", flat=True
        )
    )
    assert completions == dict.fromkeys(ids, 1)
    settlements = Settlement.objects.filter(trade_id__in=ids)
    assert settlements.count() == len(ids)
    assert set(settlements.values_list("status", "attempts")) == {(Settlement.Status.DONE, 1)}
    escrow = LedgerAccount.objects.filter(code__in=[f"escrow:trade:{i}" for i in ids])
    for account in escrow:
        assert account.balance == 0, account.code
        assert account.debits_pending == account.credits_pending == 0, account.code


def expected_user_balances(trades: list[Any], deposits: dict[int, Decimal]) -> dict[int, Decimal]:
    """What each user's available balance must be once these trades completed."""
    expected = dict(deposits)
    for trade in trades:
        expected[trade.seller_id] = expected.get(trade.seller_id, Decimal(0)) - trade.hold_amount
        expected[trade.buyer_id] = expected.get(trade.buyer_id, Decimal(0)) + trade.buyer_receives
    return expected


def assert_user_balances(asset: str, expected: dict[int, Decimal]) -> None:
    from ledger.models import LedgerAccount

    actual = {
        a.user_id: a.available
        for a in LedgerAccount.objects.filter(
            kind=LedgerAccount.Kind.USER, asset__code=asset, user_id__in=list(expected)
        )
    }
    assert actual == expected


def _count(values: Any) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return out
