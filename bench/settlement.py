#!/usr/bin/env python
"""Settlement throughput: N released trades waiting in the outbox, settled by W worker processes.

    scripts/with-services.sh .venv/bin/python bench/settlement.py --trades 5000 --workers 1,2,4

1. pgbench on the same server (-i -s 10; -c 8 -j 2 -T 20 -M prepared): the yardstick.
2. Setup: a handful of sellers and buyers, deposits and one sell offer per seller through the
   services, then one trade per seller/buyer pair through offer_take -> trade_mark_paid ->
   escrow_release (escrow.services.transitions._enqueue patched to a no-op so every settlement waits in the
   outbox), copied set-based into N trades (`--setup bulk`, the default; `--setup services`
   makes every trade through the services, in several processes: slow). The setup's entries are
   sealed, verify_ledger must pass, and the database is kept as a template.
3. For each W: a fresh copy of the template; W spawned processes loop
   settlements_execute_pending(batch_size=B) until it returns 0. Wall time -> settled trades/s.
   Every trade must be completed exactly once. Then ledger_seal_pending() seals the settlement's
   entries (entries/s) and verify_ledger() must pass.
4. Two sequencers racing over the same backlog (the advisory lock serializes them).
5. One worker again under cProfile, counting its queries per settlement.

Not a test: nothing asserts a time. Writes its section of BENCHMARKS.md (--no-write: don't).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing as mp
import os
import pstats
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as C

RUN_DB = "bench_settlement"
TEMPLATE_DB = "bench_settlement_template"
SETTLED_DB = "bench_settlement_settled"  # after W=1 settled everything, before sealing
PGBENCH_DB = "bench_pgbench"
AMOUNT = Decimal("0.001")  # BTC per trade: 80 EUR at the offers' fixed 80,000 EUR
WAIT_QUIET = 0.0  # --wait-quiet: seconds to wait for other processes to leave the CPUs alone


# --- child processes (spawn: each sets Django up itself) -----------------------------------------


def _no_enqueue() -> None:
    """Settlements stay in the outbox (no Celery message): the benchmark's workers take them."""
    from escrow.services import transitions

    transitions._enqueue = lambda settlement_id: None


def _setup_worker(jobs: list[tuple[int, int, int, int]], out: Any) -> None:
    """jobs: (offer_id, seller_id, buyer_id, trades). Take, mark paid and release, round robin."""
    C.django_setup(RUN_DB)
    _no_enqueue()
    from django.contrib.auth import get_user_model

    from escrow import services as escrow

    users = get_user_model().objects.in_bulk([u for j in jobs for u in j[1:3]])
    left = {j[0]: j[3] for j in jobs}
    t0, done = time.perf_counter(), 0
    while any(left.values()):
        for offer_id, seller_id, buyer_id, _ in jobs:
            if not left[offer_id]:
                continue
            buyer, seller = users[buyer_id], users[seller_id]
            trade = escrow.trade_open(offer_id=offer_id, taker=buyer, amount=str(AMOUNT))
            escrow.trade_mark_paid(trade_id=trade.pk, actor=buyer)
            escrow.escrow_release(trade_id=trade.pk, actor=seller)
            left[offer_id] -= 1
            done += 1
    out.put({"pid": os.getpid(), "trades": done, "seconds": time.perf_counter() - t0})


def _backend_cpu(backend_pid: int) -> float:
    """CPU seconds (user + system) of a PostgreSQL backend on this machine, from /proc."""
    try:
        raw = Path(f"/proc/{backend_pid}/stat").read_text()
    except OSError:
        return float("nan")
    rest = raw[raw.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def _settle_worker(batch: int, listeners: bool, ready: Any, go: Any, out: Any) -> None:
    C.django_setup(RUN_DB)
    from django.db import OperationalError, connection

    from escrow import services

    if not listeners:
        services.transition_listeners.clear()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    ready.put(os.getpid())
    go.wait()
    start, cpu0, db0 = time.monotonic(), time.process_time(), _backend_cpu(backend)
    settled = batches = 0
    errors: Counter[str] = Counter()
    in_a_row, backoff = 0, 0.0
    while True:
        try:
            n = services.settlements_execute_pending(batch_size=batch)
        except OperationalError as exc:
            # What the settle task's autoretry_for=(OperationalError,) retries (e.g. a deadlock):
            # the batch rolled back; count it and go on, as a Celery worker would.
            cause = exc.__cause__ or exc
            where = getattr(getattr(cause, "diag", None), "context", None) or ""
            where = f" ({where.strip().splitlines()[0]})" if where.strip() else ""
            errors[f"{type(cause).__name__}: {str(cause).splitlines()[0]}{where}"] += 1
            in_a_row += 1
            print(
                f"    worker {os.getpid()}: batch rolled back ({type(cause).__name__}), "
                f"{in_a_row} in a row, {settled} settled so far",
                file=sys.stderr,
                flush=True,
            )
            if in_a_row >= 50:
                raise
            # Celery's retry_backoff=True with its default jitter: a random wait up to 1, 2, 4, ...
            # seconds (max 60). Retrying at once instead can keep workers deadlocking on the same
            # rows (seen: 101 rollbacks in a row at W=4 before this backoff was added).
            pause = random.uniform(0, min(60, 2 ** (in_a_row - 1)))  # noqa: S311 - jitter
            backoff += pause
            time.sleep(pause)
            continue
        in_a_row = 0
        if not n:
            break
        settled += n
        batches += 1
    end = time.monotonic()
    out.put(
        {
            "pid": os.getpid(),
            "settled": settled,
            "batches": batches,
            "start": start,
            "end": end,
            "cpu": time.process_time() - cpu0,
            # The worker keeps one connection throughout: its backend's CPU is the server's
            # share of this worker's work.
            "db_cpu": _backend_cpu(backend) - db0,
            "errors": dict(errors),
            "backoff_s": backoff,
        }
    )


def _seal_worker(ready: Any, go: Any, out: Any) -> None:
    C.django_setup(RUN_DB)
    from django.db import connection

    from ledger.services import ledger_seal_pending

    connection.ensure_connection()
    ready.put(os.getpid())
    go.wait()
    start = time.monotonic()
    sealed = ledger_seal_pending()
    out.put({"pid": os.getpid(), "sealed": sealed, "start": start, "end": time.monotonic()})


_SQL_TABLE = re.compile(r'(?:FROM|INTO|UPDATE)\s+"?([a-z_]+)"?', re.I)
_SQL_INSERT = re.compile(r'INSERT\s+INTO\s+"?([a-z_]+)"?', re.I)


def _sql_kind(sql: str) -> str:
    words = sql.lstrip().split(None, 2)
    head = words[0].upper() if words else "?"
    if head in ("SAVEPOINT", "RELEASE", "ROLLBACK"):
        return "SAVEPOINT/RELEASE"
    # WITH ... INSERT (the ledger's batch posting): name the table it writes
    m = (_SQL_INSERT if head == "WITH" else _SQL_TABLE).search(sql)
    table = m.group(1) if m else ""
    if head == "WITH" and m:
        head = "WITH ... INSERT"
    lock = " FOR UPDATE" if "FOR UPDATE" in sql.upper() else ""
    return f"{head} {table}{lock}".strip()


def _profile_worker(batch: int, out_path: str, out: Any) -> None:
    """One worker, in-process, under cProfile; every query timed (execute_wrapper) and the queries
    of the first batch captured (CaptureQueriesContext)."""
    C.django_setup(RUN_DB)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from escrow import services

    per_kind: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            row = per_kind[_sql_kind(sql)]
            row[0] += 1
            row[1] += time.perf_counter() - t0

    connection.ensure_connection()
    with CaptureQueriesContext(connection) as first:
        first_settled = services.settlements_execute_pending(batch_size=batch)
    first_kinds = Counter(_sql_kind(q["sql"]) for q in first.captured_queries)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    settled = 0
    with connection.execute_wrapper(timed):
        profiler.enable()
        while n := services.settlements_execute_pending(batch_size=batch):
            settled += n
        profiler.disable()
    wall = time.perf_counter() - start
    profiler.dump_stats(out_path)
    out.put(
        {
            "first_settled": first_settled,
            "first_queries": len(first.captured_queries),
            "first_kinds": dict(first_kinds),
            "settled": settled,
            "wall": wall,
            "per_kind": {k: tuple(v) for k, v in per_kind.items()},
        }
    )


def collect(out: Any, procs: list[Any]) -> list[dict[str, Any]]:
    """One result per process; stop (not hang) if a process dies without one."""
    import queue

    results: list[dict[str, Any]] = []
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=1))
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead or (all(p.exitcode == 0 for p in procs) and len(results) < len(procs)):
                try:
                    while True:
                        results.append(out.get(timeout=2))
                except queue.Empty:
                    pass
                if len(results) < len(procs):
                    for p in procs:
                        p.kill()
                    sys.exit(f"a child process died (exit codes {[p.exitcode for p in procs]})")
    return results


# --- the main process ------------------------------------------------------------------------


class ActivitySampler(threading.Thread):
    """Samples pg_stat_activity of the run's database every 50 ms: what its backends are doing."""

    def __init__(self, database: str) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.counts: Counter[str] = Counter()
        self._halt = threading.Event()

    def run(self) -> None:
        with C.admin_connect() as conn:
            while not self._halt.is_set():
                rows = conn.execute(
                    "SELECT state, wait_event_type FROM pg_stat_activity "
                    "WHERE datname = %s AND backend_type = 'client backend' "
                    "AND pid <> pg_backend_pid()",
                    [self.database],
                ).fetchall()
                for state, wait in rows:
                    if state == "active":
                        key = "lock" if wait == "Lock" else ("db" if wait is None else "db-wait")
                    elif state == "idle in transaction":
                        key = "client-in-txn"
                    else:
                        key = "client-idle"
                    self.counts[key] += 1
                time.sleep(0.05)

    def stop(self) -> dict[str, float]:
        self._halt.set()
        self.join()
        total = sum(self.counts.values()) or 1
        return {k: v / total for k, v in self.counts.items()}


def run_pgbench(seconds: int) -> dict[str, float]:
    pg_bin = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
    conn = ["-h", "127.0.0.1", "-p", os.environ["PGPORT_TEST"], "-U", "postgres"]
    C.create_db(PGBENCH_DB)
    subprocess.run(
        [f"{pg_bin}/pgbench", *conn, "-i", "-s", "10", "-q", PGBENCH_DB],
        check=True,
        capture_output=True,
    )
    results = {"background": C.wait_quiet(WAIT_QUIET)}
    for label, args in (
        ("c8", ["-c", "8", "-j", "2", "-T", str(seconds)]),
        ("c1", ["-c", "1", "-j", "1", "-T", str(max(5, seconds // 2))]),
    ):
        split = C.CpuSplit()
        split.start()
        proc = subprocess.run(
            [f"{pg_bin}/pgbench", *conn, *args, "-M", "prepared", PGBENCH_DB],
            check=True,
            capture_output=True,
            text=True,
        )
        m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", proc.stdout)
        if not m:
            sys.exit(f"could not parse pgbench output:\n{proc.stdout}\n{proc.stderr}")
        results[label] = float(m.group(1))
        cpu = split.stop()
        results[f"{label}_others"] = cpu["others"]
        # CPU of pgbench and of its server's backends, per transaction.
        results[f"{label}_cpu_ms"] = cpu["ours"] / results[label] * 1e3
        print(f"    pgbench {' '.join(args)} -M prepared: {results[label]:,.0f} tps", flush=True)
    C.drop_db(PGBENCH_DB)
    return results


def build_template(trades: int, users: int, procs: int, bulk: bool = True) -> dict[str, Any]:
    """Users, deposits and offers through the services in this process; the trades in `procs`
    spawned processes (disjoint sellers and buyers) or, with bulk, one trade per pair through the
    services and the rest copied from it set-based (_replicate_trade); seal the setup's entries;
    keep a template."""
    from django.contrib.auth import get_user_model

    from escrow.models import Settlement, Trade
    from ledger import services as ledger
    from marketplace import services as market

    C.close_django()
    C.create_db(RUN_DB)
    migrate_s = C.migrate_quietly()
    User = get_user_model()
    jobs: list[tuple[int, int, int, int]] = []
    t0 = time.perf_counter()
    for k in range(users):
        n = trades // users + (1 if k < trades % users else 0)
        seller = User.objects.create_user(f"bench_seller_{k}", f"seller{k}@bench.test")
        buyer = User.objects.create_user(f"bench_buyer_{k}", f"buyer{k}@bench.test")
        ledger.deposit_credit(
            user=seller,
            asset_code="BTC",
            amount=str(n * AMOUNT * 2 + 1),
            reference="bench",
            actor=None,
        )
        offer = market.offer_create(
            maker=seller,
            side="sell",
            asset="BTC",
            fiat="EUR",
            price_type="fixed",
            price="80000",
            amount=str(n * AMOUNT),
            min_fiat="10",
            max_fiat="40000",
            payment_methods=["sepa"],
            payment_window_minutes=180,
        )
        jobs.append((offer.pk, seller.pk, buyer.pk, n))
    if bulk:
        from escrow import services as escrow
        from escrow.services import transitions

        real_enqueue = transitions._enqueue
        transitions._enqueue = lambda settlement_id: None
        users_by_pk = User.objects.in_bulk([u for j in jobs for u in j[1:3]])
        done = []
        for offer_id, seller_id, buyer_id, n in jobs:
            seller, buyer = users_by_pk[seller_id], users_by_pk[buyer_id]
            trade = escrow.trade_open(offer_id=offer_id, taker=buyer, amount=str(AMOUNT))
            escrow.trade_mark_paid(trade_id=trade.pk, actor=buyer)
            escrow.escrow_release(trade_id=trade.pk, actor=seller)
            copied = _replicate_trade(trade.pk, n - 1)
            done.append({"pid": os.getpid(), "trades": copied + 1, "seconds": 0.0})
        transitions._enqueue = real_enqueue
    else:
        C.close_django()
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        workers = [
            ctx.Process(target=_setup_worker, args=(jobs[p::procs], out)) for p in range(procs)
        ]
        for w in workers:
            w.start()
        done = collect(out, workers)
        for w in workers:
            w.join()
            if w.exitcode:
                sys.exit(f"setup worker failed (exit {w.exitcode})")
    trades_s = time.perf_counter() - t0
    releasing = Trade.objects.filter(state=Trade.State.RELEASING).count()
    pending = Settlement.objects.filter(status=Settlement.Status.PENDING).count()
    if releasing != trades or pending != trades:
        sys.exit(f"setup made {releasing} releasing trades, {pending} pending settlements")
    t1 = time.perf_counter()
    setup_sealed = ledger.ledger_seal_pending()
    seal_s = time.perf_counter() - t1
    from ledger.replay import verify_ledger

    report = verify_ledger()
    if not report.ok:
        sys.exit(f"the setup's ledger does not verify: {report.errors[:3]}")
    C.close_django()
    C.create_db(TEMPLATE_DB, template=RUN_DB)
    return {
        "migrate_s": migrate_s,
        "trades_s": trades_s,
        "per_proc": done,
        "setup_sealed": setup_sealed,
        "setup_seal_s": seal_s,
    }


def _replicate_trade(template_id: int, copies: int) -> int:
    """`copies` more released trades just like `template_id` (made through the services: same
    offer, parties, amount, fees, events and pending settlement), written set-based: a trade row,
    an escrow account holding the amount, the pending hold transfer, the three audit events and
    the outbox row each; the seller's pending debits and the offer's availability follow.
    verify_ledger after sealing checks that the ledger side of it adds up."""
    from django.db import connection, transaction
    from django.db.models import F

    from escrow.models import EscrowEvent, Settlement, Trade
    from ledger.models import LedgerAccount, Transfer
    from marketplace.models import Offer

    def cols(model: Any, *skip: str) -> list[str]:
        return [
            f.column
            for f in model._meta.concrete_fields
            if not f.primary_key and f.column not in skip
        ]

    template = Trade.objects.select_related("escrow_hold").get(pk=template_id)
    hold = template.escrow_hold
    trade_cols = ", ".join(cols(Trade, "escrow_hold_id"))
    event_cols = cols(EscrowEvent, "trade_id")
    settle_cols = cols(Settlement, "trade_id")
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO escrow_trade ({trade_cols}) SELECT {trade_cols} "  # noqa: S608
            "FROM escrow_trade, generate_series(1, %s) WHERE id = %s RETURNING id",
            [copies, template_id],
        )
        ids = sorted(r[0] for r in cur.fetchall())
        cur.execute(
            "INSERT INTO ledger_ledgeraccount (code, asset_id, kind, debits_pending, "
            "debits_posted, credits_pending, credits_posted, created_at) "
            "SELECT 'escrow:trade:' || t, %s, %s, 0, 0, %s, 0, now() "
            "FROM unnest(%s::bigint[]) AS t ORDER BY t RETURNING id, code",
            [hold.asset_id, LedgerAccount.Kind.ESCROW, hold.amount, ids],
        )
        escrow = {int(code.rsplit(":", 1)[1]): pk for pk, code in cur.fetchall()}
        cur.execute(
            "INSERT INTO ledger_transfer (idempotency_key, asset_id, debit_account_id, "
            "credit_account_id, amount, kind, flags, reference, memo, created_at, prev_hash, "
            "hash, leaf_hash) "
            "SELECT 'trade:' || t || ':hold', %s, %s, e, %s, %s, %s, t, '', now(), '', '', '' "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS u(t, e) ORDER BY t RETURNING id, reference",
            [
                hold.asset_id,
                hold.debit_account_id,
                hold.amount,
                hold.kind,
                Transfer.Flags.PENDING,
                ids,
                [escrow[t] for t in ids],
            ],
        )
        holds = dict((t, pk) for pk, t in cur.fetchall())
        cur.execute(
            "UPDATE escrow_trade t SET escrow_hold_id = u.h "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS u(id, h) WHERE t.id = u.id",
            [ids, [holds[t] for t in ids]],
        )
        ev = ", ".join(event_cols)
        cur.execute(
            f"INSERT INTO escrow_escrowevent (trade_id, {ev}) "  # noqa: S608
            f"SELECT u.t, {', '.join('e.' + c for c in event_cols)} "
            "FROM escrow_escrowevent e, unnest(%s::bigint[]) AS u(t) "
            "WHERE e.trade_id = %s ORDER BY u.t, e.id",
            [ids, template_id],
        )
        sc = ", ".join(settle_cols)
        cur.execute(
            f"INSERT INTO escrow_settlement (trade_id, {sc}) "  # noqa: S608
            f"SELECT u.t, {', '.join('s.' + c for c in settle_cols)} "
            "FROM escrow_settlement s, unnest(%s::bigint[]) AS u(t) "
            "WHERE s.trade_id = %s ORDER BY u.t",
            [ids, template_id],
        )
        LedgerAccount.objects.filter(pk=hold.debit_account_id).update(
            debits_pending=F("debits_pending") + hold.amount * copies
        )
        Offer.objects.filter(pk=template.offer_id).update(
            available=F("available") - template.amount * copies
        )
    return len(ids)


def check_settled(trades: int) -> list[str]:
    """Every trade completed exactly once: state, outbox row, audit event and ledger postings."""
    from django.db.models import Count

    from escrow.models import EscrowEvent, Settlement, Trade
    from ledger.models import LedgerAccount, Transfer

    problems = []
    states = dict(Trade.objects.values_list("state").annotate(n=Count("id")))
    if states != {Trade.State.COMPLETED: trades}:
        problems.append(f"trade states {states}")
    done = Settlement.objects.filter(status=Settlement.Status.DONE, attempts=1).count()
    if done != trades:
        problems.append(f"{done} settlements done once, not {trades}")
    events = (
        EscrowEvent.objects.filter(new_state=Trade.State.COMPLETED)
        .values("trade_id")
        .annotate(n=Count("id"))
    )
    once = sum(1 for e in events if e["n"] == 1)
    if once != trades or len(events) != trades:
        problems.append(f"{once} trades with exactly one 'completed' event, not {trades}")
    for kind, flags in (
        ("trade_payout", "single"),
        ("trade_fee", "single"),
        ("escrow_hold", "post_pending"),
    ):
        rows = (
            Transfer.objects.filter(kind=kind, flags=flags)
            .values("reference")
            .annotate(n=Count("id"))
        )
        ok = sum(1 for r in rows if r["n"] == 1 and r["reference"])
        if ok != trades or len(rows) != trades:
            problems.append(f"{ok} trades with exactly one {kind}/{flags} transfer, not {trades}")
    fees = LedgerAccount.objects.get(code="fees:BTC").credits_posted
    expected = sum(t.fee for t in Trade.objects.only("seller_fee", "buyer_fee"))
    if fees != expected:
        problems.append(f"fees account holds {fees}, trades' fees sum to {expected}")
    return problems


def seal_and_verify() -> dict[str, Any]:
    from ledger.models import Transfer
    from ledger.replay import verify_ledger
    from ledger.services import ledger_seal_pending

    unsealed = Transfer.objects.filter(seq__isnull=True).count()
    t0 = time.perf_counter()
    sealed = ledger_seal_pending()
    seal_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    report = verify_ledger()
    verify_s = time.perf_counter() - t1
    return {
        "unsealed": unsealed,
        "sealed": sealed,
        "seal_s": seal_s,
        "verify_ok": report.ok and report.unsealed == 0,
        "verify_errors": report.errors[:3],
        "entries": report.entries,
        "verify_s": verify_s,
    }


def run_settlement(
    workers: int, batch: int, trades: int, listeners: bool = True, keep_as: str | None = None
) -> dict[str, Any]:
    C.close_django()
    C.create_db(RUN_DB, template=TEMPLATE_DB)
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_settle_worker, args=(batch, listeners, ready, go, out))
        for _ in range(workers)
    ]
    for p in procs:
        p.start()
    collect(ready, procs)
    background = C.wait_quiet(WAIT_QUIET)
    sampler, split = ActivitySampler(RUN_DB), C.CpuSplit()
    sampler.start()
    split.start()
    cpu_self0 = time.process_time()
    t0 = time.monotonic()
    go.set()
    results = collect(out, procs)
    wall = max(r["end"] for r in results) - t0
    cpu = split.stop()
    sampler_cpu = time.process_time() - cpu_self0
    activity = sampler.stop()
    for p in procs:
        p.join()
    settled = sum(r["settled"] for r in results)
    problems = check_settled(trades)
    if settled != trades:
        problems.append(f"workers report {settled} settled, not {trades}")
    if keep_as:
        C.close_django()
        C.create_db(keep_as, template=RUN_DB)
    sealing = seal_and_verify()
    if not sealing["verify_ok"]:
        problems.append(f"verify_ledger failed: {sealing['verify_errors']}")
    worker_cpu = sum(r["cpu"] for r in results)
    db_cpu = sum(r["db_cpu"] for r in results)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["errors"])
    return {
        "errors": dict(errors),
        "backoff_s": sum(r["backoff_s"] for r in results),
        "cpu_ms": worker_cpu / settled * 1e3,
        "db_cpu_ms": db_cpu / settled * 1e3,
        "workers": workers,
        "background": background,
        "others": cpu["others"],
        "ours_cores": cpu["ours"],
        "settled": settled,
        "wall": wall,
        "rate": settled / wall,
        "per_worker": [r["settled"] for r in results],
        "batches": sum(r["batches"] for r in results),
        "busy_cores": cpu["busy"],
        "python_cores": worker_cpu / wall,
        "sampler_cores": sampler_cpu / wall,
        "activity": activity,
        "problems": problems,
        **sealing,
    }


def run_race(trades: int) -> dict[str, Any]:
    """Two sequencers over the backlog W=1 left: each seals in batches under the advisory lock."""
    from ledger.models import Transfer
    from ledger.replay import verify_ledger

    C.close_django()
    C.create_db(RUN_DB, template=SETTLED_DB)
    unsealed = Transfer.objects.filter(seq__isnull=True).count()
    sealed_before = Transfer.objects.filter(seq__isnull=False).count()
    C.close_django()
    ctx = mp.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_seal_worker, args=(ready, go, out)) for _ in range(2)]
    for p in procs:
        p.start()
    collect(ready, procs)
    background = C.wait_quiet(WAIT_QUIET)
    split = C.CpuSplit()
    split.start()
    t0 = time.monotonic()
    go.set()
    results = collect(out, procs)
    wall = max(r["end"] for r in results) - t0
    others_during = split.stop()["others"]
    for p in procs:
        p.join()
    seqs = Transfer.objects.filter(seq__isnull=False)
    total = seqs.count()
    top = seqs.order_by("-seq").values_list("seq", flat=True).first()
    report = verify_ledger()
    problems = []
    if sum(r["sealed"] for r in results) != unsealed:
        problems.append(f"sequencers sealed {[r['sealed'] for r in results]}, not {unsealed}")
    if total != sealed_before + unsealed or top != total:
        problems.append(f"{total} sealed, highest seq {top}: gaps or duplicates")
    if not report.ok:
        problems.append(f"verify_ledger: {report.errors[:3]}")
    return {
        "unsealed": unsealed,
        "wall": wall,
        "rate": unsealed / wall,
        "split": [r["sealed"] for r in results],
        "background": background,
        "others": others_during,
        "problems": problems,
    }


def run_profile(batch: int, out_path: str) -> dict[str, Any]:
    C.close_django()
    C.create_db(RUN_DB, template=TEMPLATE_DB)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_profile_worker, args=(batch, out_path, out))
    proc.start()
    result = collect(out, [proc])[0]
    proc.join()
    stats = pstats.Stats(out_path)
    wanted = {
        (
            "escrow/services/settlement.py",
            "settlements_execute_pending",
        ): "settlements_execute_pending (all)",
        (
            "escrow/services/settlement.py",
            "_settle_claimed",
        ): "  _settle_claimed (in the transaction)",
        (
            "escrow/services/settlement.py",
            "_settle_batch",
        ): "    _settle_batch (set-based, PostgreSQL)",
        ("ledger/services/transfers.py", "accounts_for_users"): "      accounts_for_users",
        ("ledger/services/transfers.py", "accounts_fees"): "      accounts_fees",
        (
            "ledger/services/transfers.py",
            "transfers_post_select",
        ): "      ledger transfers_post_select (transfers + balances)",
        ("escrow/services/transitions.py", "announce_many"): "      announce_many",
        (
            "escrow/services/settlement.py",
            "_settle_one_by_one",
        ): "    _settle_one_by_one (fallback)",
        (
            "django/db/backends/base/base.py",
            "run_and_clear_commit_hooks",
        ): "  on-commit hooks (after COMMIT)",
        ("notifications/listeners.py", "on_trade_transitions"): "    notification listener",
        ("django/db/backends/utils.py", "_execute"): "  all SQL (CursorWrapper._execute)",
        ("django/db/models/base.py", "__init__"): "  Model.__init__ (rows -> objects)",
    }
    picked: dict[str, tuple[float, int]] = {}
    for (path, _line, func), (_cc, nc, _tt, ct, _callers) in stats.stats.items():
        for (suffix, name), label in wanted.items():
            if func == name and path.endswith(suffix):
                old = picked.get(label, (0.0, 0))
                picked[label] = (old[0] + ct, old[1] + nc)
    stream = io.StringIO()
    pstats.Stats(out_path, stream=stream).sort_stats("tottime").print_stats(15)
    result["functions"] = [(label, *picked.get(label, (0.0, 0))) for label in wanted.values()]
    result["top_tottime"] = stream.getvalue()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trades", type=int, default=5000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    parser.add_argument("--batch", type=int, default=None, help="default: SETTLEMENT_BATCH_SIZE")
    parser.add_argument("--users", type=int, default=8, help="seller/buyer pairs (default 8)")
    parser.add_argument("--setup-procs", type=int, default=4)
    parser.add_argument(
        "--setup",
        choices=["bulk", "services"],
        default="bulk",
        help="bulk: one trade per pair through the services, copied set-based (default); "
        "services: every trade through offer_take -> mark paid -> release (slow)",
    )
    parser.add_argument("--pgbench-seconds", type=int, default=20)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument(
        "--profile-out", default=str(Path(tempfile.gettempdir()) / "bench_settlement.prof")
    )
    parser.add_argument("--no-write", action="store_true", help="don't touch BENCHMARKS.md")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each timed phase, wait up to this long for other processes to go idle",
    )
    parser.add_argument("--render", metavar="JSON", help="re-render saved results; no measuring")
    args = parser.parse_args()
    if args.render:
        data = C.load_results(args.render)
        report = render(argparse.Namespace(**data["args"]), *[data[k] for k in RESULT_KEYS])
        print(report)
        if not args.no_write:
            C.write_section("settlement", report)
        return
    global WAIT_QUIET
    WAIT_QUIET = args.wait_quiet
    C.need_services()
    worker_counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if 1 not in worker_counts:
        worker_counts.insert(0, 1)
    C.create_db(RUN_DB)
    C.django_setup(RUN_DB)
    from django.conf import settings

    batch = args.batch or settings.SETTLEMENT_BATCH_SIZE
    info = C.machine()
    print("\n".join(C.machine_lines(info)), flush=True)
    t_all = time.perf_counter()

    with C.stopwatch("pgbench (yardstick)"):
        pgbench = run_pgbench(args.pgbench_seconds)

    procs = max(1, min(args.setup_procs, args.users))
    how = "copied set-based" if args.setup == "bulk" else f"through the services ({procs} procs)"
    with C.stopwatch(f"setup: {args.trades} released trades {how}"):
        setup = build_template(args.trades, args.users, procs, bulk=args.setup == "bulk")
    print(
        f"    migrate {setup['migrate_s']:.1f} s; trades {setup['trades_s']:.1f} s "
        f"({args.trades / setup['trades_s']:.0f} trades/s, 3 transitions each); "
        f"sealed the setup's {setup['setup_sealed']} entries in {setup['setup_seal_s']:.1f} s",
        flush=True,
    )

    runs = []
    for w in worker_counts:
        with C.stopwatch(f"settle with {w} worker(s), batch {batch}"):
            run = run_settlement(w, batch, args.trades, keep_as=SETTLED_DB if w == 1 else None)
        runs.append(run)
        print(
            f"    {run['rate']:.0f} settled/s ({run['per_worker']}); sealed {run['sealed']} "
            f"in {run['seal_s']:.1f} s; verify_ledger {'OK' if run['verify_ok'] else 'FAILED'}; "
            f"problems: {run['problems'] or 'none'}; rolled back: {run['errors'] or 'none'}",
            flush=True,
        )
    with C.stopwatch("settle with 1 worker, notification listener off (core settlement only)"):
        bare = run_settlement(1, batch, args.trades, listeners=False)
    print(f"    {bare['rate']:.0f} settled/s; problems: {bare['problems'] or 'none'}", flush=True)
    with C.stopwatch("2 sequencers racing over the W=1 backlog"):
        race = run_race(args.trades)
    print(
        f"    {race['rate']:.0f} entries/s, split {race['split']}; problems: "
        f"{race['problems'] or 'none'}",
        flush=True,
    )
    profile = None
    if not args.no_profile:
        with C.stopwatch("1 worker under cProfile, queries counted"):
            profile = run_profile(batch, args.profile_out)
    total_s = time.perf_counter() - t_all
    C.close_django()
    for name in (RUN_DB, TEMPLATE_DB, SETTLED_DB):
        C.drop_db(name)

    setup["seal_batch"] = _setting("LEDGER_SEAL_BATCH")
    setup["checkpoint_every"] = _setting("LEDGER_CHECKPOINT_EVERY")
    results = dict(
        zip(
            RESULT_KEYS,
            [info, batch, pgbench, setup, runs, bare, race, profile, total_s],
            strict=True,
        )
    )
    C.save_results("settlement", {"args": vars(args), **results})
    report = render(args, *results.values())
    print("\n" + report)
    if not args.no_write:
        C.write_section("settlement", report)
    failed = [r for r in [*runs, bare, race] if r["problems"]]
    if failed:
        sys.exit("SOME RUNS FAILED THEIR CHECKS (see above)")


RESULT_KEYS = [
    "info",
    "batch",
    "pgbench",
    "setup",
    "runs",
    "bare",
    "race",
    "profile",
    "total_s",
]


def render(
    args: Any,
    info: dict[str, str],
    batch: int,
    pgbench: dict[str, float],
    setup: dict[str, Any],
    runs: list[dict[str, Any]],
    bare: dict[str, Any],
    race: dict[str, Any],
    profile: dict[str, Any] | None,
    total_s: float,
) -> str:
    tps = pgbench["c8"]
    base = runs[0]["rate"]
    pg_cpu = pgbench["c8_cpu_ms"]
    throughput = [
        [
            r["workers"],
            r["settled"],
            f"{r['wall']:.1f}",
            f"**{r['rate']:.0f}**",
            f"**{r['rate'] / tps:.3f}x**",
            f"{r['rate'] / base:.2f}x",
            sum(r["errors"].values()),
            f"{r['sealed'] / r['seal_s']:.0f}",
            "yes" if not r["problems"] else "**NO**",
            f"{r['background']:.2f} / {r['others']:.2f}",
        ]
        for r in runs
    ]
    where = []
    for r in [*runs, bare]:
        act = r["activity"]
        where.append(
            [
                f"{r['workers']}" + ("" if r is not bare else " (no listener)"),
                f"{r['cpu_ms']:.3f} + {r['db_cpu_ms']:.3f}",
                f"{pg_cpu / (r['cpu_ms'] + r['db_cpu_ms']):.3f}x",
                f"{r['python_cores']:.2f} / {r['ours_cores']:.2f} / {r['busy_cores']:.2f}",
                f"{act.get('lock', 0):.0%}",
                f"{act.get('db', 0) + act.get('db-wait', 0):.0%}",
                f"{act.get('client-in-txn', 0) + act.get('client-idle', 0):.0%}",
            ]
        )
    errors = [
        f"- W={r['workers']}: "
        + "; ".join(f"{n} x `{e}`" for e, n in r["errors"].items())
        + f" ({r['backoff_s']:.1f} s of backoff in all)"
        for r in runs
        if r["errors"]
    ]
    best = max(runs, key=lambda r: r["rate"])
    two = next((r for r in runs if r["workers"] == 2), runs[-1])
    lines = [
        "## Settlement throughput (`bench/settlement.py`)",
        "",
        "```",
        # run under the lock the machine's sessions share, so that no other benchmark or test
        # suite runs at the same time
        "flock /tmp/bench.lock " + C.command_line().removeprefix("flock /tmp/bench.lock "),
        "```",
        "",
        *C.machine_lines(info),
        f"- Whole run: {total_s / 60:.1f} min. Settings: `bench.settings` (config.settings.local "
        "with DEBUG off and a dummy email backend; KYC_TIER0_PER_30_DAYS lifted so that a handful "
        "of users may make thousands of trades); the notification listener on, except where said.",
        "",
        (
            f"Setup through the services ({args.users} sellers and {args.users} buyers, one sell "
            "offer each; offer_take -> trade_mark_paid -> escrow_release per trade, `_enqueue` a "
            f"no-op, {max(1, min(args.setup_procs, args.users))} processes): "
            if getattr(args, "setup", "services") == "services"
            else f"Setup (`--setup bulk`: {args.users} sellers and {args.users} buyers, one sell "
            "offer each; one trade per pair through the services, the rest copied from it "
            "set-based and checked by verify_ledger before measuring): "
        )
        + f"{args.trades} trades in "
        f"{setup['trades_s']:.0f} s ({args.trades / setup['trades_s']:.0f} trades/s, i.e. "
        f"{3 * args.trades / setup['trades_s']:.0f} transitions/s); migrate "
        f"{setup['migrate_s']:.1f} s; the setup's {setup['setup_sealed']} entries sealed. Every "
        "run starts from a copy of that template (`CREATE DATABASE ... TEMPLATE`).",
        "",
        f"Yardstick, pgbench on the same server (`pgbench -i -s 10`; `-c 8 -j 2 -T "
        f"{args.pgbench_seconds} -M prepared`): **{tps:,.0f} tps** (TPC-B-like: 5 statements a "
        f"transaction), {pg_cpu:.2f} ms of CPU a transaction (pgbench and server together); one "
        f"client (`-c 1 -j 1`): {pgbench['c1']:,.0f} tps. Others' CPU during pgbench -c 8: "
        f"{pgbench['c8_others']:.2f} cores.",
        "",
        f"W worker processes, each looping `settlements_execute_pending(batch_size={batch})` until "
        f"it returns 0; then `ledger_seal_pending()` (batch {setup['seal_batch']}, "
        f"checkpoint every {setup['checkpoint_every']}) and `verify_ledger()`. Checked "
        "after each run: every trade `completed`, one done settlement (attempts = 1), one "
        "`completed` event, one post/payout/fee transfer each, the fee account equal to the "
        "trades' fees, verify_ledger OK.",
        "",
        C.table(
            [
                "W",
                "settled",
                "wall s",
                "settled/s",
                "/ pgbench tps",
                "scaling vs W=1",
                "batches rolled back",
                "seal entries/s",
                "checks",
                "others' CPU before / during",
            ],
            throughput,
        ),
        "",
        "Where the time goes:",
        "",
        C.table(
            [
                "W",
                "CPU ms per settlement: Python + PostgreSQL",
                "/ pgbench per CPU ms",
                "cores: workers / ours / machine",
                "backends waiting on a lock",
                "executing",
                "idle, waiting for Python",
            ],
            where,
        ),
        "",
        "CPU per settlement: the workers' CPU time plus their backends' (from /proc), over the "
        "settlements; '/ pgbench per CPU ms' is pgbench's CPU per transaction over a settlement's "
        "(a cost ratio, which other load on the machine distorts far less than wall time). "
        "Cores: the workers' Python; ours (the benchmark's processes and its PostgreSQL server, "
        "reaped backends included); the whole machine. Backend shares: pg_stat_activity sampled "
        "every 50 ms. Others' CPU: the machine's busy cores minus ours, in the 2 s before the "
        "run and during it (the machine is shared: other sessions run test suites on it).",
        "",
        *(
            [
                "Batches that raised OperationalError (rolled back whole, then retried by the loop "
                "as the settle task's autoretry_for would, with its exponential backoff and "
                "jitter); with PostgreSQL's context of the error:",
                "",
                *errors,
                "",
            ]
            if errors
            else []
        ),
        f"- Without the notification listener (on commit; for a batch it queues one Celery task "
        f"with the events' ids), 1 worker: **{bare['rate']:.0f} settled/s** "
        f"({bare['rate'] / tps:.3f}x pgbench; others' CPU during: {bare['others']:.2f}). "
        f"The listener costs {1 - runs[0]['rate'] / bare['rate']:.0%} of W=1 throughput and "
        f"{1 - (bare['cpu_ms'] + bare['db_cpu_ms']) / (runs[0]['cpu_ms'] + runs[0]['db_cpu_ms']):.0%}"
        " of the CPU per settlement.",
        f"- Sealing: one sequencer sealed the {runs[0]['sealed']} settlement entries of W=1 at "
        f"**{runs[0]['sealed'] / runs[0]['seal_s']:.0f} entries/s**; two sequencers racing over "
        f"the same backlog: {race['rate']:.0f} entries/s together, split {race['split']} "
        f"(others' CPU {race['others']:.2f}); the advisory lock serialized them: "
        + (
            "no gap, no duplicate seq, verify_ledger OK."
            if not race["problems"]
            else "FAILED: " + "; ".join(race["problems"])
        )
        + f" verify_ledger after W=1: {runs[0]['entries']} entries in "
        f"{runs[0]['verify_s']:.1f} s.",
    ]
    if profile:
        per = profile["settled"] or 1
        total_q = sum(c for c, _ in profile["per_kind"].values())
        db_s = sum(t for _, t in profile["per_kind"].values())
        kinds = sorted(profile["per_kind"].items(), key=lambda kv: -kv[1][1])
        batches = max(1, -(-profile["settled"] // batch))  # the profiled batches (full ones)
        funcs = {label.strip(): ct for label, ct, _ in profile["functions"]}
        wall = profile["wall"]
        lines += [
            "",
            f"Profile of one worker (cProfile, every query timed; {profile['settled']} "
            f"settlements after a first batch captured with CaptureQueriesContext; "
            f"{profile['settled'] / wall:.0f} settled/s under the profiler):",
            "",
            f"- **{total_q / batches:.0f} statements per batch** of {batch} settlements "
            f"({total_q / per:.3f} per settlement), plus BEGIN/COMMIT (the first batch: "
            f"{profile['first_queries']} statements, BEGIN and COMMIT included). Time in "
            f"`cursor.execute` (round trip + server): {db_s / wall:.0%} of the wall time, "
            f"{db_s / max(1, total_q) * 1e3:.1f} ms a statement on average.",
            "",
            C.table(
                ["statement", "per batch", "ms per settlement"],
                [[k, f"{c / batches:.1f}", f"{t / per * 1e3:.3f}"] for k, (c, t) in kinds],
            ),
            "",
            C.table(
                ["function (cumulative)", "s", "share of wall", "calls"],
                [
                    [label, f"{ct:.1f}", f"{ct / wall:.0%}", nc]
                    for label, ct, nc in profile["functions"]
                ],
            ),
        ]
        hooks = funcs.get("on-commit hooks (after COMMIT)", 0) / wall
        w1 = runs[0]
        db_share = w1["db_cpu_ms"] / (w1["cpu_ms"] + w1["db_cpu_ms"])
        lines += [
            "",
            "Reading:",
            "",
            f"- Per settlement at W=1: {w1['cpu_ms']:.3f} ms of worker (Python) CPU and "
            f"{w1['db_cpu_ms']:.3f} ms of PostgreSQL CPU ({db_share:.0%} in the database), "
            f"{(w1['cpu_ms'] + w1['db_cpu_ms']) / pg_cpu:.2f}x the CPU of one pgbench "
            f"transaction, for 3 transfers, 4 balance changes, a trade, an event and an outbox "
            f"row; a batch is a constant number of statements ({total_q / batches:.0f}). Best: {best['rate']:.0f} settled/s = {best['rate'] / tps:.3f}x "
            f"pgbench tps (target >= 1.0x: {'met' if best['rate'] >= tps else 'not met'}).",
            f"- Scaling from 1 to {runs[-1]['workers']} workers: "
            + ", ".join(f"W={r['workers']} {r['rate'] / base:.2f}x" for r in runs[1:])
            + f" on {info['nproc']} cores (others' CPU during the runs: "
            + ", ".join(f"{r['others']:.2f}" for r in runs)
            + "). Batches of different workers meet on the accounts they share (the sellers', "
            "the buyers' and the one `fees:BTC` account), which each batch locks only for its "
            "last UPDATE and the commit (backends waiting on a lock: "
            f"{two['activity'].get('lock', 0):.0%} at W={two['workers']}); with more workers "
            "than cores they also wait for CPU.",
            f"- The on-commit hooks take {hooks:.0%} of a worker's time: for a batch the "
            "notification listener queues one Celery task with the events' ids.",
        ]
    return "\n".join(lines) + "\n"


def _setting(name: str) -> Any:
    from django.conf import settings

    return getattr(settings, name)


if __name__ == "__main__":
    main()
