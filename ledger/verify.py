"""The offline verifier: no database, no Django settings, only the files a user downloaded.

    python manage.py export_ledger > ledger.jsonl            # on the server (or the API's data)
    curl .../api/v1/ledger/checkpoints/latest/ > checkpoint.json
    curl .../api/v1/ledger/public-key/ > keys.json
    python -m ledger.verify export ledger.jsonl --checkpoint checkpoint.json --keys keys.json
    python -m ledger.verify proof proof.json --keys keys.json
    python -m ledger.verify consistency consistency.json --old old.json --new new.json --keys keys.json
    python -m ledger.verify reserves my-reserves-proof.json --keys keys.json [--balance 1.5]

Exit status 0 when everything verifies, 1 naming the first bad sequence number otherwise.
Standard library, ledger.chain, ledger.merkle, ledger.sumtree and cryptography only (held so by
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

from ledger import chain, merkle, sumtree

SIGNED_FIELDS = ("tree_size", "root_hash", "chain_head", "timestamp", "key_id")
# What a proof of reserves' signature covers (docs/chain.md "Reserves").
RESERVE_SIGNED_FIELDS = (
    "type",
    "v",
    "asset",
    "precision",
    "chain",
    "block_number",
    "block_hash",
    "addresses",
    "onchain_total",
    "liabilities_root",
    "liabilities_total",
    "leaf_count",
    "timestamp",
    "key_id",
)


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


# --- the proof of reserves ---------------------------------------------------------------------


def _signed_by(fields: dict[str, Any], key_id: str, signature: str, keys: dict[str, str]) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public = keys.get(key_id)
    if public is None:
        return False
    message = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public)).verify(
            bytes.fromhex(signature), message
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_reserves_publication(
    published: dict[str, Any], keys: dict[str, str], *, cover: bool = True
) -> None:
    """A published proof of reserves: signed by a platform key, its addresses' balances add up
    to its on-chain total, no amount is negative, and (`cover`) the chain holds at least the
    liabilities. (Each address's balance at the block can be checked on any node or block
    explorer.)"""
    try:
        fields = {name: published[name] for name in RESERVE_SIGNED_FIELDS}
    except KeyError as exc:
        raise VerificationError(f"the proof of reserves lacks the field {exc}") from None
    if fields["type"] != "proof-of-reserves" or fields["v"] != 1:
        raise VerificationError("not a proof of reserves of a version this verifier knows")
    if fields["key_id"] not in keys:
        raise VerificationError(
            f"the proof of reserves is signed by an unknown key {fields['key_id']!r}"
        )
    if not _signed_by(fields, fields["key_id"], str(published.get("signature", "")), keys):
        raise VerificationError("the proof of reserves' signature is bad")
    precision = int(fields["precision"])
    try:
        onchain = sumtree.to_units(fields["onchain_total"], precision, what="onchain_total")
        owed = sumtree.to_units(fields["liabilities_total"], precision, what="liabilities_total")
        held = sum(
            sumtree.to_units(a["balance"], precision, what=f"the balance of {a['address']}")
            for a in fields["addresses"]
        )
    except sumtree.SumTreeError as exc:
        raise VerificationError(str(exc)) from None
    if held != onchain:
        raise VerificationError(
            f"the addresses' balances add up to {sumtree.from_units(held, precision)}, not the "
            f"published on-chain total {fields['onchain_total']}"
        )
    if cover and onchain < owed:
        raise VerificationError(
            f"the reserves do not cover the liabilities: {fields['onchain_total']} "
            f"{fields['asset']} on chain at block {fields['block_number']} against "
            f"{fields['liabilities_total']} owed ({sumtree.from_units(owed - onchain, precision)} short)"
        )


def verify_reserves_proof(
    proof: dict[str, Any],
    keys: dict[str, str],
    *,
    published: dict[str, Any] | None = None,
    balance: str | None = None,
) -> dict[str, Any]:
    """A user's inclusion proof: their leaf (account, balance, nonce) hashes to `leaf_hash`, and
    the path of sibling hashes and sums leads to the signed root and total, every sum non-negative
    and each node's sum its children's. `published`: the proof of reserves as fetched elsewhere
    (the public page), which must be the one the inclusion proof embeds. `balance`: what the user
    expects their balance to be. Returns the leaf."""
    reserves = proof.get("reserves") or {}
    verify_reserves_publication(reserves, keys, cover=False)
    if published is not None and any(
        published.get(name) != reserves.get(name) for name in (*RESERVE_SIGNED_FIELDS, "signature")
    ):
        raise VerificationError(
            "the inclusion proof is against another proof of reserves than the published one"
        )
    leaf = proof.get("leaf") or {}
    try:
        precision = int(reserves["precision"])
        if leaf.get("asset") != reserves.get("asset"):
            raise VerificationError(
                f"the leaf is of {leaf.get('asset')}, the proof of {reserves.get('asset')}"
            )
        leaf_sum = sumtree.to_units(leaf.get("balance"), precision, what="the leaf's balance")
        if (
            balance is not None
            and sumtree.to_units(balance, precision, what="--balance") != leaf_sum
        ):
            raise VerificationError(
                f"the leaf's balance {leaf['balance']} is not the expected {balance}"
            )
        data = sumtree.leaf_bytes(
            account=str(leaf["account"]),
            asset=str(leaf["asset"]),
            balance=str(leaf["balance"]),
            nonce=str(leaf["nonce"]),
        )
        leaf_hash = sumtree.leaf_hash(data)
        if leaf_hash.hex() != proof.get("leaf_hash"):
            raise VerificationError(
                "leaf_hash is not the hash of the leaf (account, balance, nonce)"
            )
        steps = [
            (
                str(step["side"]),
                bytes.fromhex(step["hash"]),
                sumtree.to_units(step["sum"], precision, what=f"step {n}'s sibling sum"),
            )
            for n, step in enumerate(proof.get("path") or [])
        ]
        node_sums = [
            sumtree.to_units(step["node_sum"], precision, what=f"step {n}'s node sum")
            for n, step in enumerate(proof.get("path") or [])
        ]
        root, total = sumtree.root_from_path(
            leaf=leaf_hash,
            leaf_sum=leaf_sum,
            index=int(proof["index"]),
            leaf_count=int(reserves["leaf_count"]),
            path=steps,
            node_sums=node_sums,
            precision=precision,
        )
        published_total = sumtree.to_units(
            reserves["liabilities_total"], precision, what="liabilities_total"
        )
    except sumtree.SumTreeError as exc:
        raise VerificationError(str(exc)) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(f"malformed inclusion proof: {exc!r}") from None
    if total != published_total:
        raise VerificationError(
            f"the root's sum {sumtree.from_units(total, precision)} is not the published "
            f"liabilities total {reserves['liabilities_total']}"
        )
    if root.hex() != reserves.get("liabilities_root"):
        raise VerificationError("the path does not lead to the signed liabilities root")
    verify_reserves_publication(reserves, keys, cover=True)
    return dict(leaf)


def _open(path: str) -> Any:
    return contextlib.nullcontext(sys.stdin) if path == "-" else Path(path).open()


def _json(path: str) -> Any:
    return json.loads(Path(path).read_text())


def _reserves_command(args: argparse.Namespace, keys: dict[str, str]) -> str:
    document = _json(args.proof)
    published = _json(args.published) if args.published else None
    if "leaf" not in document:
        verify_reserves_publication(document, keys)
        if published is not None and published != document:
            raise VerificationError("the two proofs of reserves differ")
        shown = document
        return (
            f"OK: proof of reserves of {shown['asset']} at block {shown['block_number']} is "
            f"signed; {shown['onchain_total']} on chain covers {shown['liabilities_total']} owed"
        )
    leaf = verify_reserves_proof(document, keys, published=published, balance=args.balance)
    shown = document["reserves"]
    return (
        f"OK: {leaf['account']} holds {leaf['balance']} {leaf['asset']} in the signed liabilities "
        f"(root {shown['liabilities_root'][:16]}..., total {shown['liabilities_total']}, "
        f"{shown['leaf_count']} accounts); {shown['onchain_total']} on chain at block "
        f"{shown['block_number']} covers it"
    )


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
    reserves = sub.add_parser(
        "reserves",
        help="check a proof of reserves: your inclusion proof (or a published proof alone)",
    )
    reserves.add_argument("proof", help="your inclusion proof, or a published proof of reserves")
    reserves.add_argument("--keys", required=True)
    reserves.add_argument(
        "--published", help="the proof of reserves as the public page or API gives it"
    )
    reserves.add_argument("--balance", help="the balance you expect the leaf to hold")
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
        elif args.command == "reserves":
            print(_reserves_command(args, keys))
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
