"""Re-computing the ledger from its transfers: the hash chain, the Merkle roots, the balances.

Streaming, in one snapshot of the database: the entries are read in ranges of seqs (each a
complete Merkle subtree: SCAN_CHUNK, a power of two) and the transfers in ranges of ids; memory
holds a range or two plus one running total per account and the open holds. On PostgreSQL, and
outside a transaction, the ranges are checked by worker processes (`python -m ledger.scan`,
one per core) on their own connections in the snapshot this process exports; the
results are combined here in order, so that the first failure reported is the first in seq
order, as if one loop had checked entry after entry. Elsewhere (SQLite, or inside a transaction
such as a test's) the same checks run here, one range after the other.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q

from ledger import chain, merkle, signing
from ledger import scan as tasks
from ledger.models import Checkpoint, LedgerAccount, SigningKey, Transfer
from marketplace.models import Asset

CHUNK = 5000  # rows a fetch through the ORM
# Entries a chain task: a power of two, so that each full one is a complete Merkle subtree.
SCAN_CHUNK = 1 << 15
# Transfer ids a balance task.
REPLAY_CHUNK = 1 << 16

Progress = Callable[[int], None] | None
Task = tuple[Any, ...]


@dataclass
class Report:
    entries: int = 0
    unsealed: int = 0
    accounts: int = 0
    workers: int = 0  # processes that checked ranges (0: this one)
    worker_peak_rss_kib: int = 0  # the largest one's peak resident memory
    errors: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def fail(self, message: str, seq: int | None = None) -> None:
        self.errors.append(message)
        if seq is not None and self.first_bad_seq is None:
            self.first_bad_seq = seq


# --- where the ranges are checked ---------------------------------------------------------------


class _Here:
    """The tasks one after the other in this process, on Django's connection (inside the
    transaction `_source` opened)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.assets = _assets()
        self.codes = tasks.AccountCodes(_load_codes)

    def bounds(self, column: str) -> tuple[int | None, int | None]:
        got = Transfer.objects.aggregate(lo=Min(column), hi=Max(column))
        return got["lo"], got["hi"]

    def accounts(self) -> Iterator[tuple]:
        return (
            LedgerAccount.objects.order_by("pk")
            .values_list(*ACCOUNT_COLUMNS)
            .iterator(chunk_size=CHUNK)
        )

    def results(self, todo: list[Task]) -> Iterator[dict]:
        for kind, first, last, *sizes in todo:
            with self._rows(kind, first, last) as fetchmany:
                if kind == "chain":
                    rows = tasks.fetched_rows(fetchmany, self.codes, self.progress)
                    heads = [first + n - 1 for n in sizes[0]]
                    scan = chain.scan_rows(rows, first, last, self.assets, self.codes, heads)
                    yield tasks.summarize(scan, sizes[0], _stored_nodes)
                else:
                    yield tasks.replay_rows(tasks.fetched_rows(fetchmany), first)

    @contextmanager
    def _rows(self, kind: str, first: int, last: int) -> Iterator[Callable[[int], list]]:
        if connection.vendor == "postgresql":
            sql = tasks.ENTRY_SQL if kind == "chain" else tasks.TRANSFER_SQL
            with connection.connection.cursor(name="ledger_rows", binary=True) as cursor:
                cursor.execute(sql, [first, last])
                yield cursor.fetchmany
            return
        if kind == "chain":
            qs = Transfer.objects.filter(seq__gte=first, seq__lte=last).order_by("seq")
            rows = map(_as_text, qs.values_list(*chain.ROW_COLUMNS).iterator(chunk_size=CHUNK))
        else:
            qs = Transfer.objects.filter(id__gte=first, id__lte=last).order_by("id")
            rows = qs.values_list(*REPLAY_COLUMNS).iterator(chunk_size=CHUNK)
        yield lambda n: list(itertools.islice(rows, n))


REPLAY_COLUMNS = (
    "id",
    "seq",
    "flags",
    "amount",
    "debit_account_id",
    "credit_account_id",
    "pending_id",
)
ACCOUNT_COLUMNS = (
    "id",
    "code",
    "kind",
    "asset_id",
    "debits_pending",
    "debits_posted",
    "credits_pending",
    "credits_posted",
)


ACCOUNT_SQL = f"SELECT {', '.join(ACCOUNT_COLUMNS)} FROM ledger_ledgeraccount ORDER BY id"  # noqa: S608


def _stored_nodes(level: int, first: int, end: int) -> list[tuple[int, str]]:
    with connection.cursor() as cursor:
        cursor.execute(tasks.NODES_SQL, [level, first, end])
        return cursor.fetchall()


def _as_text(row: tuple) -> tuple:
    """An ORM row with amount and created_at as PostgreSQL's texts (see chain.scan_rows)."""
    created = row[10].astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return (*row[:8], format(row[8], "f"), row[9], created, *row[11:])


def _assets() -> dict[int, tuple[str, int]]:
    rows = Asset.objects.values_list("pk", "code", "precision")
    return {pk: (code, precision) for pk, code, precision in rows}


def _load_codes(ids: list[int]) -> list[tuple[int, str]]:
    return list(LedgerAccount.objects.filter(pk__in=ids).values_list("pk", "code"))


class _Workers:
    """The tasks in worker processes (`python -m ledger.scan`: no Django), each on
    its own connection in the snapshot exported by `snap`'s transaction; results in task order.
    Leaving early ends them."""

    def __init__(self, progress: Progress, workers: int, snap: Any, conninfo: str) -> None:
        self.progress = progress
        self.workers = workers
        self.snap = snap
        (snapshot,) = snap.execute("SELECT pg_export_snapshot()").fetchone()
        self.init = (conninfo, snapshot, _assets())
        self.started = 0
        self.peak_rss_kib = 0

    def bounds(self, column: str) -> tuple[int | None, int | None]:
        sql = f"SELECT min({column}), max({column}) FROM ledger_transfer"  # noqa: S608 - ours
        return self.snap.execute(sql).fetchone()

    def accounts(self) -> Iterator[tuple]:
        with self.snap.cursor(name="ledger_accounts") as cursor:
            cursor.execute(ACCOUNT_SQL)
            yield from tasks.fetched_rows(cursor.fetchmany)

    def results(self, todo: list[Task]) -> Iterator[dict]:
        inbox: queue.Queue[tuple[int, str, Any]] = queue.Queue()
        path = [str(settings.BASE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        procs: list[subprocess.Popen] = []
        try:
            for _ in range(min(self.workers, len(todo))):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "ledger.scan"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=env,
                )
                procs.append(proc)
                self.started = len(procs)
                threading.Thread(
                    target=_read_messages, args=(len(procs) - 1, proc.stdout, inbox), daemon=True
                ).start()
                _send(proc, self.init)
            queued = iter(enumerate(todo))
            doing: dict[int, int] = {}  # worker -> index of its task
            for worker, proc in enumerate(procs):
                _next(worker, proc, queued, doing)
            done: dict[int, dict] = {}
            for index in range(len(todo)):
                while index not in done:
                    worker, kind, payload = inbox.get()
                    if kind == "progress":
                        if self.progress is not None:
                            self.progress(payload)
                    elif kind == "result":
                        self.peak_rss_kib = max(self.peak_rss_kib, payload.pop("peak_rss_kib", 0))
                        done[doing.pop(worker)] = payload
                        _next(worker, procs[worker], queued, doing)
                    elif kind == "exit" and worker not in doing:
                        continue  # it had nothing more to do
                    else:
                        raise RuntimeError(f"verify_ledger worker {worker} failed:\n{payload}")
                yield done.pop(index)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
                proc.stdin.close()
                proc.stdout.close()


def _send(proc: subprocess.Popen, message: Any) -> None:
    pickle.dump(message, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
    proc.stdin.flush()


def _next(worker: int, proc: subprocess.Popen, queued: Iterator, doing: dict[int, int]) -> None:
    index, task = next(queued, (None, None))
    if index is None:
        _send(proc, None)
    else:
        doing[worker] = index
        _send(proc, task)


def _read_messages(worker: int, stream: Any, inbox: queue.Queue) -> None:
    while True:
        try:
            message = pickle.load(stream)  # noqa: S301 - our own child's pipe
        except (EOFError, OSError, ValueError):
            inbox.put((worker, "exit", "it exited"))
            return
        inbox.put((worker, *message))


def _workers() -> int:
    return int(getattr(settings, "LEDGER_VERIFY_WORKERS", 0) or os.cpu_count() or 1)


def _conninfo() -> str:
    from psycopg import conninfo, pq

    allowed = {d.keyword.decode() for d in pq.Conninfo.get_defaults()}
    params = connection.get_connection_params()
    return conninfo.make_conninfo(
        **{k: v for k, v in params.items() if k in allowed and isinstance(v, str | int)}
    )


@contextmanager
def _source(progress: Progress, workers: int | None, tasks_: int) -> Iterator[_Here | _Workers]:
    """One snapshot of the ledger for every read, and where the tasks run: worker processes on
    PostgreSQL outside a transaction when there are 2 or more cores and about `tasks_` tasks
    (starting the workers costs more than small ledgers take), this process else."""
    workers = workers or _workers()
    workers = workers if tasks_ >= 2 * workers else 1
    if workers > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block:
        import psycopg

        conninfo = _conninfo()
        with psycopg.connect(conninfo) as snap:
            snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            snap.read_only = True
            with snap.transaction():
                yield _Workers(progress, workers, snap, conninfo)
        return
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                if outermost:  # one snapshot for every read
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cursor.execute("SET LOCAL DateStyle = ISO")
        yield _Here(progress)


# --- the checks -----------------------------------------------------------------------------------


def _chain_tasks(
    report: Report, source: _Here | _Workers, chunk: int
) -> tuple[list[Task], list[Checkpoint]] | None:
    """The seq ranges to scan, each with the checkpoints that end inside it; None when there is
    nothing to scan because the first entry is not seq 1."""
    if chunk & (chunk - 1):
        raise ValueError("chunk must be a power of two")
    checkpoints = list(Checkpoint.objects.order_by("tree_size"))
    keys = dict(SigningKey.objects.values_list("key_id", "public_key"))
    for checkpoint in checkpoints:
        public = keys.get(checkpoint.key_id)
        if public is None or not signing.verify_signature(
            public, checkpoint.signed_fields(), checkpoint.signature
        ):
            report.fail(
                f"checkpoint {checkpoint.tree_size}: signature does not verify",
                checkpoint.tree_size,
            )
    first, last = source.bounds("seq")
    if first is not None and first != 1:
        report.fail(f"seq 1: missing or out of order (found seq {first} next)", 1)
        return None
    todo: list[Task] = []
    at = iter(checkpoints)
    checkpoint = next(at, None)
    for lo in range(1, (last or 0) + 1, chunk):
        hi = min(lo + chunk - 1, last)
        sizes = []
        while checkpoint is not None and checkpoint.tree_size <= hi:
            sizes.append(checkpoint.tree_size - lo + 1)
            checkpoint = next(at, None)
        todo.append(("chain", lo, hi, sizes))
    return todo, checkpoints


def _check_chain(
    report: Report,
    todo: list[Task],
    checkpoints: list[Checkpoint],
    results: Iterator[dict],
    chunk: int,
) -> None:
    """Combine the scans of consecutive seq ranges, in order; stop at the first failure (and
    take the rest of the scans from `results` unread). Then the stored Merkle nodes above the
    ranges (those inside a range are each scan's)."""
    scans = (next(results) for _ in todo)
    roots: list[bytes] = []
    try:
        complete = _combine_scans(report, scans, checkpoints, roots, chunk)
    finally:
        for _ in scans:
            pass
    if complete:
        _check_upper_nodes(report, roots, chunk.bit_length() - 1)
    last = todo[-1][2] if todo else 0
    beyond = [c.tree_size for c in checkpoints if c.tree_size > last]
    if beyond and complete:
        report.fail(f"checkpoint {beyond[0]}: covers entries that are missing", last + 1)


def _check_upper_nodes(report: Report, roots: list[bytes], bits: int) -> None:
    """The stored nodes above the complete ranges of 2**bits leaves (whose roots these are),
    against the tree the roots make."""
    levels = merkle.subtree_levels(roots)
    if len(levels) < 2:
        return
    bad = tasks.node_error(levels, 0, _stored_nodes, base_level=bits)
    if bad is not None:
        report.fail(bad[1], bad[0])


def _combine_scans(
    report: Report,
    scans: Iterator[dict],
    checkpoints: list[Checkpoint],
    roots: list[bytes],
    chunk: int,
) -> bool:
    """False at the first failure. The roots of complete ranges go to `roots`."""
    by_size = {c.tree_size: c for c in checkpoints}
    tree = merkle.StreamingRoot()
    prev_hash = chain.GENESIS_HASH
    for scan in scans:
        lo = scan["first_seq"]
        if scan["first_prev"] is not None and scan["first_prev"] != prev_hash:
            report.fail(f"seq {lo}: prev_hash does not match the hash of seq {lo - 1}", lo)
            return False
        bad_seq = scan["error"][0] if scan["error"] else None
        for size, edge in scan["frontiers"].items():
            seq = lo + size - 1
            if bad_seq is not None and seq >= bad_seq:
                break
            signed = by_size[seq]
            if (
                signed.root_hash != tree.root(*edge).hex()
                or signed.chain_head != scan["heads"][seq]
            ):
                report.entries += size - 1
                report.fail(
                    f"checkpoint {seq}: signed root or chain head differs from the entries", seq
                )
                return False
        report.entries += scan["count"]
        found = [e for e in (scan["error"], scan["node_error"]) if e]
        if found:
            first_bad = min(found)
            report.fail(first_bad[1], first_bad[0])
            return False
        for level, node in scan["tail"]:
            tree.extend(level, node)
        if scan["count"] == chunk:
            roots.append(scan["tail"][0][1])
        prev_hash = scan["last_hash"]
    return True


def _balance_tasks(source: _Here | _Workers) -> list[Task]:
    first, last = source.bounds("id")
    if first is None:
        return []
    return [
        ("balances", lo, min(lo + REPLAY_CHUNK - 1, last))
        for lo in range(first, last + 1, REPLAY_CHUNK)
    ]


def _check_balances(
    report: Report, todo: list[Task], source: _Here | _Workers, results: Iterator[dict]
) -> None:
    """Replaying every transfer must give each account's stored columns; each asset sums to
    zero. Combines the replays of consecutive id ranges (ledger.scan.replay_rows), in order."""
    zero = Decimal(0)
    totals: dict[int, list[Decimal]] = defaultdict(lambda: [zero, zero, zero, zero])
    holds: dict[int, Decimal] = {}
    failures: list[tuple[int, int | None, int | None]] = []
    for _ in todo:
        part = next(results)
        for tid, seq, flags, amount, debit, credit, pending_id in part["deferred"]:
            held = holds.pop(pending_id, None)
            if held is None:
                failures.append((tid, seq, pending_id))
                continue
            tasks.resolve(totals[debit], totals[credit], flags, held, amount)
        for account_id, four in part["totals"].items():
            total = totals[account_id]
            for i in range(4):
                total[i] += four[i]
        holds.update(part["holds"])
        failures.extend(part["failures"])
        report.unsealed += part["unsealed"]
    for tid, seq, pending_id in sorted(failures):
        report.fail(f"transfer {tid}: resolves hold {pending_id}, which is not an open hold", seq)
    per_asset: dict[int, Decimal] = defaultdict(Decimal)
    for account_id, code, kind, asset_id, *stored in source.accounts():
        report.accounts += 1
        dp, dpo, cp, cpo = totals.get(account_id, (zero, zero, zero, zero))
        stored = [Decimal(x) for x in stored]
        if stored != [dp, dpo, cp, cpo]:
            report.fail(
                f"account {code}: stored balances {tuple(map(str, stored))} differ from the "
                f"replayed transfers {(str(dp), str(dpo), str(cp), str(cpo))}",
                _first_seq_of(account_id),
            )
        if kind != LedgerAccount.Kind.WORLD and dpo + dp > cpo:
            report.fail(f"account {code}: overdrawn", _first_seq_of(account_id))
        per_asset[asset_id] += stored[3] - stored[1]
    codes = dict(Asset.objects.values_list("pk", "code"))
    for asset_id, total in per_asset.items():
        if total != 0:
            report.fail(f"asset {codes.get(asset_id)}: balances sum to {total}, not zero")


def _first_seq_of(account_id: int) -> int | None:
    """The seq of the account's first transfer (None: not sealed yet), to name where it went
    wrong."""
    return (
        Transfer.objects.filter(Q(debit_account_id=account_id) | Q(credit_account_id=account_id))
        .order_by("id")
        .values_list("seq", flat=True)
        .first()
    )


def verify_chain(
    report: Report, progress: Progress = None, *, workers: int | None = None, chunk: int = 0
) -> None:
    """Each sealed entry must follow the previous one (seq without gaps, prev_hash, its own hash
    re-computed from its fields), and the Merkle root at every checkpoint must be the one it
    signed."""
    chunk = chunk or SCAN_CHUNK
    with _source(progress, workers, _about(chunk)[0]) as source:
        planned = _chain_tasks(report, source, chunk)
        if planned is not None:
            todo, checkpoints = planned
            _check_chain(report, todo, checkpoints, source.results(todo), chunk)
        _note_workers(report, source)


def verify_balances(report: Report, *, workers: int | None = None) -> None:
    """Replaying every transfer must give each account's stored columns; each asset sums to
    zero."""
    with _source(None, workers, _about(SCAN_CHUNK)[1]) as source:
        todo = _balance_tasks(source)
        _check_balances(report, todo, source, source.results(todo))
        _note_workers(report, source)


def _about(chunk: int) -> tuple[int, int]:
    """How many chain and balance tasks there will be, about (outside the snapshot)."""
    got = Transfer.objects.aggregate(last_seq=Max("seq"), last_id=Max("id"), first_id=Min("id"))
    ids = (got["last_id"] or 0) - (got["first_id"] or 0) + 1
    return -(-(got["last_seq"] or 0) // chunk), -(-ids // REPLAY_CHUNK)


def sealed_count() -> int:
    return Transfer.objects.filter(seq__isnull=False).aggregate(n=Count("id"))["n"]


def verify_ledger(
    progress: Progress = None, *, workers: int | None = None, chunk: int = 0
) -> Report:
    """verify_chain, then verify_balances, in one snapshot and one set of workers."""
    report = Report()
    chunk = chunk or SCAN_CHUNK
    with _source(progress, workers, sum(_about(chunk))) as source:
        planned = _chain_tasks(report, source, chunk)
        chain_todo, checkpoints = planned if planned is not None else ([], [])
        balance_todo = _balance_tasks(source)
        results = source.results(chain_todo + balance_todo)
        _check_chain(report, chain_todo, checkpoints, results, chunk)
        _check_balances(report, balance_todo, source, results)
        _note_workers(report, source)
    return report


def _note_workers(report: Report, source: _Here | _Workers) -> None:
    if isinstance(source, _Workers):
        report.workers = max(report.workers, source.started)
        report.worker_peak_rss_kib = max(report.worker_peak_rss_kib, source.peak_rss_kib)
