"""The offline verifier (ledger.verify) runs on an auditor's machine: no Django, no database
driver, checked in a fresh interpreter without Django settings (this one has loaded both long
ago); and it streams an export through complete Merkle subtrees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from ledger import chain, merkle, verify

SERVER_PACKAGES = {"django", "psycopg"}


def _python(*args: str) -> subprocess.CompletedProcess:
    """`python *args` as the auditor runs it: no Django settings, no database."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")
    }
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def _import_and_assert_no_server_package(modules: str) -> subprocess.CompletedProcess:
    return _python(
        "-c",
        f"import {modules}, sys\n"
        f"loaded = sorted({{m.split('.')[0] for m in sys.modules}} & {SERVER_PACKAGES!r})\n"
        "assert not loaded, loaded",
    )


@pytest.mark.parametrize(
    "module",
    [
        "ledger.verify",
        "ledger.chain",
        "ledger.merkle",
        "ledger.scan",  # verify_ledger's worker: psycopg only once it connects
    ],
)
def test_importing_loads_no_server_package(module):
    # when
    run = _import_and_assert_no_server_package(module)
    # then
    assert run.returncode == 0, run.stderr


def test_a_server_package_loaded_is_caught():
    # when
    run = _import_and_assert_no_server_package("ledger.verify, psycopg")
    # then
    assert run.returncode == 1
    assert "AssertionError: ['psycopg']" in run.stderr


def test_the_offline_verifier_answers_help():
    # when
    run = _python("-m", "ledger.verify", "--help")
    # then
    assert run.returncode == 0, run.stderr
    for command in ("export", "proof", "consistency"):
        assert command in run.stdout


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 8, 13])
def test_verify_export_in_blocks(monkeypatch, count):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    monkeypatch.setattr(verify, "_BLOCK", 1)  # complete subtrees of 2 leaves
    lines, leaves, prev = [], [], chain.GENESIS_HASH
    for seq in range(1, count + 1):
        entry = {
            "v": 1,
            "seq": seq,
            "id": seq,
            "key": f"k{seq}",
            "kind": "deposit",
            "flags": "single",
            "asset": "BTC",
            "debit": "world:BTC",
            "credit": "user:1:BTC",
            "amount": "0.10000000",
            "pending_id": None,
            "created_at": "2026-01-01T00:00:00.000000Z",
        }
        data = chain.canonical_entry_bytes(entry)
        this = chain.chain_hash(prev, data)
        lines.append(json.dumps({"seq": seq, "entry": entry, "prev_hash": prev, "hash": this}))
        leaves.append(merkle.leaf_hash(data))
        prev = this
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def signed(root: bytes) -> dict:
        head = {
            "tree_size": count,
            "root_hash": root.hex(),
            "chain_head": prev,
            "timestamp": "2026-01-01T00:00:00Z",
            "key_id": "k",
        }
        message = json.dumps(head, sort_keys=True, separators=(",", ":")).encode()
        return {**head, "signature": key.sign(message).hex()}

    assert verify.verify_export(lines, signed(merkle.root_of(leaves)), {"k": public}) == count
    bad = signed(merkle.root_of([*leaves[:-1], bytes(32)]))
    with pytest.raises(verify.VerificationError, match="Merkle root"):
        verify.verify_export(lines, bad, {"k": public})
