"""RFC 9162 (Certificate Transparency v2) Merkle trees, pure Python with no Django.

    leaf hash  = SHA-256(0x00 || entry bytes)
    node hash  = SHA-256(0x01 || left || right)
    MTH(D[n])  = node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of two < n

Entry `seq` is leaf index `seq - 1`. Proof paths are in RFC 9162 order (leaf upwards).
`subtree` is any callable giving the hash of a complete, aligned subtree (level, index): the
server reads stored nodes, the offline verifier computes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


SubtreeLookup = Callable[[int, int], bytes]


def range_hash(start: int, end: int, subtree: SubtreeLookup) -> bytes:
    """MTH(D[start:end]) for ranges that arise in RFC 9162's recursion (start aligned)."""
    size = end - start
    if size == 0:
        return EMPTY_ROOT
    if size & (size - 1) == 0 and start % size == 0:
        level = size.bit_length() - 1
        return subtree(level, start >> level)
    k = _split(size)
    return node_hash(range_hash(start, start + k, subtree), range_hash(start + k, end, subtree))


def inclusion_path(index: int, size: int, subtree: SubtreeLookup, start: int = 0) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 2.1.3.1: the audit path of leaf `index` in a tree of `size`."""
    if size <= 1:
        return []
    k = _split(size)
    if index < k:
        return [
            *inclusion_path(index, k, subtree, start),
            range_hash(start + k, start + size, subtree),
        ]
    return [
        *inclusion_path(index - k, size - k, subtree, start + k),
        range_hash(start, start + k, subtree),
    ]


def consistency_path(first: int, second: int, subtree: SubtreeLookup) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 2.1.4.1."""
    if not 0 < first <= second:
        raise ValueError("need 0 < first <= second")
    return _subproof(first, 0, second, True, subtree)


def _subproof(m: int, start: int, n: int, complete: bool, subtree: SubtreeLookup) -> list[bytes]:
    if m == n:
        return [] if complete else [range_hash(start, start + n, subtree)]
    k = _split(n)
    if m <= k:
        return [
            *_subproof(m, start, k, complete, subtree),
            range_hash(start + k, start + n, subtree),
        ]
    return [
        *_subproof(m - k, start + k, n - k, False, subtree),
        range_hash(start, start + k, subtree),
    ]


def verify_inclusion(index: int, size: int, leaf: bytes, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does `path` prove leaf hash `leaf` at `index` in the tree `root`?"""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: list[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree `second_root` an append-only extension of `first_root`?"""
    if first == second:
        return first_root == second_root and not path
    if not 0 < first < second or not path:
        return False
    if first & (first - 1) == 0:  # a power of two: the first root itself starts the proof
        path = [first_root, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


class StreamingRoot:
    """Merkle root over leaves appended one at a time, in O(log n) memory (the right edge)."""

    def __init__(self) -> None:
        self.size = 0
        self._frontier: list[tuple[int, bytes]] = []  # (level, hash), highest level first

    def append(self, leaf: bytes) -> None:
        self.extend(0, leaf)

    def extend(self, level: int, node: bytes) -> None:
        """Append a complete subtree of 2**level leaves (the size must be a multiple of it)."""
        if self.size & ((1 << level) - 1):
            raise ValueError(f"a subtree of level {level} is not aligned at size {self.size}")
        self.size += 1 << level
        while self._frontier and self._frontier[-1][0] == level:
            _, left = self._frontier.pop()
            node = node_hash(left, node)
            level += 1
        self._frontier.append((level, node))

    def root(self, *more: tuple[int, bytes]) -> bytes:
        """The root; with `more` (a frontier of smaller subtrees that follow), the root of the
        larger tree, without appending them."""
        frontier = [*self._frontier, *more]
        if not frontier:
            return EMPTY_ROOT
        node = frontier[-1][1]
        for _, left in reversed(frontier[:-1]):
            node = node_hash(left, node)
        return node


def root_of(leaves: Iterable[bytes]) -> bytes:
    stream = StreamingRoot()
    for leaf in leaves:
        stream.append(leaf)
    return stream.root()


def subtree_levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every complete subtree over `leaves` (the first at an aligned position): levels[0] is
    `leaves`, levels[k][i] the hash of leaves i * 2**k .. (i + 1) * 2**k - 1. Level by level,
    one list comprehension each: no Python call per node beyond hashlib's."""
    sha = hashlib.sha256
    levels = [leaves]
    level = leaves
    while len(level) > 1:
        pairs = iter(level)
        level = [
            sha(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=False)
        ]
        levels.append(level)
    return levels


def frontier(levels: list[list[bytes]], size: int) -> list[tuple[int, bytes]]:
    """The complete subtrees that cover the first `size` leaves of subtree_levels(), highest
    level first: what StreamingRoot holds after `size` appends."""
    if size > len(levels[0]):
        raise ValueError(f"only {len(levels[0])} leaves, not {size}")
    return [
        (level, levels[level][(size >> level) - 1])
        for level in reversed(range(size.bit_length()))
        if size >> level & 1
    ]
