"""Re-computing the ledger from its transfers: the hash chain, the Merkle roots, the balances.

Streaming, in one snapshot of the database: the entries are read in ranges of seqs (each a
complete Merkle subtree: SCAN_CHUNK, a power of two) and the transfers in ranges of ids; memory
holds a range or two plus one running total per account and the open holds. On PostgreSQL, and
outside a transaction, the ranges are checked by worker processes (`python -m ledger.scan`,
one per core) on their own connections in the snapshot this process exports (ledger.replay_pool);
the results are combined here in order, so that the first failure reported is the first in seq
order, as if one loop had checked entry after entry. Elsewhere (SQLite, or inside a transaction
such as a test's) the same checks run here, one range after the other.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from django.db.models import Count, Max, Min, Q

from ledger import chain, merkle, signing
from ledger.models import Asset, Checkpoint, LedgerAccount, SigningKey, Transfer
from ledger.replay_pool import Here, Progress, Task, Workers, snapshot, stored_nodes
from ledger.scan import Balances, node_error, resolve

# Entries a chain task: a power of two, so that each full one is a complete Merkle subtree.
SCAN_CHUNK = 1 << 15
# Transfer ids a balance task.
REPLAY_CHUNK = 1 << 16


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


# --- the checks -----------------------------------------------------------------------------------


def _chain_tasks(
    report: Report, source: Here | Workers, chunk: int
) -> tuple[list[Task], list[Checkpoint]] | None:
    """The seq ranges to scan, each with the checkpoints that end inside it; None when there is
    nothing to scan because the first entry is not seq 1."""
    if chunk & (chunk - 1):
        raise ValueError("chunk must be a power of two")
    checkpoints = list(Checkpoint.objects.order_by("tree_size"))
    keys = dict(SigningKey.objects.values_list("key_id", "public_key"))
    checkpoint: Checkpoint | None  # each in turn, then the next one a range ends at
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
        hi = min(lo + chunk - 1, cast(int, last))  # the loop runs only up to a last seq
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
    results: Iterator[dict[str, Any]],
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
    bad = node_error(levels, 0, stored_nodes, base_level=bits)
    if bad is not None:
        report.fail(bad[1], bad[0])


def _combine_scans(
    report: Report,
    scans: Iterator[dict[str, Any]],
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


def _balance_tasks(source: Here | Workers) -> list[Task]:
    first, last = source.bounds("id")
    if first is None:
        return []
    last = cast(int, last)  # no first, no last
    return [
        ("balances", lo, min(lo + REPLAY_CHUNK - 1, last))
        for lo in range(first, last + 1, REPLAY_CHUNK)
    ]


def _check_balances(
    report: Report, todo: list[Task], source: Here | Workers, results: Iterator[dict[str, Any]]
) -> None:
    """Replaying every transfer must give each account's stored columns; each asset sums to
    zero. Combines the replays of consecutive id ranges (ledger.scan.replay_rows), in order."""
    totals: dict[int, Balances] = defaultdict(Balances)
    holds: dict[int, Decimal] = {}
    failures: list[tuple[int, int | None, int | None]] = []
    for _ in todo:
        part = next(results)
        for tid, seq, flags, amount, debit, credit, pending_id in part["deferred"]:
            held = holds.pop(pending_id, None)
            if held is None:
                failures.append((tid, seq, pending_id))
                continue
            resolve(totals[debit], totals[credit], flags, held, amount)
        for account_id, replayed in part["totals"].items():
            totals[account_id].add(replayed)
        holds.update(part["holds"])
        failures.extend(part["failures"])
        report.unsealed += part["unsealed"]
    for tid, seq, pending_id in sorted(failures):
        report.fail(f"transfer {tid}: resolves hold {pending_id}, which is not an open hold", seq)
    # The open holds the database keeps for the wallets (OpenHold) are the replay's open holds.
    kept = source.open_holds()
    for tid in sorted(set(holds) | set(kept)):
        if holds.get(tid) != kept.get(tid):
            report.fail(
                f"hold {tid}: open for {holds.get(tid)} in the replay, for {kept.get(tid)} in "
                "ledger_openhold (None: not open)"
            )
    per_asset: dict[int, Decimal] = defaultdict(Decimal)
    for account in source.accounts():
        report.accounts += 1
        replayed = totals.get(account.id) or Balances()
        stored = account.balances()
        if stored != replayed:
            report.fail(
                f"account {account.code}: stored balances {tuple(map(str, stored.columns()))} "
                f"differ from the replayed transfers {tuple(map(str, replayed.columns()))}",
                _first_seq_of(account.id),
            )
        if (
            account.kind != LedgerAccount.Kind.WORLD
            and replayed.debits_posted + replayed.debits_pending > replayed.credits_posted
        ):
            report.fail(f"account {account.code}: overdrawn", _first_seq_of(account.id))
        per_asset[account.asset_id] += stored.credits_posted - stored.debits_posted
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
    with snapshot(progress, workers, _about(chunk)[0]) as source:
        planned = _chain_tasks(report, source, chunk)
        if planned is not None:
            todo, checkpoints = planned
            _check_chain(report, todo, checkpoints, source.results(todo), chunk)
        _note_workers(report, source)


def verify_balances(report: Report, *, workers: int | None = None) -> None:
    """Replaying every transfer must give each account's stored columns; each asset sums to
    zero."""
    with snapshot(None, workers, _about(SCAN_CHUNK)[1]) as source:
        todo = _balance_tasks(source)
        _check_balances(report, todo, source, source.results(todo))
        _note_workers(report, source)


def _about(chunk: int) -> tuple[int, int]:
    """How many chain and balance tasks there will be, about (outside the snapshot)."""
    got = Transfer.objects.aggregate(last_seq=Max("seq"), last_id=Max("id"), first_id=Min("id"))
    ids = (got["last_id"] or 0) - (got["first_id"] or 0) + 1
    return -(-(got["last_seq"] or 0) // chunk), -(-ids // REPLAY_CHUNK)


def sealed_count() -> int:
    count: int = Transfer.objects.filter(seq__isnull=False).aggregate(n=Count("id"))["n"]
    return count


def verify_ledger(
    progress: Progress = None, *, workers: int | None = None, chunk: int = 0
) -> Report:
    """verify_chain, then verify_balances, in one snapshot and one set of workers."""
    report = Report()
    chunk = chunk or SCAN_CHUNK
    with snapshot(progress, workers, sum(_about(chunk))) as source:
        planned = _chain_tasks(report, source, chunk)
        chain_todo, checkpoints = planned if planned is not None else ([], [])
        balance_todo = _balance_tasks(source)
        results = source.results(chain_todo + balance_todo)
        _check_chain(report, chain_todo, checkpoints, results, chunk)
        _check_balances(report, balance_todo, source, results)
        _note_workers(report, source)
    return report


def _note_workers(report: Report, source: Here | Workers) -> None:
    if isinstance(source, Workers):
        report.workers = max(report.workers, source.started)
        report.worker_peak_rss_kib = max(report.worker_peak_rss_kib, source.peak_rss_kib)
