"""The Merkle sum tree of the proof of reserves: pure Python, no Django (the offline verifier
imports it). docs/chain.md "Reserves" is its specification.

    leaf bytes = UTF-8 JSON, sorted keys, no spaces, of
                 {"account": "user:3:ETH", "asset": "ETH", "balance": "1.500000000000000000",
                  "nonce": "<64 hex digits>"}
    leaf hash  = SHA-256(0x00 || leaf bytes)            leaf sum = the balance in base units
    node hash  = SHA-256(0x01 || left hash || left sum || right hash || right sum)
    node sum   = left sum + right sum

Sums are whole base units (balance x 10**precision), hashed as 32-byte big-endian unsigned
integers: a negative sum has no encoding and is refused, and a node commits to each child's sum
apart, so a forger cannot move value between siblings (the flaw of summing without it). Levels
pair nodes left to right; an odd last node is carried up unchanged (it gets no path step at that
level). The empty tree's root is SHA-256 of nothing with sum 0.

The `nonce` is a per-account, per-proof random value: without it, anyone could test guesses of
a balance against a published leaf hash.
"""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal, InvalidOperation

EMPTY_ROOT = hashlib.sha256(b"").digest()
SUM_BYTES = 32
MAX_SUM = (1 << (8 * SUM_BYTES)) - 1

_AMOUNT = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")


class SumTreeError(ValueError):
    """A sum or a path that cannot be part of an honest tree."""


# --- amounts ----------------------------------------------------------------------------------


def to_units(text: object, precision: int, *, what: str = "amount") -> int:
    """A decimal string (as the proof's JSON carries amounts) in whole base units. Refuses floats,
    exponents, junk, negative values and more places than the asset's precision."""
    if not isinstance(text, str) or not _AMOUNT.match(text):
        raise SumTreeError(f"{what}: {text!r} is not a decimal amount string")
    if text.startswith("-"):
        raise SumTreeError(f"{what}: {text} is negative")
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        raise SumTreeError(f"{what}: {text!r} is not a decimal amount") from None
    units = value.scaleb(precision)
    if units != units.to_integral_value():
        raise SumTreeError(f"{what}: {text} has more than {precision} decimal places")
    result = int(units)
    if result > MAX_SUM:
        raise SumTreeError(f"{what}: {text} is out of range")
    return result


def from_units(units: int, precision: int) -> str:
    """Whole base units as the positional decimal string with `precision` places."""
    if units < 0:
        raise SumTreeError(f"negative sum {units}")
    if precision == 0:
        return str(units)
    digits = str(units).rjust(precision + 1, "0")
    return f"{digits[:-precision]}.{digits[-precision:]}"


# --- hashing ----------------------------------------------------------------------------------


def leaf_bytes(*, account: str, asset: str, balance: str, nonce: str) -> bytes:
    fields = {"account": account, "asset": asset, "balance": balance, "nonce": nonce}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _sum_bytes(value: int) -> bytes:
    if value < 0:
        raise SumTreeError(f"negative sum {value}")
    if value > MAX_SUM:
        raise SumTreeError(f"sum {value} is out of range")
    return value.to_bytes(SUM_BYTES, "big")


def node_hash(left: bytes, left_sum: int, right: bytes, right_sum: int) -> bytes:
    return hashlib.sha256(
        b"\x01" + left + _sum_bytes(left_sum) + right + _sum_bytes(right_sum)
    ).digest()


# --- building (the server) --------------------------------------------------------------------

Level = tuple[list[bytes], list[int]]  # the hashes and the sums of one level, left to right


def build(hashes: list[bytes], sums: list[int]) -> list[Level]:
    """Every level of the tree over these leaves, the leaves first and the root last."""
    if len(hashes) != len(sums):
        raise ValueError("one sum per leaf")
    for value in sums:
        if value < 0:
            raise SumTreeError(f"negative leaf sum {value}")
    levels: list[Level] = [(list(hashes), list(sums))]
    sha = hashlib.sha256
    while len(levels[-1][0]) > 1:
        below_h, below_s = levels[-1]
        up_h: list[bytes] = []
        up_s: list[int] = []
        pairs = len(below_h) - 1
        for i in range(0, pairs, 2):
            lh, rh, ls, rs = below_h[i], below_h[i + 1], below_s[i], below_s[i + 1]
            total = ls + rs
            if total > MAX_SUM:
                raise SumTreeError("the total is out of range")
            up_h.append(
                sha(
                    b"\x01"
                    + lh
                    + ls.to_bytes(SUM_BYTES, "big")
                    + rh
                    + rs.to_bytes(SUM_BYTES, "big")
                ).digest()
            )
            up_s.append(total)
        if len(below_h) % 2:
            up_h.append(below_h[-1])  # the odd one out is carried up unchanged
            up_s.append(below_s[-1])
        levels.append((up_h, up_s))
    return levels


def root(levels: list[Level]) -> tuple[bytes, int]:
    top_h, top_s = levels[-1]
    if not top_h:
        return EMPTY_ROOT, 0
    return top_h[0], top_s[0]


def inclusion_path(levels: list[Level], index: int) -> list[tuple[str, bytes, int]]:
    """(side of the sibling, its hash, its sum) from the leaf up; a level where the node is the
    odd one out has no step."""
    if not 0 <= index < len(levels[0][0]):
        raise IndexError(f"leaf {index} is not in the tree")
    path: list[tuple[str, bytes, int]] = []
    for hashes, sums in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(hashes):
            path.append(("left" if index & 1 else "right", hashes[sibling], sums[sibling]))
        index >>= 1
    return path


# --- checking (the offline verifier) ----------------------------------------------------------


def path_shape(index: int, leaf_count: int) -> list[str]:
    """The sides of the siblings a path must have for leaf `index` of `leaf_count`."""
    if not 0 <= index < leaf_count:
        raise SumTreeError(f"leaf index {index} is outside the tree of {leaf_count} leaves")
    sides: list[str] = []
    size = leaf_count
    while size > 1:
        if index ^ 1 < size:
            sides.append("left" if index & 1 else "right")
        index >>= 1
        size = (size + 1) // 2
    return sides


def root_from_path(
    *,
    leaf: bytes,
    leaf_sum: int,
    index: int,
    leaf_count: int,
    path: list[tuple[str, bytes, int]],
    node_sums: list[int] | None = None,
    precision: int | None = None,
) -> tuple[bytes, int]:
    """Walk from a leaf hash and its sum up to the root, checking every sum on the way: none
    negative, and each node's sum the proof states (`node_sums`, one a step) the sum of its two
    children. Returns the root's hash and sum. `precision`: messages give amounts in the
    asset's units instead of base units."""

    def shown(units: int) -> str:
        return str(units) if precision is None or units < 0 else from_units(units, precision)

    sides = path_shape(index, leaf_count)
    if len(path) != len(sides):
        raise SumTreeError(
            f"the path has {len(path)} steps; leaf {index} of {leaf_count} needs {len(sides)}"
        )
    if node_sums is not None and len(node_sums) != len(path):
        raise SumTreeError("the path needs one node sum a step")
    if leaf_sum < 0:
        raise SumTreeError(f"the leaf's sum is negative ({leaf_sum})")
    node, total = leaf, leaf_sum
    for level, ((side, sibling, sibling_sum), expected) in enumerate(zip(path, sides, strict=True)):
        if side != expected:
            raise SumTreeError(f"step {level}: the sibling must be on the {expected}, not {side}")
        if sibling_sum < 0:
            raise SumTreeError(f"step {level}: the sibling's sum is negative ({sibling_sum})")
        if side == "left":
            node = node_hash(sibling, sibling_sum, node, total)
        else:
            node = node_hash(node, total, sibling, sibling_sum)
        total += sibling_sum
        if node_sums is not None:
            if node_sums[level] < 0:
                raise SumTreeError(f"step {level}: the node's sum is negative")
            if node_sums[level] != total:
                raise SumTreeError(
                    f"step {level}: the node's sum {shown(node_sums[level])} is not the sum of "
                    f"its children ({shown(total)})"
                )
    return node, total
