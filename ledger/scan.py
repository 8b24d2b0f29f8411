"""verify_ledger's tasks, in worker processes or in the server's: the database scan.

Nothing from Django here: `manage.py verify_ledger` (ledger.replay) starts `python -m ledger.scan`
processes, hands them ranges of seqs (the chain) and of ids (the balances) to check in the
snapshot of its own transaction, and combines what they find. The same functions run in the
server's process when there are no workers (ledger.replay_pool). The offline verifier, which
reads no database, is ledger.verify.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from ledger import chain, merkle

# Rows of chain.ROW_COLUMNS: amount as NUMERIC text, created_at as UTC timestamp text.
ENTRY_SQL = """
    SELECT seq, id, idempotency_key, kind, flags, asset_id, debit_account_id, credit_account_id,
        amount::text, pending_id, (created_at AT TIME ZONE 'UTC')::text, prev_hash, hash, leaf_hash
    FROM ledger_transfer WHERE seq BETWEEN %s AND %s ORDER BY seq
"""
# Rows for replay_rows.
TRANSFER_SQL = """
    SELECT id, seq, flags, amount::text, debit_account_id, credit_account_id, pending_id
    FROM ledger_transfer WHERE id BETWEEN %s AND %s ORDER BY id
"""
CODES_SQL = "SELECT id, code FROM ledger_ledgeraccount WHERE id = ANY(%s)"
# The stored Merkle nodes of one level in [first, end) (the unique index's range), for node_error.
NODES_SQL = (
    'SELECT "index", hash FROM ledger_merklenode WHERE level = %s AND "index" >= %s '
    'AND "index" < %s ORDER BY "index"'
)
FETCH = 2000  # rows a fetch
# Where an ENTRY_SQL row names its accounts (AccountCodes loads their codes).
_DEBIT_ACCOUNT = chain.ROW_COLUMNS.index("debit_account_id")
_CREDIT_ACCOUNT = chain.ROW_COLUMNS.index("credit_account_id")
ZERO = Decimal(0)


@dataclass(slots=True)
class Balances:
    """An account's four balance columns (LedgerAccount's, TigerBeetle's): stored, or replayed
    from the transfers by replay_rows. Pickled from the workers to ledger.replay."""

    debits_pending: Decimal = ZERO
    debits_posted: Decimal = ZERO
    credits_pending: Decimal = ZERO
    credits_posted: Decimal = ZERO

    def columns(self) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """The four in LedgerAccount's column order, for messages."""
        return (self.debits_pending, self.debits_posted, self.credits_pending, self.credits_posted)

    def add(self, other: Balances) -> None:
        """Another range's replay of the same account, added to this one."""
        self.debits_pending += other.debits_pending
        self.debits_posted += other.debits_posted
        self.credits_pending += other.credits_pending
        self.credits_posted += other.credits_posted


class AccountCodes(dict):  # type: ignore[type-arg]
    """Account id -> code, loaded on a miss for every account of the current batch of rows at
    once, and forgotten beyond LIMIT: memory stays bounded however many accounts there are."""

    LIMIT = 100_000

    def __init__(self, load: Any) -> None:
        super().__init__()
        self.load = load
        self.batch: list[tuple[Any, ...]] = []

    def __missing__(self, key: int) -> str:
        if len(self) > self.LIMIT:
            self.clear()
        wanted = {key}
        for row in self.batch:
            wanted.add(row[_DEBIT_ACCOUNT])
            wanted.add(row[_CREDIT_ACCOUNT])
        wanted.difference_update(self.keys())
        self.update(self.load(sorted(wanted)))
        if key not in self:
            raise KeyError(f"account {key} does not exist")
        return cast(str, dict.__getitem__(self, key))


def fetched_rows(fetchmany: Any, codes: AccountCodes | None = None, progress: Any = None) -> Any:
    """Rows from a cursor, FETCH rows at a time; codes learns each batch (see AccountCodes)."""
    while True:
        batch = fetchmany(FETCH)
        if not batch:
            return
        if codes is not None:
            codes.batch = batch
        if progress is not None:
            progress(len(batch))
        yield from batch


def node_error(
    levels: list[list[bytes]],
    first: int,
    stored: Callable[[int, int, int], list[tuple[int, str]]],
    base_level: int = 0,
) -> tuple[int, str] | None:
    """The first stored Merkle node above subtree_levels()' nodes `levels[0]` (complete subtrees
    of level base_level, the first at index `first`; leaves when base_level is 0) that is missing
    or is not the hash those give, as (the first seq it covers, why); None when all are.
    stored(level, first, end) gives the stored (index, hash) of a level, index order; one level
    at a time, so memory stays one level's. Proofs are served from these nodes: one altered
    would make a user's proof fail while the entries themselves check out."""
    bad: tuple[int, str] | None = None
    for up in range(1, len(levels)):
        level, start = base_level + up, first >> up
        want = [digest.hex() for digest in levels[up]]
        rows = stored(level, start, start + len(want))
        if [i for i, _ in rows] == list(range(start, start + len(want))) and [
            h for _, h in rows
        ] == want:
            continue
        found = dict(rows)
        for offset, digest in enumerate(want):
            index = start + offset
            if found.get(index) != digest:
                seq = (index << level) + 1
                what = "is missing" if index not in found else "differs from the entries"
                message = (
                    f"seq {seq}: stored Merkle node (level {level}, index {index}) over seq "
                    f"{seq}..{seq + (1 << level) - 1} {what}"
                )
                if bad is None or seq < bad[0]:
                    bad = (seq, message)
                break
    return bad


def summarize(scan: chain.Scan, sizes: list[int], nodes: Any = None) -> dict[str, Any]:
    """A chunk's Scan for ledger.replay: the Merkle frontier after each of `sizes` entries of the
    chunk (the checkpoints in it) and after all its good entries, instead of the leaves; with
    nodes(level, first, end) -> NODES_SQL's rows, the first bad stored node over them."""
    levels = merkle.subtree_levels(scan.leaves)
    first_leaf = scan.first_seq - 1
    bad_node = None
    if nodes is not None and len(levels) > 1:
        bad_node = node_error(levels, first_leaf, nodes)
    return {
        "node_error": bad_node,
        "first_seq": scan.first_seq,
        "count": scan.count,
        "error": scan.error,
        "first_prev": scan.first_prev,
        "last_hash": scan.last_hash,
        "heads": scan.heads,
        "frontiers": {n: merkle.frontier(levels, n) for n in sizes if n <= scan.count},
        "tail": merkle.frontier(levels, scan.count) if scan.count else [],
    }


def replay_rows(rows: Iterable[tuple[Any, ...]], first_id: int) -> dict[str, Any]:
    """Replay transfers first_id.. (rows of TRANSFER_SQL in id order) onto per-account
    Balances, TigerBeetle's way: a single posts, a pending holds, a post_pending / void_pending
    releases the open hold it names and posts what it says. A resolution of a hold before
    first_id is left for the caller ("deferred", with the holds still open at the end); one of
    no open hold here fails."""
    totals: dict[int, Balances] = defaultdict(Balances)
    holds: dict[int, Decimal] = {}
    deferred: list[tuple[Any, ...]] = []
    failures: list[tuple[int, int | None, int | None]] = []  # transfer, its seq, the hold
    unsealed = 0
    for row in rows:
        tid, seq, flags, amount, debit, credit, pending_id = row
        amount = Decimal(amount)
        if seq is None:
            unsealed += 1
        if flags == "single":
            totals[debit].debits_posted += amount
            totals[credit].credits_posted += amount
        elif flags == "pending":
            totals[debit].debits_pending += amount
            totals[credit].credits_pending += amount
            holds[tid] = amount
        elif pending_id is not None and pending_id < first_id:
            deferred.append((tid, seq, flags, amount, debit, credit, pending_id))
        else:
            held = holds.pop(pending_id, None)
            if held is None:
                failures.append((tid, seq, pending_id))
                continue
            resolve(totals[debit], totals[credit], flags, held, amount)
    return {
        "totals": dict(totals),
        "holds": holds,
        "deferred": deferred,
        "failures": failures,
        "unsealed": unsealed,
    }


def resolve(debit: Balances, credit: Balances, flags: str, held: Decimal, amount: Decimal) -> None:
    """A post_pending or void_pending of a hold of `held`: released; a post posts `amount`."""
    debit.debits_pending -= held
    credit.credits_pending -= held
    if flags == "post_pending":
        debit.debits_posted += amount
        credit.credits_posted += amount


def _peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM; 0 where there is no /proc)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def scan_worker(stdin: Any, stdout: Any) -> None:
    """`python -m ledger.scan`, started by ledger.replay_pool: pickled messages in
    (conninfo, snapshot, assets; then tasks ("chain", first_seq, last_seq, sizes) or
    ("balances", first_id, last_id); None to stop), pickled messages out: ("progress", n),
    ("result", summary) or ("error", traceback)."""
    import pickle
    import traceback

    import psycopg
    from psycopg import sql

    def send(*message: Any) -> None:
        pickle.dump(message, stdout, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.flush()

    try:
        conninfo, snapshot, assets = pickle.load(stdin)  # noqa: S301 - our parent's pipe
        conn = psycopg.connect(conninfo, autocommit=True)
        conn.execute("SET DateStyle = ISO")
        conn.autocommit = False
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        codes = AccountCodes(lambda ids: conn.execute(CODES_SQL, [ids]).fetchall())

        def nodes(level: int, first: int, end: int) -> list[tuple[int, str]]:
            return conn.execute(NODES_SQL, [level, first, end]).fetchall()

        while (task := pickle.load(stdin)) is not None:  # noqa: S301
            kind, first, last, *sizes = task
            with conn.transaction():
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(snapshot))
                with conn.cursor(name="ledger_rows", binary=True) as cursor:
                    if kind == "chain":
                        cursor.execute(ENTRY_SQL, [first, last])
                        rows = fetched_rows(cursor.fetchmany, codes, lambda n: send("progress", n))
                        heads = [first + n - 1 for n in sizes[0]]
                        scan = chain.scan_rows(rows, first, last, assets, codes, heads)
                        result = summarize(scan, sizes[0], nodes)
                    else:
                        cursor.execute(TRANSFER_SQL, [first, last])
                        result = replay_rows(fetched_rows(cursor.fetchmany), first)
            result["peak_rss_kib"] = _peak_rss_kib()
            send("result", result)
    except Exception:  # reported to the parent, which raises
        send("error", traceback.format_exc())


def main() -> int:
    """`python -m ledger.scan`: the scan worker on stdin / stdout (see scan_worker)."""
    # Messages on the real stdout only: anything printed goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    scan_worker(sys.stdin.buffer, out)
    return 0


if __name__ == "__main__":
    # Through the module as imported, not this `__main__` copy of it: the results pickle its
    # classes (Balances) by module name, which the parent knows as ledger.scan.
    from ledger import scan

    sys.exit(scan.main())
