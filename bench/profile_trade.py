"""Where a trade's CPU goes: the trading requests of bench/load.py (take, mark paid, release,
the trade poll, the wallets), run in this process through the whole WSGI stack (Django's test
client with bench.settings: the same middleware, authentication, throttles and views as gunicorn
runs) under cProfile, and itemised in ms per request by layer and by function.

    flock /tmp/bench.lock scripts/with-services.sh .venv/bin/python bench/profile_trade.py \
        --trades 200

One process, no gunicorn and no network: the figures are the request path's own CPU (Python here,
plus the wall time it waits on PostgreSQL and Redis, itemised as such). Settlement runs in the
Celery worker, not here: the release queues it (the publish is measured), nothing settles it.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as C

DB = "bench_profile_trade"

# Where a function's own time is counted: the first match of its file's path.
LAYERS = [
    ("waiting on PostgreSQL (socket)", ("psycopg/", "psycopg_pool/", "psycopg_c")),
    ("waiting on Redis (socket)", ("redis/", "kombu/", "celery/", "amqp/")),
    ("password hashing", ("argon2", "hashers.py")),
    ("Django ORM (building, compiling SQL)", ("django/db/",)),
    ("DRF (request, negotiation, parsing, rendering, serializers)", ("rest_framework/",)),
    ("Django templates / i18n", ("django/template", "django/utils/translation")),
    ("Django (handlers, middleware, urls, signals, utils)", ("django/",)),
    ("stdlib json / decimal / logging", ("json/", "decimal", "logging/")),
    (
        "the project's code",
        tuple(
            f"/{app}/"
            for app in (
                "accounts",
                "common",
                "config",
                "disputes",
                "escrow",
                "ledger",
                "lending",
                "marketplace",
                "notifications",
                "operations",
            )
        ),
    ),
]


def layer_of(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (C calls: socket I/O, hashing, ...)"
    for name, needles in LAYERS:
        if any(n in filename for n in needles):
            return name
    return "other Python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200)
    parser.add_argument("--traders", type=int, default=16)
    parser.add_argument("--top", type=int, default=12, help="functions listed per endpoint")
    parser.add_argument(
        "--top-project", type=int, default=30, help="the project's functions listed per endpoint"
    )
    parser.add_argument("--only", default="", help="comma-separated endpoints to itemise")
    parser.add_argument(
        "--news-batch",
        type=int,
        default=20,
        help="moves a news task writes at once (about 20 under bench/load.py's load)",
    )
    parser.add_argument("--queries", action="store_true", help="print one trade's SQL and stop")
    args = parser.parse_args()

    C.need_services()
    C.create_db(DB)
    C.django_setup(DB, API_RATE_LIMIT_KEY="1000000/s", API_RATE_LIMIT_IP="1000000/s")
    C.migrate_quietly()
    from django.test import Client

    from bench.load import AMOUNT, BOOK, FUND_PASSWORD, seed

    users = seed(args.traders, 2)["users"]
    client = Client(HTTP_HOST="127.0.0.1")

    call = C.api_caller(client)

    endpoints = ["book", "take", "mark-paid", "release", "poll", "wallets"]
    profiles = {name: cProfile.Profile() for name in endpoints}
    wall: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)

    def timed(name: str, *a: Any, **kw: Any) -> Any:
        profile = profiles[name]
        t0 = time.perf_counter()
        profile.enable()
        try:
            return call(*a, **kw)
        finally:
            profile.disable()
            wall[name] += time.perf_counter() - t0
            counts[name] += 1

    # Unprofiled: this process's CPU (all its threads: the live sender's too) and the CPU of
    # this database's PostgreSQL backends (/proc, clock ticks: summed over many requests).
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    cpu: dict[str, float] = defaultdict(float)
    db_cpu: dict[str, float] = defaultdict(float)
    queries: dict[str, int] = defaultdict(int)
    measured: dict[str, int] = defaultdict(int)
    backends_cpu = C.backends_cpu

    def measured_call(name: str, *a: Any, **kw: Any) -> Any:
        d0 = backends_cpu()
        c0 = time.process_time()
        connection.queries_log.clear()  # a bounded deque: full, it would count nothing
        with CaptureQueriesContext(connection) as ctx:
            result = call(*a, **kw)
        cpu[name] += time.process_time() - c0
        db_cpu[name] += backends_cpu() - d0
        queries[name] += len(ctx.captured_queries)
        measured[name] += 1
        return result

    # warm up: each endpoint once (imports, URL resolver, first queries), not profiled
    def one_trade(k: int, profile: bool | None) -> None:
        # every pair in turn (a buyer may open only so many trades with one maker a minute)
        n = len(users)
        me, seller = users[k % n], users[(k % n + 1 + (k // n) % (n - 1)) % n]
        if profile is None:
            run = measured_call
        else:
            run = timed if profile else (lambda _name, *a, **kw: call(*a, **kw))
        book = run("book", "GET", BOOK, me["token"])
        offer = next(o for o in book["results"] if o["maker"]["username"] == seller["username"])
        trade = run(
            "take", "POST", f"/api/v1/offers/{offer['id']}/take/", me["token"], {"amount": AMOUNT}
        )
        run("mark-paid", "POST", f"/api/v1/trades/{trade['id']}/mark-paid/", me["token"])
        run(
            "release",
            "POST",
            f"/api/v1/trades/{trade['id']}/release/",
            seller["token"],
            {"password": FUND_PASSWORD},
        )
        run("poll", "GET", f"/api/v1/trades/{trade['id']}/", me["token"])
        run("wallets", "GET", "/api/v1/wallets/", me["token"])

    for k in range(len(users)):
        one_trade(k, profile=False)
    if args.queries:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        plain = call

        def call_logged(method: str, path: str, *a: Any, **kw: Any) -> Any:
            with CaptureQueriesContext(connection) as ctx:
                result = plain(method, path, *a, **kw)
            print(f"\n=== {method} {path}: {len(ctx.captured_queries)} queries")
            for q in ctx.captured_queries:
                print("   ", q["sql"][:220])
            return result

        call = call_logged
        one_trade(len(users), profile=False)
        return
    # The moves' news is the worker's (notifications.tasks.announce_trade_moves): here its ids
    # are kept instead of published, and the task's body runs on them below, in batches as
    # under load.
    from notifications import listeners, tasks

    news: list[int] = []
    publish_news = listeners._announce_later
    listeners._announce_later = news.extend
    for k in range(args.trades):
        one_trade(args.trades + k, profile=None)
    listeners._announce_later = publish_news
    print(
        f"\n{args.trades} trades, {len(users)} traders, in-process (Django test client, "
        "bench.settings), no profiler: CPU ms a request, this process (Python) + its PostgreSQL "
        "backends; queries a request (CaptureQueriesContext)\n"
    )
    print("| endpoint | Python CPU ms | PostgreSQL CPU ms | queries |")
    print("|---|---|---|---|")
    totals = [0.0, 0.0, 0]
    for name in endpoints:
        n = measured[name]
        row = (cpu[name] / n * 1000, db_cpu[name] / n * 1000, queries[name] / n)
        totals = [totals[0] + row[0], totals[1] + row[1], totals[2] + row[2]]
        print(f"| {name} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.0f} |")
    print(f"| **a trade** | **{totals[0]:.1f}** | **{totals[1]:.1f}** | **{totals[2]:.0f}** |")
    d0, c0 = backends_cpu(), time.process_time()
    batches = [news[i : i + args.news_batch] for i in range(0, len(news), args.news_batch)]
    for batch in batches:
        tasks.announce_trade_moves(batch)
    news_cpu = (time.process_time() - c0) / args.trades * 1000
    news_db = (backends_cpu() - d0) / args.trades * 1000
    print(
        f"\nThe worker's share of it, its news (the body of notifications.tasks."
        f"announce_trade_moves, on the {len(news)} moves of these trades in batches of "
        f"{args.news_batch}): **{news_cpu:.1f} ms of Python + {news_db:.1f} of PostgreSQL a "
        "trade** (its three moves: opened, paid, releasing)."
    )
    floor(users[0]["token"], totals, len(endpoints), backends_cpu)
    for k in range(args.trades):
        one_trade(2 * args.trades + k, profile=True)

    print(
        f"\n{args.trades} trades, {len(users)} traders, in-process (Django test client, "
        f"bench.settings), cProfile on; ms per request (wall, profiler overhead included)\n"
    )
    total = 0.0
    summary: list[tuple[str, float, dict[str, float]]] = []
    for name in endpoints:
        stats = pstats.Stats(profiles[name])
        by_layer: dict[str, float] = defaultdict(float)
        for (filename, _line, _fn), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():
            by_layer[layer_of(filename)] += tt
        n = counts[name]
        per = wall[name] / n * 1000
        total += per
        summary.append((name, per, {k: v / n * 1000 for k, v in by_layer.items()}))
    print("| endpoint | ms a request | " + " | ".join(n for n, _ in LAYERS[:0]) + "itemised |")
    print("|---|---|---|")
    for name, per, layers in summary:
        parts = ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(layers.items(), key=lambda kv: -kv[1]) if v >= 0.05
        )
        print(f"| {name} | {per:.2f} | {parts} |")
    print(f"| **a trade (the six)** | **{total:.2f}** | |")
    shown = [e for e in endpoints if not args.only or e in args.only.split(",")]
    for name in shown:
        print(f"\n--- {name}: top functions by own time (ms a request) ---")
        stats = pstats.Stats(profiles[name])
        n = counts[name]
        rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[: args.top]
        for (filename, line, fn), (_cc, nc, tt, ct, _callers) in rows:
            short = filename.split("site-packages/")[-1].replace(str(C.ROOT) + "/", "")
            print(
                f"{tt / n * 1000:7.3f} own {ct / n * 1000:7.3f} cum  {nc / n:6.1f} calls  "
                f"{short}:{line} {fn}"
            )
        print("  by cumulative time (the project's functions):")
        rows = sorted(
            (
                kv
                for kv in stats.stats.items()
                if str(C.ROOT) in kv[0][0] and "/.venv/" not in kv[0][0]
            ),
            key=lambda kv: -kv[1][3],
        )[: args.top_project]
        for (filename, line, fn), (_cc, nc, _tt, ct, _callers) in rows:
            short = filename.replace(str(C.ROOT) + "/", "")
            print(f"{ct / n * 1000:7.3f} cum  {nc / n:6.1f} calls  {short}:{line} {fn}")
    if os.environ.get("PROFILE_CALLERS"):
        for name in shown:
            stats = pstats.Stats(profiles[name])
            stats.print_callers(os.environ["PROFILE_CALLERS"])
    C.close_django()
    C.drop_db(DB)
    os.environ.pop("DJANGO_SETTINGS_MODULE", None)


def floor(token: str, trade: list[float], requests: int, backends_cpu: Any, n: int = 1000) -> None:
    """The floor of a trade on this stack, measured in the same process: what the framework
    costs a request with nothing of the project's in it, and what a statement's round trip costs
    psycopg alone, beside the trade's own PostgreSQL CPU. A trade can cost no less than its
    requests' framework plus its statements' round trips plus the database's work; as procedures
    (one call a request), no less than the bare view's cost a request plus the database's work."""
    import psycopg
    from django.db import connection
    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1")
    auth = {"HTTP_AUTHORIZATION": f"Token {token}"}

    def per_call(fn: Any) -> tuple[float, float]:
        for _ in range(n // 10):
            fn()
        d0, c0 = backends_cpu(), time.process_time()
        for _ in range(n):
            fn()
        return (time.process_time() - c0) / n * 1000, (backends_cpu() - d0) / n * 1000

    def get(path: str, **headers: Any) -> Any:
        def call() -> None:
            assert client.get(path, **headers).status_code == 200, path

        return call

    bare = per_call(get("/api/v1/bench/select-1/"))
    trivial = per_call(get("/api/v1/ledger/public-key/", **auth))

    def django_round_trip() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()

    via_django = per_call(django_round_trip)
    with psycopg.connect(C.db_url(DB), autocommit=True) as raw:

        def psycopg_round_trip() -> None:
            raw.execute("SELECT 1").fetchone()

        via_psycopg = per_call(psycopg_round_trip)
    python_ms, pg_ms, statements = trade
    today = requests * trivial[0] + max(0.0, statements - requests) * via_psycopg[0] + pg_ms
    procedures = requests * bare[0] + pg_ms
    print(
        f"\nThe floor, in this process ({n} calls each, CPU ms a call: Python here + PostgreSQL):\n"
    )
    print("| what | Python CPU ms | PostgreSQL CPU ms |")
    print("|---|---|---|")
    print(f"| the yardstick: a bare Django view, `SELECT 1` | {bare[0]:.2f} | {bare[1]:.2f} |")
    print(
        f"| the trivial endpoint: DRF, token, both throttles, one query | {trivial[0]:.2f} "
        f"| {trivial[1]:.2f} |"
    )
    print(f"| one round trip, Django's cursor | {via_django[0]:.3f} | {via_django[1]:.3f} |")
    print(f"| one round trip, psycopg alone | {via_psycopg[0]:.3f} | {via_psycopg[1]:.3f} |")
    print(
        f"\nA trade here: {python_ms + pg_ms:.1f} ms ({python_ms:.1f} Python + {pg_ms:.1f} "
        f"PostgreSQL, {statements:.0f} statements, {requests} requests). Its floor with these "
        f"statements: {requests} x the trivial endpoint + {max(0.0, statements - requests):.0f} "
        f"more round trips through psycopg + its PostgreSQL CPU = **{today:.1f} ms** (the trade "
        f"is {(python_ms + pg_ms) / today:.1f}x it). As one procedure call a request: "
        f"{requests} x the bare view + its PostgreSQL CPU = **{procedures:.1f} ms**. (The "
        "settlement, in the worker, comes on top of both.)"
    )


if __name__ == "__main__":
    main()
