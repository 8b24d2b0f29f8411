"""The Merkle sum tree of the proof of reserves (ledger.sumtree): every leaf's path leads to the
root and its sum, whatever the number of leaves, and no forged sum gets through."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import sumtree


def _leaves(balances: list[int]) -> tuple[list[bytes], list[int]]:
    hashes = [
        sumtree.leaf_hash(
            sumtree.leaf_bytes(
                account=f"user:{i}:ETH",
                asset="ETH",
                balance=sumtree.from_units(b, 18),
                nonce=f"{i:064x}",
            )
        )
        for i, b in enumerate(balances)
    ]
    return hashes, balances


def _check_every_leaf(balances: list[int]) -> None:
    hashes, sums = _leaves(balances)
    levels = sumtree.build(hashes, sums)
    root, total = sumtree.root(levels)
    assert total == sum(balances)
    for index in range(len(balances)):
        path = sumtree.inclusion_path(levels, index)
        assert [side for side, _, _ in path] == sumtree.path_shape(index, len(balances))
        got = sumtree.root_from_path(
            leaf=hashes[index],
            leaf_sum=sums[index],
            index=index,
            leaf_count=len(balances),
            path=path,
        )
        assert got == (root, total)


def test_one_leaf_is_its_own_root():
    hashes, sums = _leaves([5])
    levels = sumtree.build(hashes, sums)
    assert sumtree.root(levels) == (hashes[0], 5)
    assert sumtree.inclusion_path(levels, 0) == []
    _check_every_leaf([5])


def test_the_empty_tree():
    assert sumtree.root(sumtree.build([], [])) == (hashlib.sha256(b"").digest(), 0)


def test_two_leaves_by_hand():
    (a, b), _ = _leaves([3, 4])
    levels = sumtree.build([a, b], [3, 4])
    expected = hashlib.sha256(
        b"\x01" + a + (3).to_bytes(32, "big") + b + (4).to_bytes(32, "big")
    ).digest()
    assert sumtree.root(levels) == (expected, 7)


@pytest.mark.parametrize("count", [2, 3, 5, 6, 7, 8, 9, 31, 33, 100])
def test_odd_and_even_leaf_counts(count):
    _check_every_leaf([(i * 7919) % 1000 for i in range(count)])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**30), min_size=1, max_size=70))
def test_any_tree_proves_every_leaf(balances):
    _check_every_leaf(balances)


def _proof(count: int = 5, index: int = 2):
    hashes, sums = _leaves([10 * (i + 1) for i in range(count)])
    levels = sumtree.build(hashes, sums)
    return hashes[index], sums[index], levels, sumtree.inclusion_path(levels, index)


def test_a_raised_sibling_sum_does_not_reach_the_root():
    leaf, value, levels, path = _proof()
    side, digest, s = path[0]
    forged = [(side, digest, s + 1), *path[1:]]
    root, total = sumtree.root_from_path(
        leaf=leaf, leaf_sum=value, index=2, leaf_count=5, path=forged
    )
    assert (root, total) != sumtree.root(levels)


def test_a_negative_sum_is_refused():
    leaf, value, _, path = _proof()
    side, digest, _ = path[0]
    with pytest.raises(sumtree.SumTreeError, match="negative"):
        sumtree.root_from_path(
            leaf=leaf, leaf_sum=value, index=2, leaf_count=5, path=[(side, digest, -1), *path[1:]]
        )
    with pytest.raises(sumtree.SumTreeError, match="negative"):
        sumtree.root_from_path(leaf=leaf, leaf_sum=-5, index=2, leaf_count=5, path=path)
    with pytest.raises(sumtree.SumTreeError, match="negative"):
        sumtree.build([leaf], [-1])


def test_a_node_sum_that_is_not_its_childrens_is_refused():
    leaf, value, _, path = _proof()
    honest = []
    total = value
    for _, _, s in path:
        total += s
        honest.append(total)
    sumtree.root_from_path(
        leaf=leaf, leaf_sum=value, index=2, leaf_count=5, path=path, node_sums=honest
    )
    with pytest.raises(sumtree.SumTreeError, match="not the sum of its children"):
        sumtree.root_from_path(
            leaf=leaf,
            leaf_sum=value,
            index=2,
            leaf_count=5,
            path=path,
            node_sums=[honest[0] + 1, *honest[1:]],
        )


def test_a_path_of_the_wrong_shape_is_refused():
    leaf, value, _, path = _proof()
    with pytest.raises(sumtree.SumTreeError, match="steps"):
        sumtree.root_from_path(leaf=leaf, leaf_sum=value, index=2, leaf_count=5, path=path[:-1])
    flipped = [("left" if path[0][0] == "right" else "right", *path[0][1:]), *path[1:]]
    with pytest.raises(sumtree.SumTreeError, match="must be on the"):
        sumtree.root_from_path(leaf=leaf, leaf_sum=value, index=2, leaf_count=5, path=flipped)
    with pytest.raises(sumtree.SumTreeError, match="outside the tree"):
        sumtree.root_from_path(leaf=leaf, leaf_sum=value, index=5, leaf_count=5, path=path)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("-1", "negative"),
        ("1e3", "not a decimal"),
        ("0.1234567", "more than 6"),
        ("abc", "not a decimal"),
        (1.5, "not a decimal"),
    ],
)
def test_amounts_are_exact_non_negative_decimal_strings(text, rule):
    with pytest.raises(sumtree.SumTreeError, match=rule):
        sumtree.to_units(text, 6)


def test_amounts_round_trip():
    assert sumtree.to_units("1.5", 6) == 1_500_000
    assert sumtree.from_units(1_500_000, 6) == "1.500000"
    assert sumtree.from_units(5, 6) == "0.000005"
    assert sumtree.from_units(7, 0) == "7"


def test_the_offline_verifier_and_the_tree_load_no_server_package():
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {
        k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")
    }
    run = subprocess.run(
        [sys.executable, "-c", "import ledger.sumtree, ledger.verify, sys\n"
         "assert not {m.split('.')[0] for m in sys.modules} & {'django', 'psycopg'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "ledger.verify", "reserves", "--help"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert helped.returncode == 0
    assert "--balance" in helped.stdout
