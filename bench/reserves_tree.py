#!/usr/bin/env python
"""The proof of reserves' Merkle sum tree for many users (ledger.sumtree), against baselines.

    flock /tmp/bench.lock .venv/bin/python bench/reserves_tree.py --users 100000

Pure Python, no database or node: what `reserves_proof_publish` and `reserves_inclusion_proof`
(ledger/evm/reserves.py) spend in the tree itself, per stage, with N random balances
(18 decimals, as ETH):

1. baseline: SHA-256(0x00 || leaf bytes) of every leaf, the bytes made beforehand (hashing the
   same leaves flat: the least any commitment to them costs);
2. leaves: each account's leaf bytes (sorted-key JSON with a fresh 32-byte nonce) and its hash,
   as the publisher makes them;
3. sum tree: sumtree.build over the leaf hashes and sums (the inner nodes);
4. plain tree: the same shape with node = SHA-256(0x01 || left || right), no sums (what the sums
   add);
5. one user's inclusion proof as the server answers it: the stored leaves (hex hashes, Decimal
   balances, as PostgreSQL returns them) turned into bytes and base units, the tree rebuilt, the
   path taken (the database read itself is not in it);
6. the offline verifier's check of one path (sumtree.root_from_path).

Each stage runs --repeat times; the median CPU time (process_time) is reported, the ratios are of
those. Not a test: nothing asserts a time. Writes its section of BENCHMARKS.md (--no-write: don't).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as C
from ledger import sumtree

PRECISION = 18


def measure(repeat: int, run: Callable[[], Any]) -> tuple[float, float, Any]:
    """(median CPU seconds, median wall seconds, the last result)."""
    cpu, wall, result = [], [], None
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        result = run()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall), result


def plain_tree(hashes: list[bytes]) -> bytes:
    sha = hashlib.sha256
    level = hashes
    while len(level) > 1:
        up = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            up.append(level[-1])
        level = up
    return level[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)  # noqa: S311 - benchmark data, not a secret
    n = args.users
    accounts = [(f"user:{i + 1}:ETH", rng.randrange(1, 10**22)) for i in range(n)]
    texts = [sumtree.from_units(units, PRECISION) for _, units in accounts]
    nonces = [secrets.token_hex(32) for _ in range(n)]
    sums = [units for _, units in accounts]

    def make_leaves() -> list[bytes]:
        return [
            sumtree.leaf_hash(sumtree.leaf_bytes(account=a, asset="ETH", balance=t, nonce=nc))
            for (a, _), t, nc in zip(accounts, texts, nonces, strict=True)
        ]

    prebuilt = [
        sumtree.leaf_bytes(account=a, asset="ETH", balance=t, nonce=nc)
        for (a, _), t, nc in zip(accounts, texts, nonces, strict=True)
    ]
    sha = hashlib.sha256
    flat = measure(args.repeat, lambda: [sha(b"\x00" + data).digest() for data in prebuilt])
    leaves = measure(args.repeat, make_leaves)
    hashes = leaves[2]
    tree = measure(args.repeat, lambda: sumtree.build(hashes, sums))
    levels = tree[2]
    root, total = sumtree.root(levels)
    assert total == sum(sums)
    plain = measure(args.repeat, lambda: plain_tree(hashes))

    stored = [(h.hex(), Decimal(t)) for h, t in zip(hashes, texts, strict=True)]
    index = rng.randrange(n)

    def answer() -> list[tuple[str, bytes, int]]:
        hs = [bytes.fromhex(h) for h, _ in stored]
        ss = [int(b.scaleb(PRECISION)) for _, b in stored]
        return sumtree.inclusion_path(sumtree.build(hs, ss), index)

    proof = measure(args.repeat, answer)
    path = proof[2]
    check_runs = 200
    check = measure(
        args.repeat,
        lambda: [
            sumtree.root_from_path(
                leaf=hashes[index], leaf_sum=sums[index], index=index, leaf_count=n, path=path
            )
            for _ in range(check_runs)
        ],
    )
    assert check[2][0] == (root, total)

    base = flat[0]
    rows = [
        ["1. baseline: SHA-256 of each leaf, flat", flat, "1.00x"],
        ["2. leaves: bytes (JSON, nonce) + hash", leaves, f"{leaves[0] / base:.2f}x"],
        ["3. sum tree: inner nodes (sumtree.build)", tree, f"{tree[0] / base:.2f}x"],
        ["4. plain tree, same shape, no sums", plain, f"{plain[0] / base:.2f}x"],
        ["5. one inclusion proof, server side", proof, f"{proof[0] / base:.2f}x"],
    ]
    table = C.table(
        ["stage", "CPU s (median)", "wall s (median)", "CPU / baseline"],
        [[label, f"{m[0]:.3f}", f"{m[1]:.3f}", ratio] for label, m, ratio in rows],
    )
    publish = leaves[0] + tree[0]
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    body = "\n".join(
        [
            "## Proof of reserves: the Merkle sum tree (`bench/reserves_tree.py`)",
            "",
            f"{n:,} accounts with random 18-decimal balances (ETH); each stage run {args.repeat} "
            "times, median CPU time (`process_time`); nothing here touches PostgreSQL or the node "
            "(reading 100,000 deposit addresses is JSON-RPC batches, the node's cost, not this).",
            "",
            "```",
            f"flock /tmp/bench.lock .venv/bin/python bench/reserves_tree.py --users {n} "
            f"--repeat {args.repeat}",
            "```",
            "",
            f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; `nproc` = {nproc} "
            f"({C._cpu_model()}); Python {platform.python_version()}; code: {C.code_version()}",
            "",
            table,
            "",
            f"- The tree's inner nodes cost **{tree[0] / base:.2f}x** hashing the leaves flat "
            f"(n - 1 = {n - 1:,} node hashes of 129 bytes against {n:,} leaf hashes of about "
            f"{sum(map(len, prebuilt)) // n} bytes), and **{tree[0] / plain[0]:.2f}x** the plain "
            "tree of the same shape: the sums (two 32-byte encodings and an addition a node) are "
            "what that ratio pays for.",
            f"- Publishing's tree work (stages 2 + 3): {publish:.2f} s CPU for {n:,} accounts, "
            f"{publish / base:.2f}x the flat baseline.",
            f"- One user's inclusion proof, server side, rebuilds the tree from the stored leaves: "
            f"{proof[0] * 1000:.0f} ms CPU at {n:,} accounts ({proof[0] / base:.2f}x the flat "
            f"baseline), linear in the accounts; the path has {len(path)} steps.",
            f"- The offline verifier's check of that path: {check[0] / check_runs * 1e6:.0f} µs.",
            "- Wall time above CPU time means other processes had the cores (the machine is "
            "shared): read the CPU column and the ratios.",
        ]
    )
    print(body)
    if not args.no_write:
        C.write_section("reserves_tree", body)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
