#!/usr/bin/env python
"""Live push (issue 18): WebSocket event latency, memory per connection, how many connections
one uvicorn process holds, and plain HTTP on gunicorn vs uvicorn.

    scripts/with-services.sh .venv/bin/python bench/live.py --sockets 1000 --samples 400

1. A fresh database; --sockets users, each with a logged-in session (a real session row, as a
   browser's login leaves it), and a few API tokens for the HTTP part.
2. uvicorn (config.asgi, one process: the `ws` service of docker-compose) on 127.0.0.1, settings
   bench.settings, the server's Redis as channel layer and event store.
3. --sockets browser sockets (/ws/v1/live/, Cookie + Origin) from one asyncio process (the
   `websockets` client). Memory: the server's RSS before and after, per idle connection.
4. Latency from commit to receipt, with all the sockets connected:
   - one at a time: --samples commits, each a Notification for one random user (the badge's
     event); the clock starts in the first on-commit callback of that transaction (right after
     COMMIT) and stops when that user's socket receives the event;
   - fan-out: one commit that notifies every connected user at once; each socket's receipt.
5. Connections held before the first error: more sockets are opened, in batches, until one
   fails or --max-sockets are open (the client's and server's file limits raised to their hard
   limit).
6. Plain HTTP: gunicorn (config.wsgi, --http-workers sync workers, as docker-compose's web) and
   uvicorn (config.asgi, the same number of workers) answer the same two GETs (a trivial
   token-authenticated API call, and the order book page), alternately, --http-rounds rounds of
   --http-seconds each at --http-concurrency: which one serves plain HTTP faster.

Not a test: nothing asserts a time. Writes its section of BENCHMARKS.md (--no-write: don't).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as C
from bench import load as L

DB = "bench_live"
ORIGIN = "http://127.0.0.1:8000"
TRIVIAL = "/api/v1/ledger/public-key/"
BOOK_PAGE = "/?side=buy&asset=BTC&fiat=EUR"


def raise_file_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def seed(users: int) -> tuple[list[int], list[str], list[str]]:
    """users with sessions (cookies), and 5 API tokens."""
    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    from accounts.services import token_rotate

    User = get_user_model()
    User.objects.bulk_create(
        [User(username=f"live{i}", password="!") for i in range(users)],  # noqa: S106 - unusable
        batch_size=1000,
    )
    people = list(User.objects.filter(username__startswith="live").order_by("pk"))
    cookies = []
    for user in people:
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[-1]
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={store.session_key}")
    tokens = [token_rotate(user=u).key for u in people[:5]]
    return [u.pk for u in people], cookies, tokens


def notify(user_ids: list[int]) -> float:
    """One transaction: a notification for each user; returns the time of COMMIT (the first
    on-commit callback, queued before the notifications' own)."""
    from django.db import transaction

    from notifications.models import Notification

    box: dict[str, float] = {}
    with transaction.atomic():
        transaction.on_commit(lambda: box.setdefault("t", time.time()))
        Notification.objects.bulk_create(
            [Notification(user_id=u, kind="message", text="bench") for u in user_ids]
        )
    return box["t"]


class Sockets:
    def __init__(self, url: str) -> None:
        self.url = url
        self.waiting: dict[int, tuple[asyncio.Event, list[float]]] = {}
        self.conns: list[Any] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def open(self, user_id: int, cookie: str) -> None:
        from websockets.asyncio.client import connect

        conn = await connect(
            self.url,
            additional_headers={"Cookie": cookie, "Origin": ORIGIN},
            open_timeout=30,
            ping_interval=None,
            max_queue=64,
        )
        await conn.recv()  # hello
        self.conns.append(conn)
        self.tasks.append(asyncio.create_task(self._read(user_id, conn)))

    async def _read(self, user_id: int, conn: Any) -> None:
        with contextlib.suppress(Exception):
            async for _ in conn:
                waiter = self.waiting.get(user_id)
                if waiter is not None:
                    waiter[1].append(time.time())
                    waiter[0].set()

    def expect(self, user_id: int) -> tuple[asyncio.Event, list[float]]:
        waiter = (asyncio.Event(), [])
        self.waiting[user_id] = waiter
        return waiter

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*(c.close() for c in self.conns), return_exceptions=True)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


async def measure(
    args: argparse.Namespace, url: str, pid: int, users: list[int], cookies: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    socks = Sockets(url)
    idle_before = rss_kib(pid)
    t0 = time.perf_counter()
    for start in range(0, args.sockets, 50):
        await asyncio.gather(
            *(socks.open(users[i], cookies[i]) for i in range(start, min(start + 50, args.sockets)))
        )
    out["connect_seconds"] = time.perf_counter() - t0
    await asyncio.sleep(2)  # let the server settle (allocations of the handshakes)
    out["rss_before_kib"], out["rss_after_kib"] = idle_before, rss_kib(pid)
    out["kib_per_socket"] = (out["rss_after_kib"] - idle_before) / args.sockets
    print(
        f"    {args.sockets} sockets: RSS {idle_before} -> {out['rss_after_kib']} KiB", flush=True
    )

    # one at a time
    latencies = []
    for _ in range(args.samples):
        user = random.choice(users[: args.sockets])  # noqa: S311 - a sample, not security
        event, got = socks.expect(user)
        committed = await asyncio.to_thread(notify, [user])
        await asyncio.wait_for(event.wait(), 10)
        latencies.append((got[0] - committed) * 1000)
        socks.waiting.pop(user, None)
    out["single"] = {
        "n": len(latencies),
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
        "max_ms": max(latencies),
    }
    print(f"    one at a time: {out['single']}", flush=True)

    # fan-out: one commit, every socket
    fan: list[float] = []
    missing = 0
    for _ in range(args.fanout_rounds):
        waiters = {u: socks.expect(u) for u in users[: args.sockets]}
        committed = await asyncio.to_thread(notify, users[: args.sockets])
        pending = [asyncio.create_task(w[0].wait()) for w in waiters.values()]
        _done, late = await asyncio.wait(pending, timeout=30)
        for task in late:
            task.cancel()
        missing += len(late)
        fan += [(w[1][0] - committed) * 1000 for w in waiters.values() if w[1]]
        socks.waiting.clear()
    out["fanout"] = {
        "n": len(fan),
        "missing": missing,
        "p50_ms": pct(fan, 0.5),
        "p99_ms": pct(fan, 0.99),
        "max_ms": max(fan) if fan else float("nan"),
    }
    print(f"    fan-out: {out['fanout']}", flush=True)

    # connections until the first error
    held, error = args.sockets, ""
    extra = users[args.sockets :]
    i = 0
    while held < args.max_sockets and not error:
        batch = [(extra[(i + k) % len(extra)] if extra else users[0]) for k in range(100)]
        cookie_of = dict(zip(users, cookies, strict=True))
        results = await asyncio.gather(
            *(socks.open(u, cookie_of[u]) for u in batch), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        held += len(results) - len(failed)
        i += 100
        if failed:
            error = f"{type(failed[0]).__name__}: {failed[0]}"[:200]
    out["held"], out["held_error"] = held, error or f"none up to --max-sockets {args.max_sockets}"
    out["rss_at_max_kib"] = rss_kib(pid)
    print(f"    held {held} ({out['held_error']})", flush=True)
    await socks.close()
    return out


def http_compare(
    args: argparse.Namespace, tokens: list[str], env: dict[str, str], logdir: Path
) -> dict[str, Any]:
    """Both servers up at once, the same GETs alternately (bench/load.py's compare_servers, which
    `bench/load.py --compare-asgi` runs after its trading, with the yardstick)."""
    port = L.free_port()
    gunicorn = L.Service(
        "http-gunicorn",
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind",
         f"127.0.0.1:{port}", "--workers", str(args.http_workers), "--worker-class", "sync"],
        env,
        logdir,
    )  # fmt: skip
    gunicorn.start()
    services = {"gunicorn": gunicorn}
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not L._http_ok(base + "/healthz") and time.monotonic() < deadline:
            time.sleep(0.2)
        services["uvicorn"], uvicorn_base = L.start_uvicorn(args.http_workers, env, logdir)
        return L.compare_servers(
            bases={"gunicorn": base, "uvicorn": uvicorn_base},
            endpoints=[("trivial", TRIVIAL, "trivial"), ("book", BOOK_PAGE, "book")],
            tokens=tokens,
            concurrency=args.http_concurrency,
            seconds=args.http_seconds,
            rounds=args.http_rounds,
            services=services,
        )
    finally:
        for service in services.values():
            service.stop()


def render(data: dict[str, Any]) -> str:
    live, http, args = data["live"], data["http"], data["args"]
    lines = [
        "## Live push: WebSockets (`bench/live.py`)",
        "",
        f"Command: `{data['command']}`",
        "",
        *C.machine_lines(data["machine"]),
        f"- Load average (1, 5, 15 min) around the run: {', '.join(f'{x:.1f}' for x in data['loadavg'])} "
        "(other jobs share this machine's 2 cores: read the ratios, not the absolute figures)"
        if data.get("loadavg")
        else "- Load average: not recorded",
        "",
        f"One uvicorn process (config.asgi, the `ws` service) holding {args['sockets']} browser "
        "sockets (session cookie, Origin checked) from one asyncio client process on the same "
        "2 cores; Redis is the channel layer and the per-user event store. Latency is from the "
        "COMMIT (the transaction's first on-commit callback) to the socket's receipt of the "
        "event, the badge's event of a Notification written in that transaction.",
        "",
        C.table(
            ["what", "events", "p50 ms", "p99 ms", "max ms"],
            [
                [
                    "one event at a time (a random user)",
                    live["single"]["n"],
                    f"{live['single']['p50_ms']:.1f}",
                    f"{live['single']['p99_ms']:.1f}",
                    f"{live['single']['max_ms']:.1f}",
                ],
                [
                    f"fan-out: one commit to all {args['sockets']} users",
                    live["fanout"]["n"],
                    f"{live['fanout']['p50_ms']:.1f}",
                    f"{live['fanout']['p99_ms']:.1f}",
                    f"{live['fanout']['max_ms']:.1f}",
                ],
            ],
        ),
        "",
        C.table(
            ["memory and connections", "figure"],
            [
                ["server RSS, no sockets", f"{live['rss_before_kib'] / 1024:.1f} MiB"],
                [
                    f"server RSS, {args['sockets']} idle sockets",
                    f"{live['rss_after_kib'] / 1024:.1f} MiB",
                ],
                ["memory per idle connection", f"{live['kib_per_socket']:.1f} KiB"],
                [
                    "connections held before the first error",
                    f"{live['held']} ({live['held_error']})",
                ],
                ["server RSS at that point", f"{live['rss_at_max_kib'] / 1024:.1f} MiB"],
                [
                    f"time to open {args['sockets']} sockets (50 at a time)",
                    f"{live['connect_seconds']:.1f} s",
                ],
            ],
        ),
        "",
        f"Plain HTTP, the same requests to gunicorn (config.wsgi, {args['http_workers']} sync "
        f"workers: `web`) and to uvicorn (config.asgi, {args['http_workers']} workers), both up "
        f"at once and hammered alternately, {args['http_concurrency']} concurrent clients, "
        f"{args['http_rounds']} rounds of {args['http_seconds']:.0f} s each, medians of the "
        "rounds:",
        "",
    ]
    rows = []
    for name, label in (("trivial", f"GET {TRIVIAL} (token)"), ("book", f"GET {BOOK_PAGE} (page)")):
        g = http["gunicorn"][name]
        u = http["uvicorn"][name]
        g_rps = statistics.median(r["rps"] for r in g)
        u_rps = statistics.median(r["rps"] for r in u)
        rows.append(
            [
                label,
                f"{g_rps:.0f}",
                f"{statistics.median(r['p50_ms'] for r in g):.1f}",
                f"{u_rps:.0f}",
                f"{statistics.median(r['p50_ms'] for r in u):.1f}",
                f"{u_rps / g_rps:.2f}",
            ]
        )
    lines += [
        C.table(
            [
                "request",
                "gunicorn req/s",
                "gunicorn p50 ms",
                "uvicorn req/s",
                "uvicorn p50 ms",
                "uvicorn / gunicorn",
            ],
            rows,
        ),
        "",
        "The rule: plain HTTP moves to uvicorn only if the last column is at least 1.00 on both "
        "rows in such a run on a quiet machine (Django's views are synchronous: under uvicorn "
        "each request crosses into a thread and back); docker-compose keeps `web` on gunicorn "
        "until then.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--fanout-rounds", type=int, default=3)
    parser.add_argument("--max-sockets", type=int, default=5000)
    parser.add_argument("--http-workers", type=int, default=2)
    parser.add_argument("--http-concurrency", type=int, default=16)
    parser.add_argument("--http-seconds", type=float, default=10.0)
    parser.add_argument("--http-rounds", type=int, default=4)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--render", help="re-render the section from a saved results file")
    args = parser.parse_args()
    if args.render:
        data = C.load_results(args.render)
        C.write_section("live", render(data))
        return
    C.need_services()
    hard = raise_file_limit()
    C.create_db(DB)
    # Every simulated client comes from 127.0.0.1: the API's per-IP limit would throttle them.
    C.django_setup(DB, API_RATE_LIMIT_KEY=L.LIFTED, API_RATE_LIMIT_IP=L.LIFTED)
    C.migrate_quietly()
    with C.stopwatch(f"seeding {args.max_sockets} users with sessions"):
        users, cookies, tokens = seed(max(args.sockets, args.max_sockets))
    env = dict(os.environ)
    logdir = Path(tempfile.mkdtemp(prefix="bench-live-"))
    port = L.free_port()
    ws = L.Service(
        "uvicorn-ws",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--ws-max-size",
            "65536",
            "--no-access-log",
            "--log-level",
            "warning",
            "--timeout-keep-alive",
            "5",
            "--limit-concurrency",
            str(args.max_sockets + 1000),
        ],
        env,
        logdir,
    )
    ws.start()
    try:
        deadline = time.monotonic() + 60
        while not L._http_ok(f"http://127.0.0.1:{port}/healthz") and time.monotonic() < deadline:
            time.sleep(0.2)
        with C.stopwatch("sockets, latency, memory, connections"):
            live = asyncio.run(
                measure(args, f"ws://127.0.0.1:{port}/ws/v1/live/", ws.pid, users, cookies)
            )
    finally:
        print(ws.log_tail(1500))
        ws.stop()
    with C.stopwatch("plain HTTP: gunicorn vs uvicorn"):
        http = http_compare(args, tokens, env, logdir)
    C.close_django()
    data = {
        "live": live,
        "http": http,
        "args": {**vars(args), "file_limit": hard},
        "machine": C.machine(),
        "loadavg": os.getloadavg(),
    }
    path = C.save_results("live", data)
    data = C.load_results(str(path))
    print(render(data))
    if not args.no_write:
        C.write_section("live", render(data))


if __name__ == "__main__":
    main()
