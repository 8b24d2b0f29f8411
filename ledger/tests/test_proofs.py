"""Checkpoints, proofs over the API, the offline verifier, key rotation, append-only triggers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from conftest import ROOT
from ledger import merkle
from ledger.models import Checkpoint, SigningKey, Transfer
from ledger.replay import verify_ledger
from ledger.services import checkpoint_create, ledger_seal_pending, transfer_entry
from ledger.verify import VerificationError, verify_export, verify_proof
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db

OTHER_KEY = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"


@pytest.fixture
def ledger_with_entries(alice, bob):
    for i in range(11):
        fund(alice if i % 2 else bob, "BTC", f"0.{i + 1}")
    ledger_seal_pending(batch_size=3)
    return Transfer.objects.count()


def _api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def test_checkpoints_every_n_and_on_demand(ledger_with_entries):
    # LEDGER_CHECKPOINT_EVERY is 4 in the test settings: 11 entries -> checkpoints at 4 and 8
    assert list(Checkpoint.objects.order_by("tree_size").values_list("tree_size", flat=True)) == [
        4,
        8,
    ]
    latest = checkpoint_create()
    assert latest.tree_size == 11
    leaves = Transfer.objects.order_by("seq").values_list("leaf_hash", flat=True)
    assert latest.root_hash == merkle.root_of(bytes.fromhex(h) for h in leaves).hex()
    assert latest.chain_head == Transfer.objects.get(seq=11).hash
    assert verify_ledger().ok


def test_inclusion_proof_over_the_api_verifies_offline(ledger_with_entries, alice):
    checkpoint_create()
    mine = Transfer.objects.filter(credit_account__user=alice).order_by("seq").first()
    response = _api(alice).get(f"/api/v1/ledger/entries/{mine.seq}/proof/")
    assert response.status_code == 200, response.json()
    proof = response.json()
    assert proof["tree_size"] == 11
    assert len(proof["path"]) <= 4
    keys = APIClient().get("/api/v1/ledger/public-key/").json()
    entry = verify_proof(proof, {k["key_id"]: k["public_key"] for k in keys["keys"]})
    assert entry["id"] == mine.pk
    # against an older checkpoint too
    older = _api(alice).get(f"/api/v1/ledger/entries/{mine.seq}/proof/?tree_size=4").json()
    assert older["checkpoint"]["tree_size"] == 4
    verify_proof(older, {k["key_id"]: k["public_key"] for k in keys["keys"]})
    # a forged path fails
    proof["path"][0] = "00" * 32
    with pytest.raises(VerificationError):
        verify_proof(proof, {k["key_id"]: k["public_key"] for k in keys["keys"]})


def test_proofs_are_only_for_the_owner(ledger_with_entries, alice, carol):
    checkpoint_create()
    mine = Transfer.objects.filter(credit_account__user=alice).first()
    response = _api(carol).get(f"/api/v1/ledger/entries/{mine.seq}/proof/")
    assert response.status_code == 404
    bad = _api(alice).get(f"/api/v1/ledger/entries/{mine.seq}/proof/?tree_size=5")
    assert bad.status_code == 404
    assert "tree_size" in bad.json()["error"]["fields"]


def test_consistency_proofs(ledger_with_entries):
    checkpoint_create()
    api = APIClient()
    for first in range(1, 12):
        body = api.get(f"/api/v1/ledger/consistency/?first={first}&second=11").json()
        assert merkle.verify_consistency(
            first,
            11,
            bytes.fromhex(body["first_root"]),
            bytes.fromhex(body["second_root"]),
            [bytes.fromhex(p) for p in body["path"]],
        )
    assert api.get("/api/v1/ledger/consistency/?first=5&second=99").status_code == 400
    assert api.get("/api/v1/ledger/consistency/?first=x&second=3").status_code == 400


def test_checkpoint_survives_key_rotation(ledger_with_entries, settings):
    first = checkpoint_create()
    old_key = first.key_id
    settings.LEDGER_SIGNING_KEY = OTHER_KEY
    fund(Transfer.objects.first().credit_account.user, "BTC", "1")
    second = checkpoint_create()
    assert second.key_id != old_key
    keys = APIClient().get("/api/v1/ledger/public-key/").json()["keys"]
    assert {k["key_id"] for k in keys} == {old_key, second.key_id}
    assert SigningKey.objects.count() == 2
    assert verify_ledger().ok  # both checkpoints verify, each with its own key


def test_export_and_offline_verifier_cli(ledger_with_entries, tmp_path: Path):
    checkpoint = checkpoint_create()
    export = tmp_path / "ledger.jsonl"
    with export.open("w") as out:
        call_command("export_ledger", stdout=out)
    (tmp_path / "checkpoint.json").write_text(
        json.dumps(APIClient().get("/api/v1/ledger/checkpoints/latest/").json())
    )
    (tmp_path / "keys.json").write_text(
        json.dumps(APIClient().get("/api/v1/ledger/public-key/").json())
    )
    # the auditor's machine: no Django settings, no database
    env = {
        k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")
    }
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ledger.verify",
            "export",
            str(export),
            "--checkpoint",
            str(tmp_path / "checkpoint.json"),
            "--keys",
            str(tmp_path / "keys.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert f"OK: {checkpoint.tree_size} entries" in run.stdout
    # one altered amount in the export is caught at its seq
    lines = export.read_text().splitlines()
    row = json.loads(lines[6])
    row["entry"]["amount"] = "9.00000000"
    lines[6] = json.dumps(row)
    export.write_text("\n".join(lines))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ledger.verify",
            "export",
            str(export),
            "--checkpoint",
            str(tmp_path / "checkpoint.json"),
            "--keys",
            str(tmp_path / "keys.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert "first bad seq: 7" in run.stderr


def test_forged_checkpoint_is_detected(ledger_with_entries):
    checkpoint = checkpoint_create()
    keys = dict(SigningKey.objects.values_list("key_id", "public_key"))
    export = [
        json.dumps(
            {
                "seq": t.seq,
                "entry": transfer_entry(t, seq=t.seq),
                "prev_hash": t.prev_hash,
                "hash": t.hash,
            }
        )
        for t in Transfer.objects.select_related(
            "asset", "debit_account", "credit_account"
        ).order_by("seq")
    ]
    forged = {
        **Checkpoint.objects.filter(pk=checkpoint.pk)
        .values("tree_size", "root_hash", "chain_head", "timestamp", "key_id", "signature")
        .get(),
        "root_hash": "ab" * 32,
    }
    with pytest.raises(VerificationError, match="bad signature"):
        verify_export(export, forged, keys)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(
            "UPDATE ledger_checkpoint SET root_hash = %s WHERE id = %s", ["ab" * 32, checkpoint.pk]
        )
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
    report = verify_ledger()
    assert not report.ok
    assert report.first_bad_seq == checkpoint.tree_size


def test_database_refuses_to_rewrite_sealed_entries(ledger_with_entries):
    if connection.vendor != "postgresql":
        pytest.skip("the append-only triggers are PostgreSQL's")
    sealed = Transfer.objects.get(seq=3)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        Transfer.objects.filter(pk=sealed.pk).update(amount=sealed.amount + 1)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        Checkpoint.objects.all().delete()
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as c,
    ):
        c.execute("DELETE FROM ledger_transfer WHERE id = %s", [sealed.pk])
    assert verify_ledger().ok
