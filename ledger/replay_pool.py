"""Where verify_ledger's ranges are checked: worker processes, or this process.

ledger.replay cuts the ledger into tasks (("chain", first_seq, last_seq, sizes): a range of
entries and the checkpoints that end in it; ("balances", first_id, last_id): a range of transfers)
and combines their results; this module runs them and hands the results back in task order.
On PostgreSQL, outside a transaction, with enough tasks: `python -m ledger.scan` worker processes
(one per core), each on its own connection in the snapshot this process exports (Workers).
Elsewhere (SQLite, or inside a transaction such as a test's): the same functions of ledger.scan
here, one task after the other, on Django's connection (Here). Both read everything else the
checks need (the bounds of the ranges, the accounts) in that same snapshot.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import IO, Any, NamedTuple, cast

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Max, Min

from ledger import chain, scan
from ledger.models import Asset, LedgerAccount, OpenHold, Transfer

CHUNK = 5000  # rows a fetch through the ORM

Progress = Callable[[int], object] | None
Task = tuple[Any, ...]


class Here:
    """The tasks one after the other in this process, on Django's connection (inside the
    transaction `snapshot` opened)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.assets = assets_by_id()
        self.codes = scan.AccountCodes(_load_codes)

    def bounds(self, column: str) -> tuple[int | None, int | None]:
        got = Transfer.objects.aggregate(lo=Min(column), hi=Max(column))
        return got["lo"], got["hi"]

    def accounts(self) -> Iterator[AccountRow]:
        rows = (
            LedgerAccount.objects.order_by("pk")
            .values_list(*ACCOUNT_COLUMNS)
            .iterator(chunk_size=CHUNK)
        )
        return map(AccountRow._make, rows)

    def open_holds(self) -> dict[int, Decimal]:
        """The holds the database keeps open (OpenHold), by transfer id: their amounts."""
        return dict(OpenHold.objects.values_list("transfer_id", "amount"))

    def results(self, todo: list[Task]) -> Iterator[dict[str, Any]]:
        for kind, first, last, *sizes in todo:
            with self._rows(kind, first, last) as fetchmany:
                if kind == "chain":
                    rows = scan.fetched_rows(fetchmany, self.codes, self.progress)
                    heads = [first + n - 1 for n in sizes[0]]
                    found = chain.scan_rows(rows, first, last, self.assets, self.codes, heads)
                    yield scan.summarize(found, sizes[0], stored_nodes)
                else:
                    yield scan.replay_rows(scan.fetched_rows(fetchmany), first)

    @contextmanager
    def _rows(self, kind: str, first: int, last: int) -> Iterator[Callable[[int], list[Any]]]:
        if connection.vendor == "postgresql":
            sql = scan.ENTRY_SQL if kind == "chain" else scan.TRANSFER_SQL
            with connection.connection.cursor(name="ledger_rows", binary=True) as cursor:
                cursor.execute(sql, [first, last])
                yield cursor.fetchmany
            return
        rows: Iterator[tuple[Any, ...]]
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


class AccountRow(NamedTuple):
    """A stored account as the balance check reads it (ACCOUNT_COLUMNS)."""

    id: int
    code: str
    kind: str
    asset_id: int
    debits_pending: Decimal
    debits_posted: Decimal
    credits_pending: Decimal
    credits_posted: Decimal

    def balances(self) -> scan.Balances:
        return scan.Balances(
            debits_pending=Decimal(self.debits_pending),
            debits_posted=Decimal(self.debits_posted),
            credits_pending=Decimal(self.credits_pending),
            credits_posted=Decimal(self.credits_posted),
        )


ACCOUNT_COLUMNS = AccountRow._fields


ACCOUNT_SQL = f"SELECT {', '.join(ACCOUNT_COLUMNS)} FROM ledger_ledgeraccount ORDER BY id"  # noqa: S608


def stored_nodes(level: int, first: int, end: int) -> list[tuple[int, str]]:
    """NODES_SQL's rows on Django's connection: for ledger.scan.node_error."""
    with connection.cursor() as cursor:
        cursor.execute(scan.NODES_SQL, [level, first, end])
        return cast(list[tuple[int, str]], cursor.fetchall())


_AMOUNT = chain.ROW_COLUMNS.index("amount")
_CREATED_AT = chain.ROW_COLUMNS.index("created_at")


def _as_text(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """An ORM row with amount and created_at as PostgreSQL's texts (see chain.scan_rows)."""
    text = list(row)
    text[_AMOUNT] = format(row[_AMOUNT], "f")
    text[_CREATED_AT] = row[_CREATED_AT].astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return tuple(text)


def assets_by_id() -> dict[int, tuple[str, int]]:
    """Asset id -> (code, precision), as chain.scan_rows wants them."""
    rows = Asset.objects.values_list("pk", "code", "precision")
    return {pk: (code, precision) for pk, code, precision in rows}


def _load_codes(ids: list[int]) -> list[tuple[int, str]]:
    return list(LedgerAccount.objects.filter(pk__in=ids).values_list("pk", "code"))


class Workers:
    """The tasks in worker processes (`python -m ledger.scan`: no Django), each on
    its own connection in the snapshot exported by `snap`'s transaction; results in task order.
    Leaving early ends them."""

    def __init__(self, progress: Progress, workers: int, snap: Any, conninfo: str) -> None:
        self.progress = progress
        self.workers = workers
        self.snap = snap
        (snapshot,) = snap.execute("SELECT pg_export_snapshot()").fetchone()
        self.init = (conninfo, snapshot, assets_by_id())
        self.started = 0
        self.peak_rss_kib = 0

    def bounds(self, column: str) -> tuple[int | None, int | None]:
        sql = f"SELECT min({column}), max({column}) FROM ledger_transfer"  # noqa: S608 - ours
        return cast(tuple[int | None, int | None], self.snap.execute(sql).fetchone())

    def accounts(self) -> Iterator[AccountRow]:
        with self.snap.cursor(name="ledger_accounts") as cursor:
            cursor.execute(ACCOUNT_SQL)
            yield from map(AccountRow._make, scan.fetched_rows(cursor.fetchmany))

    def open_holds(self) -> dict[int, Decimal]:
        """The holds the database keeps open (OpenHold), by transfer id: their amounts."""
        rows = self.snap.execute("SELECT transfer_id, amount FROM ledger_openhold").fetchall()
        return {int(tid): Decimal(amount) for tid, amount in rows}

    def results(self, todo: list[Task]) -> Iterator[dict[str, Any]]:
        inbox: queue.Queue[tuple[int, str, Any]] = queue.Queue()
        path = [str(settings.BASE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        procs: list[subprocess.Popen[bytes]] = []
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
            done: dict[int, dict[str, Any]] = {}
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
                # Both are pipes: Popen(stdin=PIPE, stdout=PIPE).
                cast(IO[bytes], proc.stdin).close()
                cast(IO[bytes], proc.stdout).close()


def _send(proc: subprocess.Popen[bytes], message: Any) -> None:
    stdin = cast(IO[bytes], proc.stdin)  # Popen(stdin=PIPE)
    pickle.dump(message, stdin, protocol=pickle.HIGHEST_PROTOCOL)
    stdin.flush()


def _next(
    worker: int,
    proc: subprocess.Popen[bytes],
    queued: Iterator[tuple[int, Task]],
    doing: dict[int, int],
) -> None:
    index, task = next(queued, (None, None))
    if index is None:
        _send(proc, None)
    else:
        doing[worker] = index
        _send(proc, task)


def _read_messages(worker: int, stream: Any, inbox: queue.Queue[tuple[int, str, Any]]) -> None:
    while True:
        try:
            message = pickle.load(stream)  # noqa: S301 - our own child's pipe
        except (EOFError, OSError, ValueError):
            inbox.put((worker, "exit", "it exited"))
            return
        inbox.put((worker, *message))


def _workers() -> int:
    return int(getattr(settings, "LEDGER_VERIFY_WORKERS", 0) or os.cpu_count() or 1)


def database_conninfo() -> str:
    """Django's connection parameters as a libpq conninfo string, for the workers' own."""
    from psycopg import conninfo, pq

    allowed = {d.keyword.decode() for d in pq.Conninfo.get_defaults()}
    params = connection.get_connection_params()
    return conninfo.make_conninfo(
        "", **{k: v for k, v in params.items() if k in allowed and isinstance(v, str | int)}
    )


@contextmanager
def snapshot(progress: Progress, workers: int | None, tasks_: int) -> Iterator[Here | Workers]:
    """One snapshot of the ledger for every read, and where the tasks run: worker processes on
    PostgreSQL outside a transaction when there are 2 or more cores and about `tasks_` tasks
    (starting the workers costs more than small ledgers take), this process else."""
    workers = workers or _workers()
    workers = workers if tasks_ >= 2 * workers else 1
    if workers > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block:
        import psycopg

        conninfo = database_conninfo()
        with psycopg.connect(conninfo) as snap:
            snap.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            snap.read_only = True
            with snap.transaction():
                yield Workers(progress, workers, snap, conninfo)
        return
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                if outermost:  # one snapshot for every read
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cursor.execute("SET LOCAL DateStyle = ISO")
        yield Here(progress)
