"""ledger.merkle against an independent reference: RFC 9162's definitions written out directly
over lists of leaves (MTH, PATH, PROOF), for every tree size and index up to 40."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import merkle


def ref_mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


DATA = [f"entry {i}".encode() for i in range(40)]


def lookup_for(d: list[bytes]):
    def lookup(level: int, index: int) -> bytes:
        size = 1 << level
        return ref_mth(d[index * size : (index + 1) * size])

    return lookup


@pytest.mark.parametrize("n", range(1, 41))
def test_roots_and_inclusion_match_the_reference(n):
    d = DATA[:n]
    lookup = lookup_for(d)
    root = ref_mth(d)
    assert merkle.range_hash(0, n, lookup) == root
    assert merkle.root_of(merkle.leaf_hash(x) for x in d) == root
    for m in range(n):
        path = merkle.inclusion_path(m, n, lookup)
        assert path == ref_path(m, d)
        assert len(path) <= max(1, (n - 1).bit_length())
        assert merkle.verify_inclusion(m, n, merkle.leaf_hash(d[m]), path, root)
        # a wrong leaf, index or root fails
        assert not merkle.verify_inclusion(m, n, merkle.leaf_hash(b"forged"), path, root)
        assert (
            not merkle.verify_inclusion((m + 1) % n, n, merkle.leaf_hash(d[m]), path, root)
            or n == 1
        )
        assert not merkle.verify_inclusion(
            m, n, merkle.leaf_hash(d[m]), path, hashlib.sha256(b"x").digest()
        )


@pytest.mark.parametrize("second", range(1, 41))
def test_consistency_matches_the_reference(second):
    d = DATA[:second]
    lookup = lookup_for(d)
    for first in range(1, second + 1):
        path = merkle.consistency_path(first, second, lookup)
        assert path == ref_subproof(first, d, True)
        assert merkle.verify_consistency(first, second, ref_mth(d[:first]), ref_mth(d), path)
        if first < second:
            forged = ref_mth([*d[: first - 1], b"rewritten"])
            assert not merkle.verify_consistency(first, second, forged, ref_mth(d), path)


def test_known_vector():
    # The empty tree and a one-leaf tree, as RFC 9162 defines them.
    assert (
        merkle.root_of([]).hex()
        == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.root_of([merkle.leaf_hash(b"")]).hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


@given(st.integers(min_value=1, max_value=300), st.data())
def test_frontiers_of_subtree_levels_give_every_root(n, data):
    leaves = [hashlib.sha256(str(i).encode()).digest() for i in range(n)]
    levels = merkle.subtree_levels(leaves)
    size = data.draw(st.integers(min_value=1, max_value=n))
    tree = merkle.StreamingRoot()
    for level, node in merkle.frontier(levels, size):
        tree.extend(level, node)
    assert tree.root() == merkle.root_of(leaves[:size])
    # Chunks of 2**k leaves as complete subtrees, then a partial one as a frontier.
    k = data.draw(st.integers(min_value=0, max_value=5))
    whole = merkle.StreamingRoot()
    full = n >> k << k
    for start in range(0, full, 1 << k):
        whole.extend(k, merkle.subtree_levels(leaves[start : start + (1 << k)])[k][0])
    rest = merkle.frontier(merkle.subtree_levels(leaves[full:]), n - full) if n > full else []
    assert whole.root(*rest) == merkle.root_of(leaves)
