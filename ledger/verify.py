"""The offline verifier: no database, no Django settings, only the files a user downloaded.

    python manage.py export_ledger > ledger.jsonl            # on the server (or the API's data)
    curl .../api/v1/ledger/checkpoints/latest/ > checkpoint.json
    curl .../api/v1/ledger/public-key/ > keys.json
    python -m ledger.verify export ledger.jsonl --checkpoint checkpoint.json --keys keys.json
    python -m ledger.verify proof proof.json --keys keys.json
    python -m ledger.verify consistency consistency.json --old old.json --new new.json --keys keys.json

Exit status 0 when everything verifies, 1 naming the first bad sequence number otherwise.
Standard library, ledger.chain, ledger.merkle and cryptography only (held so by
ledger/tests/test_verify_imports.py); the server's own check of its database, `manage.py
verify_ledger`, is ledger.replay with its scan workers in ledger.scan.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from collections.abc import Iterable
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


_BLOCK = 15  # leaves hashed into one complete subtree at a time: 2**_BLOCK


def entry_data(entry: dict[str, Any]) -> bytes:
    """The bytes verify_export hashes for an exported entry: ledger.chain's encoder,
    chain.fast_entry_bytes. Fast path: byte-for-byte equal to canonical_entry_bytes; held equal
    by ledger/tests/test_canonical.py."""
    return chain.fast_entry_bytes(entry)


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
    entry: dict[str, Any] = json.loads(leaf)
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


def _open(path: str) -> Any:
    return contextlib.nullcontext(sys.stdin) if path == "-" else Path(path).open()


def _json(path: str) -> Any:
    return json.loads(Path(path).read_text())


def main(argv: list[str] | None = None) -> int:
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
