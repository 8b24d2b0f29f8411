"""The offline verifier: no database, no Django settings, only the files a user downloaded.

    python manage.py export_ledger > ledger.jsonl            # on the server (or the API's data)
    curl .../api/v1/ledger/checkpoints/latest/ > checkpoint.json
    curl .../api/v1/ledger/public-key/ > keys.json
    python -m ledger.verify export ledger.jsonl --checkpoint checkpoint.json --keys keys.json
    python -m ledger.verify proof proof.json --keys keys.json
    python -m ledger.verify consistency consistency.json --old old.json --new new.json --keys keys.json

Exit status 0 when everything verifies, 1 naming the first bad sequence number otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from ledger import chain, merkle

SIGNED_FIELDS = ("tree_size", "root_hash", "chain_head", "timestamp", "key_id")


class VerificationError(Exception):
    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


def load_keys(data: Any) -> dict[str, str]:
    """key_id -> public key hex, from /api/v1/ledger/public-key/ output."""
    keys = data.get("keys", data) if isinstance(data, dict) else data
    return {k["key_id"]: k["public_key"] for k in keys}


def verify_checkpoint_signature(checkpoint: dict[str, Any], keys: dict[str, str]) -> None:
    public = keys.get(checkpoint.get("key_id", ""))
    if public is None:
        raise VerificationError(
            f"checkpoint {checkpoint.get('tree_size')}: unknown key {checkpoint.get('key_id')!r}"
        )
    fields = {name: checkpoint[name] for name in SIGNED_FIELDS}
    message = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public)).verify(
            bytes.fromhex(checkpoint["signature"]), message
        )
    except (InvalidSignature, ValueError):
        raise VerificationError(f"checkpoint {checkpoint['tree_size']}: bad signature") from None


_ENTRY_KEYS = frozenset([*chain.FIELDS, "v"])
_BLOCK = 15  # leaves hashed into one complete subtree at a time: 2**_BLOCK


def entry_data(entry: dict[str, Any]) -> bytes:
    """chain.entry_bytes(entry): through chain.fields_bytes (no json.dumps of a dict) when the
    entry has the canonical keys with strings, integers and null where they belong."""
    if (
        entry.keys() == _ENTRY_KEYS
        and entry["v"] == chain.ENTRY_VERSION
        and type(entry["v"]) is int
    ):
        values = [entry[name] for name in chain.FIELDS]
        seq, id_, key, kind, flags, asset, debit, credit, amount, pending_id, created = values
        strings = (key, kind, flags, asset, debit, credit, amount, created)
        if (
            type(seq) is int
            and type(id_) is int
            and (pending_id is None or type(pending_id) is int)
            and all(type(v) is str for v in strings)
        ):
            return chain.fields_bytes(*values)
    return chain.entry_bytes(entry)


def verify_export(lines: Iterable[str], checkpoint: dict[str, Any], keys: dict[str, str]) -> int:
    """Re-compute the chain and the Merkle root of an export up to the checkpoint; streaming
    (the leaves hashed into complete subtrees of 2**_BLOCK at a time)."""
    verify_checkpoint_signature(checkpoint, keys)
    size = int(checkpoint["tree_size"])
    sha = hashlib.sha256
    tree = merkle.StreamingRoot()
    leaves: list[bytes] = []
    prev_hash, expected = chain.GENESIS_HASH, 1
    prev_raw = bytes.fromhex(prev_hash)
    for line in lines:
        if not line.strip():
            continue
        row = json.loads(line)
        seq = row["seq"]
        if seq != expected:
            raise VerificationError(
                f"seq {expected}: missing or out of order (found {seq})", expected
            )
        entry = row["entry"]
        if entry.get("seq") != seq:
            raise VerificationError(f"seq {seq}: the entry names seq {entry.get('seq')}", seq)
        data = entry_data(entry)
        if row.get("prev_hash") != prev_hash:
            raise VerificationError(f"seq {seq}: prev_hash does not match the previous entry", seq)
        prev_raw = sha(prev_raw + data).digest()
        digest = prev_raw.hex()
        if row.get("hash") != digest:
            raise VerificationError(f"seq {seq}: entry was altered (hash mismatch)", seq)
        leaves.append(sha(b"\x00" + data).digest())
        if len(leaves) == 1 << _BLOCK:
            tree.extend(_BLOCK, merkle.subtree_levels(leaves)[_BLOCK][0])
            leaves = []
        prev_hash, expected = digest, expected + 1
        if seq == size:
            break
    if leaves:
        for level, node in merkle.frontier(merkle.subtree_levels(leaves), len(leaves)):
            tree.extend(level, node)
    if tree.size < size:
        raise VerificationError(
            f"seq {tree.size + 1}: export ends before the checkpoint's {size} entries",
            tree.size + 1,
        )
    if tree.root().hex() != checkpoint["root_hash"]:
        raise VerificationError(
            f"checkpoint {size}: Merkle root differs from the export's entries", size
        )
    if prev_hash != checkpoint["chain_head"]:
        raise VerificationError(f"checkpoint {size}: chain head differs from the export", size)
    return size


def verify_proof(proof: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    """An inclusion proof from /api/v1/ledger/entries/{seq}/proof/: the leaf is in the signed tree."""
    checkpoint = proof["checkpoint"]
    verify_checkpoint_signature(checkpoint, keys)
    leaf = bytes.fromhex(proof["leaf"])
    leaf_hash = merkle.leaf_hash(leaf)
    if leaf_hash.hex() != proof["leaf_hash"]:
        raise VerificationError("leaf_hash is not the hash of leaf", proof["seq"])
    entry = json.loads(leaf)
    if entry.get("seq") != proof["seq"]:
        raise VerificationError("the leaf is a different entry", proof["seq"])
    ok = merkle.verify_inclusion(
        proof["seq"] - 1,
        int(checkpoint["tree_size"]),
        leaf_hash,
        [bytes.fromhex(p) for p in proof["path"]],
        bytes.fromhex(checkpoint["root_hash"]),
    )
    if not ok:
        raise VerificationError(
            "the audit path does not lead to the checkpoint's root", proof["seq"]
        )
    return entry


def verify_consistency(
    proof: dict[str, Any], old: dict[str, Any], new: dict[str, Any], keys: dict[str, str]
) -> None:
    """Two signed checkpoints and a consistency proof: the newer extends the older, append-only."""
    verify_checkpoint_signature(old, keys)
    verify_checkpoint_signature(new, keys)
    if (proof["first"], proof["second"]) != (old["tree_size"], new["tree_size"]):
        raise VerificationError("the proof is for other tree sizes")
    ok = merkle.verify_consistency(
        proof["first"],
        proof["second"],
        bytes.fromhex(old["root_hash"]),
        bytes.fromhex(new["root_hash"]),
        [bytes.fromhex(p) for p in proof["path"]],
    )
    if not ok:
        raise VerificationError("history was rewritten: the checkpoints are not consistent")


# --- verify_ledger's tasks, in worker processes or in the server's ---------------------------
# Nothing from Django here either: `manage.py verify_ledger` (ledger.replay) starts
# `python -m ledger.verify scan-worker` processes, hands them ranges of seqs (the chain) and of
# ids (the balances) to check in the snapshot of its own transaction, and combines what they find.

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
            wanted.add(row[6])
            wanted.add(row[7])
        wanted.difference_update(self.keys())
        self.update(self.load(sorted(wanted)))
        if key not in self:
            raise KeyError(f"account {key} does not exist")
        return dict.__getitem__(self, key)


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
    """Replay transfers first_id.. (rows of TRANSFER_SQL in id order) onto per-account totals
    (debits_pending, debits_posted, credits_pending, credits_posted), TigerBeetle's way: a
    single posts, a pending holds, a post_pending / void_pending releases the open hold it
    names and posts what it says. A resolution of a hold before first_id is left for the caller
    ("deferred", with the holds still open at the end); one of no open hold here fails."""
    zero = Decimal(0)
    totals: dict[int, list[Decimal]] = defaultdict(lambda: [zero, zero, zero, zero])
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
            totals[debit][1] += amount
            totals[credit][3] += amount
        elif flags == "pending":
            totals[debit][0] += amount
            totals[credit][2] += amount
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


def resolve(
    dr: list[Decimal], cr: list[Decimal], flags: str, held: Decimal, amount: Decimal
) -> None:
    """A post_pending or void_pending of a hold of `held`: released; a post posts `amount`."""
    dr[0] -= held
    cr[2] -= held
    if flags == "post_pending":
        dr[1] += amount
        cr[3] += amount


def _peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM; 0 where there is no /proc)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def scan_worker(stdin: Any, stdout: Any) -> None:
    """`python -m ledger.verify scan-worker`, started by ledger.replay: pickled messages in
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


def _open(path: str) -> Any:
    return contextlib.nullcontext(sys.stdin) if path == "-" else Path(path).open()


def _json(path: str) -> Any:
    return json.loads(Path(path).read_text())


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv)[:1] == ["scan-worker"]:
        # Messages on the real stdout only: anything printed goes to stderr.
        out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        scan_worker(sys.stdin.buffer, out)
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m ledger.verify", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="check an export_ledger file against a checkpoint")
    export.add_argument("export", help="JSON lines from `manage.py export_ledger` ('-' for stdin)")
    export.add_argument("--checkpoint", required=True)
    export.add_argument("--keys", required=True)
    proof = sub.add_parser("proof", help="check an inclusion proof")
    proof.add_argument("proof")
    proof.add_argument("--keys", required=True)
    consistency = sub.add_parser(
        "consistency", help="check a consistency proof between checkpoints"
    )
    consistency.add_argument("proof")
    consistency.add_argument("--old", required=True)
    consistency.add_argument("--new", required=True)
    consistency.add_argument("--keys", required=True)
    args = parser.parse_args(argv)
    try:
        keys = load_keys(_json(args.keys))
        if args.command == "export":
            with _open(args.export) as stream:
                size = verify_export(stream, _json(args.checkpoint), keys)
            print(f"OK: {size} entries chain correctly and match the signed checkpoint")
        elif args.command == "proof":
            entry = verify_proof(_json(args.proof), keys)
            print(
                f"OK: entry {entry['seq']} ({entry['kind']} {entry['amount']} {entry['asset']}) is in the signed ledger"
            )
        else:
            verify_consistency(_json(args.proof), _json(args.old), _json(args.new), keys)
            print("OK: the newer checkpoint extends the older one; no history was rewritten")
    except VerificationError as exc:
        where = f" (first bad seq: {exc.seq})" if exc.seq else ""
        print(f"FAILED: {exc}{where}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
