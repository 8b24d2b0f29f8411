#!/usr/bin/env python
"""Load: many traders completing whole trades over the REST API, against the production shape.

    scripts/with-services.sh .venv/bin/python bench/load.py --seconds 60 --traders 40

1. A fresh database on the throwaway server (migrations seed the reference data: assets, fiats,
   payment methods, the price index); through the services: T traders, each with an API token
   (accounts.services.token_rotate), a BTC deposit (ledger.services.deposit_credit) and
   --offers-each sell offers of BTC for EUR (half at a fixed price, half floating on the index).
2. Real processes on 127.0.0.1, all on that database and the server's Redis: gunicorn
   (config.wsgi, --gunicorn-workers sync workers), a Celery worker (prefork) and Celery beat;
   settings bench.settings (config.settings.local with DEBUG off, a dummy email backend). The
   API's rate limits are lifted: every simulated trader comes from 127.0.0.1, which the
   per-IP limit (1200/min) would otherwise throttle after 20 requests a second.
3. Trading, for --seconds: one asyncio process (aiohttp), T concurrent traders, each looping:
   browse the book (GET /offers/?side=sell&asset=BTC&fiat=EUR) -> take 0.001 BTC of a random
   offer that is not theirs -> mark paid -> the offer's maker releases -> poll the trade every
   --poll-interval s until `completed` -> GET /wallets/. At the end every trader finishes the
   trade in hand; released trades not yet completed are polled for up to --grace s more
   (the sweeper re-queues a settlement after 60 s): what is still not completed is lost.
4. The same concurrency against a trivial authenticated DRF endpoint (GET
   /api/v1/ledger/public-key/: the same middleware, token auth and throttles, one small query)
   and against the order book, alternating, --compare-rounds rounds of --compare-seconds each:
   the book's throughput as a ratio to the trivial one.
4b. --compare-asgi (on by default): uvicorn (config.asgi, as many workers as gunicorn) started
   beside gunicorn on the same database; the yardstick, the trivial endpoint, the API book and
   the HTML book against both, alternated, --compare-rounds rounds of --compare-seconds each,
   with req/s and CPU per request (the server's and PostgreSQL's): which server serves plain
   HTTP (issue 18). bench/live.py runs the same compare_servers.
5. Everything stopped; the ledger sealed (ledger_seal_pending) and verify_ledger() run; each
   asset's balances must sum to zero; trades by state, settlements; queries per request of the
   GET endpoints (CaptureQueriesContext around Django's test client, in this process).

Not a test: nothing asserts a time. Writes its section of BENCHMARKS.md (--no-write: don't).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as C

DB = "bench_load"
AMOUNT = "0.001"  # BTC per trade: 80-90 EUR, within tier 0's per-trade limit
BOOK = "/api/v1/offers/?side=sell&asset=BTC&fiat=EUR"
TRIVIAL = "/api/v1/ledger/public-key/"
YARDSTICK = "/api/v1/bench/select-1/"  # bench/urls.py: a bare view, SELECT 1 (bench.settings)
HTML_BOOK = "/?side=buy&asset=BTC&fiat=EUR"  # the browser's order book (the sell offers)
# The comparison's endpoints, each measured in alternating rounds against the same server; every
# figure is reported as a ratio to the first, the yardstick.
COMPARE = [
    ("yardstick", YARDSTICK, "yardstick: GET /api/v1/bench/select-1/"),
    ("trivial", TRIVIAL, "trivial: GET /ledger/public-key/"),
    ("book", BOOK, "GET /offers/ (book)"),
    ("html", HTML_BOOK, "GET / (HTML book)"),
]
# Targets of issue 17 (ratios to the yardstick in the same run).
RATIO_TARGETS = {"trivial": 0.5, "book": 0.35, "html": 0.25}
LIFTED = "1000000/s"  # API_RATE_LIMIT_KEY / _IP for the bench's server processes
WAIT_QUIET = 0.0
BASELINE: dict[str, Any] = {}  # --baseline: an earlier run's results, shown beside this one's

# --- setup -------------------------------------------------------------------------------------


# The traders' account password: a release is confirmed with it (the fund password, no 2FA).
FUND_PASSWORD = "bench-load-pass-1"  # noqa: S105 (a throwaway bench account's)


def seed(traders: int, offers_each: int) -> dict[str, Any]:
    """Traders with a token, a deposit and sell offers, through the services."""
    from django.contrib.auth import get_user_model

    from accounts.services import token_rotate
    from ledger import services as ledger
    from marketplace import services as market

    User = get_user_model()
    users: list[dict[str, Any]] = []
    offers = 0
    for k in range(traders):
        user = User.objects.create_user(
            f"load_trader_{k:03d}", f"trader{k}@bench.test", password=FUND_PASSWORD
        )
        token = token_rotate(user=user).key
        ledger.deposit_credit(
            user=user, asset_code="BTC", amount="30", reference="bench-load", actor=None
        )
        for j in range(offers_each):
            floating = (k + j) % 2 == 1
            market.offer_create(
                maker=user,
                side="sell",
                asset="BTC",
                fiat="EUR",
                price_type="floating" if floating else "fixed",
                price=None if floating else str(80000 + 10 * ((k * offers_each + j) % 100)),
                margin_percent=f"{(k + j) % 5 * 0.5:.1f}" if floating else None,
                amount=str(Decimal(25) / offers_each),
                min_fiat="10",
                max_fiat="40000",
                payment_methods=["sepa", "revolut"] if j % 2 else ["sepa"],
                payment_window_minutes=180,
                terms="Bench offer.",
            )
            offers += 1
        users.append({"username": user.username, "token": token})
    return {"users": users, "offers": offers}


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A child process in its own session (so its own workers stop with it), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log = logdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=C.ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"    {self.name} did not stop in {timeout:.0f} s: SIGKILL", flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # Its process group: anything it left behind (a worker that outlived its master).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def start_services(args: Any, logdir: Path) -> tuple[dict[str, Service], str]:
    env = dict(os.environ)  # DATABASE_URL, DJANGO_SETTINGS_MODULE etc. set by django_setup
    py = sys.executable
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    services = {
        "gunicorn": Service(
            "gunicorn",
            [
                py,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(args.gunicorn_workers),
                "--threads",
                str(args.gunicorn_threads),
                "--timeout",
                "120",
                "--backlog",
                "2048",
            ],
            env,
            logdir,
        ),
        "worker": Service(
            "worker",
            [
                py,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-l",
                "info",
                "-c",
                str(args.celery_concurrency),
                "-n",
                f"bench-load-{os.getpid()}@%h",
            ],
            env,
            logdir,
        ),
        "beat": Service(
            "beat",
            [
                py,
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "-l",
                "info",
                "--schedule",
                str(logdir / "celerybeat-schedule"),
            ],
            env,
            logdir,
        ),
    }
    for svc in services.values():
        svc.start()
    deadline = time.monotonic() + 90
    ready: set[str] = set()
    while ready != set(services):
        for name, svc in services.items():
            if not svc.alive():
                raise RuntimeError(f"{name} died at start:\n{svc.log_tail()}")
        if "gunicorn" not in ready and _http_ok(base + TRIVIAL):
            ready.add("gunicorn")
        if "worker" not in ready and b" ready." in services["worker"].log.read_bytes():
            ready.add("worker")
        if "beat" not in ready and b"beat: Starting" in services["beat"].log.read_bytes():
            ready.add("beat")
        if time.monotonic() > deadline:
            missing = set(services) - ready
            raise RuntimeError(f"not ready in 90 s: {missing}")
        time.sleep(0.2)
    return services, base


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - our own 127.0.0.1
            return resp.status == 200
    except OSError:
        return False


def stop_services(services: dict[str, Service]) -> None:
    # beat first (no new periodic work), then the web, then the worker (finishes its task).
    for name in ("beat", "uvicorn", "gunicorn", "worker"):
        svc = services.get(name)
        if svc is not None:
            svc.stop()


# --- CPU per role ------------------------------------------------------------------------------


class RoleCpu:
    """CPU seconds of each role's process tree (own + reaped children, /proc), the client (this
    process only), PostgreSQL (the postmaster's tree) and Redis (daemonized: its pid file); the
    machine's busy cores; others = busy - all of ours."""

    def __init__(self, services: dict[str, Service]) -> None:
        self.roots: dict[int, str] = {svc.pid: name for name, svc in services.items()}
        pm = C.CpuSplit.postmaster()
        if pm:
            self.roots[pm] = "postgres"
        rd = os.environ.get("TEST_SERVICES_DIR")
        if rd:
            with contextlib.suppress(OSError, ValueError):
                self.roots[int(Path(rd, "redis.pid").read_text().split()[0])] = "redis"
        self._busy = C.CpuMeter()
        self._t0 = 0.0
        self._c0: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        procs = C.CpuSplit._procs()
        out: dict[str, float] = defaultdict(float)
        t = os.times()
        out["client"] = t.user + t.system
        for pid, (_ppid, own, reaped) in procs.items():
            p, depth = pid, 0
            while p > 1 and depth < 64:
                if p in self.roots:
                    out[self.roots[p]] += own + reaped
                    break
                p = procs[p][0] if p in procs else 0
                depth += 1
        return dict(out)

    def start(self) -> None:
        self._busy.start()
        self._c0 = self._read()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        c1 = self._read()
        wall = max(1e-9, time.monotonic() - self._t0)
        busy = self._busy.stop()
        roles = {k: max(0.0, (c1.get(k, 0.0) - self._c0.get(k, 0.0)) / wall) for k in c1}
        roles["others"] = max(0.0, busy - sum(roles.values()))
        roles["machine"] = busy
        return roles


# --- the HTTP client ---------------------------------------------------------------------------


@dataclass
class Recorder:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, name: str, seconds: float, error: str | None = None) -> None:
        self.latencies[name].append(seconds)
        if error:
            self.errors[name] += 1
            if len(self.error_samples[name]) < 5:
                self.error_samples[name].append(error)

    def summary(self, seconds: float) -> dict[str, dict[str, float]]:
        return {
            name: stats(lat, self.errors[name], seconds) for name, lat in self.latencies.items()
        }


def stats(latencies: list[float], errors: int, seconds: float) -> dict[str, float]:
    xs = sorted(latencies)
    n = len(xs)

    def pct(p: float) -> float:
        return xs[min(n - 1, int(p * n))] * 1000 if n else float("nan")

    return {
        "count": n,
        "rps": n / seconds if seconds else 0.0,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": xs[-1] * 1000 if n else float("nan"),
        "errors": errors,
    }


class Api:
    def __init__(self, session: Any, base: str, rec: Recorder | None) -> None:
        self.session, self.base, self.rec = session, base, rec

    async def call(
        self, name: str, method: str, path: str, token: str, body: Any = None
    ) -> tuple[int, Any]:
        import aiohttp

        headers = {"Authorization": f"Token {token}"}
        if method == "POST":
            headers["Idempotency-Key"] = uuid.uuid4().hex
        t0 = time.perf_counter()
        try:
            async with self.session.request(
                method, self.base + path, json=body, headers=headers
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            if self.rec:
                self.rec.add(name, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
            return 0, None
        elapsed = time.perf_counter() - t0
        ok = 200 <= status < 300
        if self.rec:
            self.rec.add(name, elapsed, None if ok else f"{status} {raw[:300]!r}")
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = None
        return status, data


def _session(concurrency: int) -> Any:
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency + 10),
        timeout=aiohttp.ClientTimeout(total=120),
    )


@dataclass
class TradeLog:
    started: int = 0  # takes answered 201
    released: dict[int, float] = field(default_factory=dict)  # trade id -> release answered at
    token_of: dict[int, str] = field(default_factory=dict)  # trade id -> the buyer's token
    completed: dict[int, float] = field(default_factory=dict)  # trade id -> completion seen at
    polls: int = 0
    aborted: int = 0  # a step failed: the trade left in its state (counted in errors)
    no_offer: int = 0


async def trader(
    api: Api,
    me: dict[str, str],
    tokens: dict[str, str],
    log: TradeLog,
    stop_at: float,
    poll_interval: float,
    poll_timeout: float,
) -> None:
    rng = random.Random(me["username"])  # noqa: S311 - load pattern, not security
    while time.monotonic() < stop_at:
        status, book = await api.call("GET /offers/ (book)", "GET", BOOK, me["token"])
        if status != 200:
            await asyncio.sleep(0.5)
            continue
        choices = [
            o
            for o in book["results"]
            if o["maker"]["username"] != me["username"]
            and Decimal(o["available"]) >= Decimal("0.01")
        ]
        if not choices:
            log.no_offer += 1
            await asyncio.sleep(0.5)
            continue
        offer = rng.choice(choices)
        seller_token = tokens[offer["maker"]["username"]]
        status, trade = await api.call(
            "POST /offers/{id}/take/",
            "POST",
            f"/api/v1/offers/{offer['id']}/take/",
            me["token"],
            {"amount": AMOUNT},
        )
        if status != 201:
            log.aborted += 1
            continue
        log.started += 1
        tid = trade["id"]
        status, _ = await api.call(
            "POST /trades/{id}/mark-paid/", "POST", f"/api/v1/trades/{tid}/mark-paid/", me["token"]
        )
        if status != 200:
            log.aborted += 1
            continue
        status, _ = await api.call(
            "POST /trades/{id}/release/",
            "POST",
            f"/api/v1/trades/{tid}/release/",
            seller_token,
            {"password": FUND_PASSWORD},
        )
        if status != 200:
            log.aborted += 1
            continue
        log.released[tid] = time.monotonic()
        log.token_of[tid] = me["token"]
        give_up = time.monotonic() + poll_timeout
        while time.monotonic() < give_up:
            await asyncio.sleep(poll_interval)
            status, got = await api.call(
                "GET /trades/{id}/ (poll)", "GET", f"/api/v1/trades/{tid}/", me["token"]
            )
            log.polls += 1
            if status == 200 and got["state"] == "completed":
                log.completed[tid] = time.monotonic()
                break
        await api.call("GET /wallets/", "GET", "/api/v1/wallets/", me["token"])


async def grace_poll(base: str, log: TradeLog, grace: float) -> float:
    """Poll every released trade not seen completed (outside the figures) until all are, or
    `grace` seconds pass. Returns the seconds it took."""
    t0 = time.monotonic()
    async with _session(20) as session:
        api = Api(session, base, None)
        while True:
            left = [t for t in log.released if t not in log.completed]
            if not left or time.monotonic() - t0 > grace:
                break
            for tid in left:
                status, got = await api.call(
                    "grace", "GET", f"/api/v1/trades/{tid}/", log.token_of[tid]
                )
                if status == 200 and got["state"] == "completed":
                    log.completed[tid] = time.monotonic()
            await asyncio.sleep(1.0)
    return time.monotonic() - t0


async def run_trading(
    base: str, users: list[dict[str, str]], seconds: float, args: Any
) -> dict[str, Any]:
    rec, log = Recorder(), TradeLog()
    tokens = {u["username"]: u["token"] for u in users}
    async with _session(len(users)) as session:
        api = Api(session, base, rec)
        t0 = time.monotonic()
        stop_at = t0 + seconds
        await asyncio.gather(
            *(
                trader(api, u, tokens, log, stop_at, args.poll_interval, args.poll_timeout)
                for u in users
            )
        )
        drained = time.monotonic() - t0
    in_window = sum(1 for t in log.completed.values() if t <= stop_at)
    lags = sorted(log.completed[t] - log.released[t] for t in log.completed)
    return {
        "seconds": seconds,
        "drained_s": drained,
        "endpoints": rec.summary(drained),
        "errors": sum(rec.errors.values()),
        "error_samples": dict(rec.error_samples),
        "started": log.started,
        "released": len(log.released),
        "completed_in_window": in_window,
        "completed_by_traders": len(log.completed),
        "rate": in_window / seconds,
        "lag_p50_ms": lags[len(lags) // 2] * 1000 if lags else float("nan"),
        "lag_p99_ms": lags[min(len(lags) - 1, int(0.99 * len(lags)))] * 1000
        if lags
        else float("nan"),
        "polls_per_trade": log.polls / max(1, len(log.released)),
        "aborted": log.aborted,
        "no_offer": log.no_offer,
        "_log": log,
    }


async def hammer(
    base: str, path: str, name: str, tokens: list[str], concurrency: int, seconds: float
) -> dict[str, float]:
    """`concurrency` clients GET `path` back to back for `seconds` (after a 2 s warm-up)."""
    rec = Recorder()
    async with _session(concurrency) as session:
        warm = Api(session, base, None)
        api = Api(session, base, rec)

        async def client(i: int, until: float, a: Api) -> None:
            token = tokens[i % len(tokens)]
            while time.monotonic() < until:
                await a.call(name, "GET", path, token)

        until = time.monotonic() + 2
        await asyncio.gather(*(client(i, until, warm) for i in range(concurrency)))
        t0 = time.monotonic()
        until = t0 + seconds
        await asyncio.gather(*(client(i, until, api) for i in range(concurrency)))
        wall = time.monotonic() - t0
    out = stats(rec.latencies[name], rec.errors[name], wall)
    out["error_samples"] = rec.error_samples.get(name, [])
    return out


# --- plain HTTP: gunicorn vs one ASGI server (issue 18) --------------------------------------------

# What --compare-asgi hammers on both servers (bench/live.py reuses compare_servers).
ASGI_COMPARE = [
    ("yardstick", YARDSTICK, "yardstick: GET /api/v1/bench/select-1/"),
    ("trivial", TRIVIAL, "trivial: GET /ledger/public-key/"),
    ("book", BOOK, "GET /offers/ (book)"),
    ("html", HTML_BOOK, "GET / (HTML book)"),
]


def start_uvicorn(workers: int, env: dict[str, str], logdir: Path) -> tuple[Service, str]:
    """config.asgi (HTTP and the WebSocket routes) under uvicorn with `workers` processes, on a
    free port; returns once it answers /healthz."""
    port = free_port()
    service = Service(
        "uvicorn",
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level",
         "warning", "--backlog", "2048"],
        env,
        logdir,
    )  # fmt: skip
    service.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while not _http_ok(base + "/healthz"):
        if not service.alive() or time.monotonic() > deadline:
            service.stop()
            raise RuntimeError(f"uvicorn did not start:\n{service.log_tail()}")
        time.sleep(0.2)
    return service, base


def compare_servers(
    *,
    bases: dict[str, str],
    endpoints: list[tuple[str, str, str]],
    tokens: list[str],
    concurrency: int,
    seconds: float,
    rounds: int,
    services: dict[str, Service],
    cpu: dict[str, dict[str, float]] | None = None,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The same GETs against each server of `bases` (service names of `services`, all up at
    once), alternately: round 1 in the order given, round 2 reversed, and so on, so the servers
    see the same machine. Each figure carries its CPU per request: the server's process tree
    (`cpu_ms`) and PostgreSQL's (`db_cpu_ms`). Returns {server: {endpoint: [round figures]}}."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {s: {} for s in bases}
    phases = cpu if cpu is not None else {}
    names = list(bases)
    for r in range(rounds):
        for server in names if r % 2 == 0 else names[::-1]:
            for key, path, name in endpoints:
                phase = f"{server}-{key}-{r + 1}"
                got = measured(
                    phases,
                    phase,
                    services,
                    lambda b=bases[server], p=path, n=name: asyncio.run(
                        hammer(b, p, n, tokens, concurrency, seconds)
                    ),
                )
                roles = phases[phase]
                wall = got["count"] / got["rps"] if got["rps"] else 0.0
                count = max(1, got["count"])
                got["cpu_ms"] = roles.get(server, 0.0) * wall / count * 1000
                got["db_cpu_ms"] = roles.get("postgres", 0.0) * wall / count * 1000
                out[server].setdefault(key, []).append(got)
                print(
                    f"    {server} {key} round {r + 1}: {got['rps']:.0f} req/s, p50 "
                    f"{got['p50_ms']:.1f} ms, CPU {got['cpu_ms']:.2f} + {got['db_cpu_ms']:.2f} "
                    f"ms a request, errors {got['errors']}",
                    flush=True,
                )
    return out


def render_asgi(args: Any, res: dict[str, Any]) -> str:
    """The gunicorn-vs-uvicorn table of --compare-asgi (a section of its own in BENCHMARKS.md,
    beside bench/live.py's)."""
    asgi = res["asgi"]
    gw = args.gunicorn_workers
    lines = [
        "### Plain HTTP: gunicorn or uvicorn? (`bench/load.py --compare-asgi`)",
        "",
        "```",
        C.command_line(),
        "```",
        "",
        f"After the trading, on the same database: gunicorn (config.wsgi, {gw} "
        + ("sync workers" if args.gunicorn_threads == 1 else f"x {args.gunicorn_threads} threads")
        + f") and uvicorn (config.asgi, {gw} workers), both up at once, the same GETs with the "
        f"same tokens, {res['concurrency']} concurrent clients, {args.compare_rounds} rounds of "
        f"{args.compare_seconds:.0f} s per endpoint and server, the servers alternating (round 1 "
        "gunicorn first, round 2 uvicorn first...). Sums over the rounds; CPU per request is the "
        "server's process tree + PostgreSQL's, from /proc over the phase.",
        "",
    ]
    rows = []
    summed = {
        s: {k: _sum_compare(v) for k, v in by.items()} for s, by in asgi.items()
    }  # fmt: skip
    verdict = []
    for key, path, _name in ASGI_COMPARE:
        g, u = summed["gunicorn"].get(key), summed["uvicorn"].get(key)
        if not g or not u:
            continue
        gy, uy = summed["gunicorn"]["yardstick"]["rps"], summed["uvicorn"]["yardstick"]["rps"]

        def cpu(server: str, k: str = key) -> str:
            rs = asgi[server][k]
            n = sum(r["count"] for r in rs) or 1
            web = sum(r["cpu_ms"] * r["count"] for r in rs) / n
            db = sum(r["db_cpu_ms"] * r["count"] for r in rs) / n
            return f"{web:.2f} + {db:.2f}"

        ratio = u["rps"] / g["rps"] if g["rps"] else float("nan")
        if key != "yardstick":
            verdict.append(ratio >= 1.0)
        rows.append(
            [
                f"`GET {path}`",
                f"{g['rps']:.0f} ({g['rps'] / gy:.2f}x)" if gy else f"{g['rps']:.0f}",
                cpu("gunicorn"),
                f"{u['rps']:.0f} ({u['rps'] / uy:.2f}x)" if uy else f"{u['rps']:.0f}",
                cpu("uvicorn"),
                f"**{ratio:.2f}**",
                f"{g['errors']} / {u['errors']}",
            ]
        )
    lines.append(
        C.table(
            [
                "endpoint",
                "gunicorn req/s (/ its yardstick)",
                "gunicorn CPU ms a request (+ PostgreSQL)",
                "uvicorn req/s (/ its yardstick)",
                "uvicorn CPU ms a request (+ PostgreSQL)",
                "uvicorn / gunicorn",
                "errors g / u",
            ],
            rows,
        )
    )
    serve = "uvicorn" if verdict and all(verdict) else "gunicorn"
    res["http_server"] = serve
    lines += [
        "",
        f"**Plain HTTP in this run: {serve}.** The rule (issue 18): HTTP moves to the ASGI "
        "server only if it serves every endpoint at least as fast as gunicorn in the same run "
        "(last column >= 1.00 on every row but the yardstick); "
        + (
            "it did here."
            if serve == "uvicorn"
            else "it did not, so docker-compose's `web` stays on gunicorn and uvicorn (`ws`) "
            "serves only the WebSocket routes."
        ),
    ]
    return "\n".join(lines)


# --- after the run -----------------------------------------------------------------------------


def ledger_check() -> dict[str, Any]:
    from django.db.models import Count, Sum

    from escrow.models import Settlement, Trade
    from ledger.models import LedgerAccount
    from ledger.replay import verify_ledger
    from ledger.services import ledger_seal_pending

    t0 = time.perf_counter()
    sealed_now = ledger_seal_pending()
    seal_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = verify_ledger()
    verify_s = time.perf_counter() - t0
    sums = {
        row["asset__code"]: str((row["c"] or 0) - (row["d"] or 0))
        for row in LedgerAccount.objects.values("asset__code").annotate(
            c=Sum("credits_posted"), d=Sum("debits_posted")
        )
    }
    pending = {
        row["asset__code"]: str((row["c"] or 0) - (row["d"] or 0))
        for row in LedgerAccount.objects.values("asset__code").annotate(
            c=Sum("credits_pending"), d=Sum("debits_pending")
        )
    }
    states = dict(Trade.objects.values_list("state").annotate(n=Count("id")))
    settlements = dict(Settlement.objects.values_list("status").annotate(n=Count("id")))
    retried = Settlement.objects.filter(attempts__gt=1).count()
    return {
        "ok": report.ok,
        "errors": report.errors[:5],
        "entries": report.entries,
        "unsealed": report.unsealed,
        "accounts": report.accounts,
        "sealed_at_end": sealed_now,
        "seal_s": seal_s,
        "verify_s": verify_s,
        "sums": sums,
        "pending_sums": pending,
        "states": states,
        "settlements": settlements,
        "settlements_retried": retried,
    }


def query_counts(token: str, trade_id: int | None) -> dict[str, Any]:
    """Queries per request of the GET endpoints, in this process (Django's test client),
    each measured on its second call (warm: the first fills per-process caches)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Token {token}", HTTP_HOST="127.0.0.1")
    paths = {name: path for _, path, name in COMPARE}
    paths["GET /wallets/"] = "/api/v1/wallets/"
    if trade_id:
        paths["GET /trades/{id}/"] = f"/api/v1/trades/{trade_id}/"
    out: dict[str, Any] = {}
    for name, path in paths.items():
        client.get(path)
        with CaptureQueriesContext(connection) as ctx:
            t0 = time.perf_counter()
            resp = client.get(path)
            ms = (time.perf_counter() - t0) * 1000
        sql_ms = sum(float(q["time"]) for q in ctx.captured_queries) * 1000
        kinds = Counter(_sql_kind(q["sql"]) for q in ctx.captured_queries)
        out[name] = {
            "status": resp.status_code,
            "queries": len(ctx.captured_queries),
            "ms": ms,
            "sql_ms": sql_ms,
            "kinds": dict(kinds.most_common()),
        }
    return out


_SQL_TABLE = re.compile(r'(?:FROM|INTO|UPDATE)\s+"?([a-z_]+)"?', re.I)  # ORM or hand-written


def _sql_kind(sql: str) -> str:
    head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "?"
    outer = sql
    while True:  # drop parenthesized subqueries: the outermost FROM names the statement
        shorter = re.sub(r"\([^()]*\)", "", outer)
        if shorter == outer:
            break
        outer = shorter
    m = _SQL_TABLE.search(outer)
    return f"{head} {m.group(1) if m else ''}".strip()


def fund_password_check_ms(rounds: int = 3) -> float:
    """CPU ms of one fund-password check against a seeded trader's stored hash (Argon2 with the
    project's parameters): what each trader's first release in a run costs the web."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username__startswith="load_trader_").first()
    if user is None:
        return 0.0
    start = time.process_time()
    for _ in range(rounds):
        user.check_password(FUND_PASSWORD)
    return (time.process_time() - start) / rounds * 1000


def log_findings(logdir: Path) -> dict[str, Any]:
    """What the server processes' logs say: tracebacks, errors, tasks that succeeded/retried."""
    out: dict[str, Any] = {}
    for name in ("gunicorn", "worker", "beat"):
        try:
            text = (logdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            continue
        out[name] = {
            "tracebacks": text.count("Traceback (most recent call last)"),
            "error_lines": sum(1 for line in text.splitlines() if "ERROR" in line),
            "retries": text.count("Retry in"),
            "succeeded": text.count(" succeeded in "),
            "first_error": next(
                (line[:300] for line in text.splitlines() if "ERROR" in line or "Error" in line),
                "",
            ),
        }
    return out


# --- main --------------------------------------------------------------------------------------


def measured(
    cpu: dict[str, dict[str, float]], name: str, services: dict[str, Service], fn: Any
) -> Any:
    if WAIT_QUIET:
        C.wait_quiet(WAIT_QUIET)
    before = C.background_load(2.0)
    meter = RoleCpu(services)
    meter.start()
    result = fn()
    roles = meter.stop()
    roles["others_before"] = before
    roles["loadavg"] = os.getloadavg()[0]  # the 1-minute load average at the phase's end
    cpu[name] = roles
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="trading time")
    parser.add_argument("--traders", type=int, default=40, help="concurrent traders")
    parser.add_argument("--offers-each", type=int, default=2, help="sell offers per trader")
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--gunicorn-threads", type=int, default=1, help="1: sync workers")
    parser.add_argument("--celery-concurrency", type=int, default=2)
    parser.add_argument("--poll-interval", type=float, default=0.25)
    parser.add_argument("--poll-timeout", type=float, default=30.0)
    parser.add_argument("--grace", type=float, default=120.0)
    parser.add_argument("--compare-seconds", type=float, default=15.0)
    parser.add_argument("--compare-rounds", type=int, default=2)
    parser.add_argument(
        "--concurrency", type=int, default=None, help="of the comparison (default: --traders)"
    )
    parser.add_argument(
        "--conn-max-age", type=int, default=None, help="CONN_MAX_AGE (default: the project's)"
    )
    parser.add_argument(
        "--compare-asgi",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the comparison, the same GETs on gunicorn and uvicorn (config.asgi, as many "
        "workers), alternated, with CPU per request: which server serves plain HTTP (on by "
        "default; --no-compare-asgi skips it)",
    )
    parser.add_argument(
        "--sections",
        default="load,asgi",
        help="the BENCHMARKS.md sections to write: load (this script's), asgi (--compare-asgi's)",
    )
    parser.add_argument("--no-write", action="store_true", help="don't touch BENCHMARKS.md")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS")
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument("--render", metavar="JSON", help="re-render saved results; no measuring")
    parser.add_argument(
        "--baseline",
        metavar="JSON",
        help="saved results of an earlier code (e.g. before an optimization) to compare with",
    )
    parser.add_argument("--baseline-label", default="before", help="what the baseline was")
    args = parser.parse_args()
    if args.baseline:
        base = json.loads(Path(args.baseline).read_text())["results"]
        BASELINE.update(base=base, label=args.baseline_label)
    if args.render:
        data = C.load_results(args.render)
        saved = argparse.Namespace(**data["args"])
        report = render(saved, data["results"])
        print(report)
        asgi_report = render_asgi(saved, data["results"]) if data["results"].get("asgi") else ""
        print(asgi_report)
        write_sections(args, report, asgi_report)
        return
    global WAIT_QUIET
    WAIT_QUIET = args.wait_quiet
    C.need_services()
    concurrency = args.concurrency or args.traders
    # SIGTERM (e.g. a timeout around the run): unwind, so the finally below stops the processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    env = {"API_RATE_LIMIT_KEY": LIFTED, "API_RATE_LIMIT_IP": LIFTED}
    if args.conn_max_age is not None:
        env["CONN_MAX_AGE"] = str(args.conn_max_age)
    C.create_db(DB)
    C.django_setup(DB, **env)
    from django.conf import settings

    info = C.machine()
    print("\n".join(C.machine_lines(info)), flush=True)
    t_all = time.perf_counter()
    with C.stopwatch("migrate") as mig:
        C.migrate_quietly()
    with C.stopwatch(f"seed: {args.traders} traders, tokens, deposits, offers") as sd:
        seeded = seed(args.traders, args.offers_each)
    users = seeded["users"]
    argon2_ms = fund_password_check_ms()
    C.close_django()

    logdir = Path(tempfile.mkdtemp(prefix="bench_load_"))
    results: dict[str, Any] = {
        "info": info,
        "migrate_s": mig["seconds"],
        "seed_s": sd["seconds"],
        "offers": seeded["offers"],
        "conn_max_age": settings.DATABASES["default"]["CONN_MAX_AGE"],
        "settings": os.environ["DJANGO_SETTINGS_MODULE"],
        "concurrency": concurrency,
        "argon2_ms": argon2_ms,
    }
    cpu: dict[str, dict[str, float]] = {}
    services: dict[str, Service] = {}
    try:
        with C.stopwatch("start gunicorn, celery worker, celery beat"):
            services, base = start_services(args, logdir)
        env_all = dict(os.environ)
        print(f"    {base}; logs in {logdir}", flush=True)

        with C.stopwatch(f"trading: {args.traders} traders for {args.seconds:.0f} s"):
            trading = measured(
                cpu,
                "trading",
                services,
                lambda: asyncio.run(run_trading(base, users, args.seconds, args)),
            )
        log: TradeLog = trading.pop("_log")
        print(
            f"    {trading['rate']:.1f} trades/s ({trading['completed_in_window']} completed in "
            f"the window; {trading['started']} started, {trading['released']} released); "
            f"errors {trading['errors']}",
            flush=True,
        )
        with C.stopwatch(f"grace poll (up to {args.grace:.0f} s)") as gp:
            asyncio.run(grace_poll(base, log, args.grace))
        trading["grace_s"] = gp["seconds"]
        trading["completed_total"] = len(log.completed)
        trading["lost"] = sorted(t for t in log.released if t not in log.completed)
        print(f"    lost trades: {len(trading['lost'])}", flush=True)
        results["trading"] = trading

        tokens = [u["token"] for u in users]
        compare: dict[str, list[dict[str, float]]] = {key: [] for key, _, _ in COMPARE}
        for r in range(args.compare_rounds):
            for key, path, name in COMPARE:
                with C.stopwatch(f"round {r + 1}: {name} x {concurrency}"):
                    got = measured(
                        cpu,
                        f"{key}-{r + 1}",
                        services,
                        lambda p=path, n=name: asyncio.run(
                            hammer(base, p, n, tokens, concurrency, args.compare_seconds)
                        ),
                    )
                print(
                    f"    {got['rps']:.0f} req/s, p50 {got['p50_ms']:.0f} ms, "
                    f"p99 {got['p99_ms']:.0f} ms, errors {got['errors']}",
                    flush=True,
                )
                compare[key].append(got)
        results["compare"] = compare

        if args.compare_asgi:
            with C.stopwatch(f"plain HTTP: gunicorn vs uvicorn x {concurrency}"):
                uvicorn, uvicorn_base = start_uvicorn(args.gunicorn_workers, env_all, logdir)
                services["uvicorn"] = uvicorn
                results["asgi"] = compare_servers(
                    bases={"gunicorn": base, "uvicorn": uvicorn_base},
                    endpoints=ASGI_COMPARE,
                    tokens=tokens,
                    concurrency=concurrency,
                    seconds=args.compare_seconds,
                    rounds=args.compare_rounds,
                    services=services,
                )
    finally:
        with C.stopwatch("stop the processes"):
            stop_services(services)
    results["cpu"] = cpu
    results["logs"] = log_findings(logdir)

    with C.stopwatch("seal, verify_ledger, checks"):
        results["ledger"] = ledger_check()
    print(
        f"    verify_ledger {'OK' if results['ledger']['ok'] else 'FAILED'}; sums "
        f"{results['ledger']['sums']}; trades {results['ledger']['states']}",
        flush=True,
    )
    some_trade = next(iter(log.completed), None)
    results["queries"] = query_counts(log.token_of.get(some_trade, users[0]["token"]), some_trade)
    results["total_s"] = time.perf_counter() - t_all
    C.close_django()
    C.drop_db(DB)
    if not args.keep_logs:
        for p in logdir.iterdir():
            p.unlink()
        logdir.rmdir()

    C.save_results("load", {"args": vars(args), "results": results})
    report = render(args, results)
    print("\n" + report)
    asgi_report = render_asgi(args, results) if results.get("asgi") else ""
    print("\n" + asgi_report)
    write_sections(args, report, asgi_report)
    led = results["ledger"]
    if results["trading"]["errors"] or results["trading"]["lost"] or not led["ok"]:
        sys.exit("ERRORS, LOST TRADES OR A LEDGER THAT DOES NOT VERIFY (see above)")


# --- BENCHMARKS.md -----------------------------------------------------------------------------


def write_sections(args: Any, report: str, asgi_report: str) -> None:
    if args.no_write:
        return
    wanted = {w.strip() for w in args.sections.split(",")}
    if "load" in wanted:
        C.write_section("load", report)
    if "asgi" in wanted and asgi_report:
        C.write_section("load-asgi", asgi_report)


def _ms(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}"


def _sum_compare(rounds: list[dict[str, Any]]) -> dict[str, float]:
    count = sum(r["count"] for r in rounds)
    return {
        "count": count,
        "rps": count / sum(r["count"] / r["rps"] for r in rounds if r["rps"]),
        "p50_ms": sorted(r["p50_ms"] for r in rounds)[len(rounds) // 2],
        "p99_ms": max(r["p99_ms"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
    }


def _cpu_per_request(res: dict[str, Any], key: str) -> tuple[float, float]:
    """CPU ms a request of the comparison's rounds: the web workers', PostgreSQL's."""
    web = db = n = 0.0
    for r, got in enumerate(res["compare"][key], start=1):
        cpu = res["cpu"].get(f"{key}-{r}", {})
        seconds = got["count"] / got["rps"] if got["rps"] else 0.0
        web += cpu.get("gunicorn", 0.0) * seconds
        db += cpu.get("postgres", 0.0) * seconds
        n += got["count"]
    return (web / n * 1000, db / n * 1000) if n else (float("nan"), float("nan"))


ENDPOINT_ORDER = [
    "GET /offers/ (book)",
    "POST /offers/{id}/take/",
    "POST /trades/{id}/mark-paid/",
    "POST /trades/{id}/release/",
    "GET /trades/{id}/ (poll)",
    "GET /wallets/",
]


def render(args: Any, res: dict[str, Any]) -> str:
    tr, led, info = res["trading"], res["ledger"], res["info"]
    trivial, book = _sum_compare(res["compare"]["trivial"]), _sum_compare(res["compare"]["book"])
    ratio = book["rps"] / trivial["rps"] if trivial["rps"] else float("nan")
    res["ratio"] = ratio
    lines = [
        "## Load: whole trades over the REST API (`bench/load.py`)",
        "",
        "```",
        C.command_line(),
        "```",
        "",
        *C.machine_lines(info),
        f"- Whole run: {res['total_s'] / 60:.1f} min (migrate {res['migrate_s']:.0f} s, seed "
        f"{res['seed_s']:.0f} s). Processes on 127.0.0.1, all on one fresh database: gunicorn "
        f"`config.wsgi` with {args.gunicorn_workers} "
        + (
            "sync workers"
            if args.gunicorn_threads == 1
            else f"gthread workers x {args.gunicorn_threads} threads"
        )
        + f", `celery -A config worker` (prefork, concurrency {args.celery_concurrency}) and "
        f"`celery -A config beat`; settings `{res['settings']}` (DEBUG off, dummy email), "
        f"CONN_MAX_AGE={res['conn_max_age']}"
        + (
            " with the psycopg connection pool (the project's default, DATABASE_POOL: each "
            "process keeps its connections; Django needs CONN_MAX_AGE=0 beside a pool)"
            if not res["conn_max_age"]
            else ""
        )
        + f"; API rate limits lifted to {LIFTED} (every trader comes from 127.0.0.1, which the "
        "1200/min per-IP limit would throttle at 20 requests/s).",
        f"- Setup through the services: {args.traders} traders, each with an API token, a 30 "
        f"BTC deposit and {args.offers_each} sell offers of BTC for EUR ({res['offers']} in the "
        "book, half fixed-price, half floating on the index).",
        f"- Client: one asyncio process (aiohttp), {args.traders} concurrent traders, each "
        "looping: GET the book (`?side=sell&asset=BTC&fiat=EUR`) -> take 0.001 BTC of a random "
        "offer of someone else -> mark paid -> the maker releases (with the maker's token) -> "
        f"poll the trade every {args.poll_interval} s until `completed` -> GET /wallets/. POSTs "
        "carry an Idempotency-Key.",
        "",
        f"Trading for {tr['seconds']:.0f} s: **{tr['rate']:.1f} completed trades/s** "
        f"({tr['completed_in_window']} completed in the window; {tr['started']} taken, "
        f"{tr['released']} released, the traders' last trades drained in "
        f"{tr['drained_s'] - tr['seconds']:.1f} s more). **Errors: {tr['errors']}. Lost trades "
        f"(released, never completed after a grace poll of up to {args.grace:.0f} s): "
        f"{len(tr['lost'])}.** Settlement lag (release answered -> the poll sees `completed`): "
        f"p50 {_ms(tr['lag_p50_ms'])} ms, p99 {_ms(tr['lag_p99_ms'])} ms; "
        f"{tr['polls_per_trade']:.1f} polls a trade.",
        "",
    ]
    rows = []
    for name in ENDPOINT_ORDER + sorted(set(tr["endpoints"]) - set(ENDPOINT_ORDER)):
        e = tr["endpoints"].get(name)
        if not e:
            continue
        rows.append(
            [
                f"`{name}`",
                e["count"],
                f"{e['rps']:.1f}",
                _ms(e["p50_ms"]),
                _ms(e["p99_ms"]),
                _ms(e["max_ms"]),
                e["errors"],
            ]
        )
    lines.append(
        C.table(
            ["endpoint (trading)", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors"],
            rows,
        )
    )
    if tr["error_samples"]:
        lines += ["", "Errors seen:", ""]
        for name, samples in tr["error_samples"].items():
            lines.append(f"- `{name}`: " + "; ".join(f"`{s[:200]}`" for s in samples[:3]))
    q = res["queries"]
    rounds = args.compare_rounds
    lines += [
        "",
        f"Every endpoint against the yardstick, after the trading (the book then has "
        f"{led['states'].get('completed', 0):,} completed trades of history behind its makers' "
        f"stats), {res['concurrency']} concurrent clients, {rounds} alternating rounds of "
        f"{args.compare_seconds:.0f} s each (after a 2 s warm-up each), on the same server. The "
        f"yardstick: `GET {YARDSTICK}`, a bare Django view that runs `SELECT 1` (bench/urls.py, "
        "mounted by bench.settings only) through the same middleware and the same database "
        "connection as the API. The trivial endpoint: `GET /api/v1/ledger/public-key/` with the "
        "token (an `ApiView`: token authentication, the per-IP and per-key throttles, one small "
        f"query). The HTML book: `GET {HTML_BOOK}` (anonymous).",
        "",
    ]
    crow = []
    summed = {key: _sum_compare(res["compare"][key]) for key, _, _ in COMPARE}
    base_rps = summed["yardstick"]["rps"]
    res["ratios"] = {}
    for key, path, name in COMPARE:
        sm = summed[key]
        qq = q.get(name, {})
        web, db = _cpu_per_request(res, key)
        ratio_y = sm["rps"] / base_rps if base_rps else float("nan")
        res["ratios"][key] = ratio_y
        target = RATIO_TARGETS.get(key)
        crow.append(
            [
                f"`GET {path}`",
                sm["count"],
                f"**{sm['rps']:.0f}**",
                f"**{ratio_y:.2f}x**",
                f">= {target}x: {'met' if ratio_y >= target else 'not met'}" if target else "",
                _ms(sm["p50_ms"]),
                _ms(sm["p99_ms"]),
                sm["errors"],
                qq.get("queries", "?"),
                f"{web:.1f} + {db:.1f}",
            ]
        )
    lines.append(
        C.table(
            [
                "endpoint",
                "requests",
                "req/s",
                "/ yardstick",
                "target",
                "p50 ms",
                "p99 ms",
                "errors",
                "queries",
                "CPU ms a request: gunicorn + PostgreSQL",
            ],
            crow,
        )
    )
    per_round = "; ".join(
        key
        + " "
        + ", ".join(
            f"{b['rps'] / y['rps']:.2f}x"
            for y, b in zip(res["compare"]["yardstick"], res["compare"][key], strict=True)
            if y["rps"]
        )
        for key, _, _ in COMPARE[1:]
    )
    ratio = summed["book"]["rps"] / summed["trivial"]["rps"] if summed["trivial"]["rps"] else 0
    res["ratio"] = ratio
    if BASELINE:
        b = BASELINE["base"]
        bsum = {k: _sum_compare(v) for k, v in b["compare"].items() if v}
        by = bsum.get("yardstick", {}).get("rps")
        lines += [
            "",
            f"The same on {BASELINE['label']}: "
            + ", ".join(
                f"{k} {v['rps']:.0f} req/s" + (f" ({v['rps'] / by:.2f}x)" if by else "")
                for k, v in bsum.items()
            )
            + f"; trading {b['trading']['rate']:.1f} trades/s, {b['trading']['errors']} errors, "
            f"{len(b['trading']['lost'])} lost.",
        ]
    lines += [
        "",
        f"Ratios to the yardstick per round: {per_round}. Order book / trivial: {ratio:.2f}x.",
        "",
        "Queries per request (in-process, Django's test client, warm; CaptureQueriesContext): "
        + "; ".join(
            f"`{name}` {v['queries']} ({', '.join(f'{k} {n}' for k, n in v['kinds'].items())})"
            for name, v in q.items()
        )
        + ".",
        "",
    ]
    sums = ", ".join(f"{a} {v}" for a, v in sorted(led["sums"].items()))
    lines += [
        f"Ledger after the run: verify_ledger **{'OK' if led['ok'] else 'FAILED'}** "
        f"({led['entries']:,} entries, {led['accounts']:,} accounts, {led['verify_s']:.1f} s; "
        f"{led['sealed_at_end']} entries were still unsealed when beat stopped and were sealed "
        f"first)"
        + (f": {led['errors']}" if led["errors"] else "")
        + f". Each asset's posted balances sum to: {sums} (pending: "
        + ", ".join(f"{a} {v}" for a, v in sorted(led["pending_sums"].items()))
        + "). Trades by state: "
        + ", ".join(f"{k} {v}" for k, v in sorted(led["states"].items()))
        + "; settlements: "
        + ", ".join(f"{k} {v}" for k, v in sorted(led["settlements"].items()))
        + f" ({led['settlements_retried']} took more than one attempt).",
        "",
    ]
    cpu_rows = []
    for phase, c in res["cpu"].items():
        cpu_rows.append(
            [
                phase,
                f"{c.get('client', 0):.2f}",
                f"{c.get('gunicorn', 0):.2f}",
                f"{c.get('worker', 0):.2f}",
                f"{c.get('beat', 0):.2f}",
                f"{c.get('postgres', 0):.2f}",
                f"{c.get('redis', 0):.2f}",
                f"{c['machine']:.2f}",
                f"{c['others_before']:.2f} / {c['others']:.2f}",
                f"{c.get('loadavg', float('nan')):.1f}",
            ]
        )
    lines += [
        "CPU by role, in cores (process trees from /proc, reaped children included); others: the "
        "machine's busy cores minus all of ours, in the 2 s before the phase / during it (the "
        "machine is shared with other sessions' test runs):",
        "",
        C.table(
            [
                "phase",
                "client",
                "gunicorn",
                "celery worker",
                "beat",
                "postgres",
                "redis",
                "machine",
                "others before / during",
                "load average (1 min)",
            ],
            cpu_rows,
        ),
        "",
    ]
    c = res["cpu"].get("trading", {})
    done = tr["completed_in_window"]
    per: dict[str, float] = {}
    if c and done:
        per = {
            k: c.get(k, 0.0) * tr["seconds"] / done * 1000
            for k in ("gunicorn", "postgres", "redis")
        }
        per["worker"] = (c.get("worker", 0.0) + c.get("beat", 0.0)) * tr["seconds"] / done * 1000
        reqs = sum(e["count"] for e in tr["endpoints"].values()) / max(1, tr["released"])
        total = sum(per.values())
        res["cpu_per_trade"] = {**per, "total": total}
        lines += [
            f"CPU per completed trade while trading: **{total:.0f} ms**: web (gunicorn) "
            f"{per['gunicorn']:.1f} + database (PostgreSQL) {per['postgres']:.1f} + worker "
            f"(Celery worker and beat: settling, sealing) {per['worker']:.1f} + Redis "
            f"{per['redis']:.1f} ms, for {reqs:.1f} requests a trade; the machine was "
            f"{c['machine']:.2f} cores busy ({c['others']:.2f} of them others'), load average "
            f"{c.get('loadavg', float('nan')):.1f}.",
            "",
        ]
        if res.get("argon2_ms"):
            # Each trader's first release in a window hashes the fund password (Argon2); the
            # next ones within FUNDS_PASSWORD_MEMO_SECONDS are remembered (accounts.services).
            hashed = min(args.traders, tr["released"])
            share = hashed * res["argon2_ms"] / done
            res["cpu_per_trade"]["argon2_first_releases"] = share
            lines += [
                f"Of the web's CPU, the first release of each of the {hashed} traders hashed "
                f"the fund password (Argon2, {res['argon2_ms']:.0f} ms of CPU each, measured "
                f"here; later ones are remembered for FUNDS_PASSWORD_MEMO_SECONDS): "
                f"**{share:.1f} ms a trade** over this run's {done} trades, a share that "
                f"shrinks as a run (or a trader's session) grows longer: without it, "
                f"**{total - share:.0f} ms** a trade.",
                "",
            ]
    worst = max(
        ((e["p99_ms"], name) for name, e in tr["endpoints"].items()), default=(float("nan"), "")
    )
    checks = [
        ("completed trades/s", f"{tr['rate']:.1f}", ">= 60", tr["rate"] >= 60),
        (
            "p99 of every trading request",
            f"{_ms(worst[0])} ms (`{worst[1]}`)",
            "<= 250 ms",
            worst[0] <= 250,
        ),
        ("errors", str(tr["errors"]), "0", tr["errors"] == 0),
        ("lost trades", str(len(tr["lost"])), "0", not tr["lost"]),
        (
            "settlement lag p99",
            f"{_ms(tr['lag_p99_ms'])} ms",
            "<= 2000 ms",
            tr["lag_p99_ms"] <= 2000,
        ),
        ("verify_ledger after the run", "OK" if led["ok"] else "FAILED", "OK", led["ok"]),
        (
            "CPU per completed trade (all processes but the client)",
            f"{sum(per.values()):.0f} ms" if per else "?",
            "< 25 ms",
            bool(per) and sum(per.values()) < 25,
        ),
    ]
    for key, target in RATIO_TARGETS.items():
        got = res.get("ratios", {}).get(key, float("nan"))
        checks.append((f"{key} / yardstick", f"{got:.2f}x", f">= {target}x", got >= target))
    lines += [
        "Targets (issue 17):",
        "",
        C.table(
            ["figure", "this run", "target", "met"],
            [[a, b, t, "yes" if ok else "**no**"] for a, b, t, ok in checks],
        ),
        "",
    ]
    logs = res.get("logs", {})
    if logs:
        lines.append(
            "Server logs: "
            + "; ".join(
                f"{name} {v['tracebacks']} tracebacks, {v['error_lines']} ERROR lines"
                + (
                    f", {v['succeeded']} tasks succeeded, {v['retries']} retries"
                    if name == "worker"
                    else ""
                )
                for name, v in logs.items()
            )
            + "."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
