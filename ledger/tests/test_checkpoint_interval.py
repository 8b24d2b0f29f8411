"""Checkpoints on a clock as well as on a count: a quiet ledger gets one within
LEDGER_CHECKPOINT_INTERVAL of sealing, its key is public from the start, and the wallet's verify
page says what an entry is waiting for."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management.sql import emit_post_migrate_signal
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from conftest import ROOT
from ledger import signing
from ledger.models import Checkpoint, SigningKey, Transfer
from ledger.services import ledger_checkpoint_due, ledger_seal_pending, signing_key_publish
from ledger.tasks import seal_pending
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db

INTERVAL = 30
OTHER_KEY = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"


@pytest.fixture(autouse=True)
def short_interval(settings):
    settings.LEDGER_CHECKPOINT_INTERVAL = INTERVAL


@pytest.fixture
def clock_at(monkeypatch) -> Callable[[dt.datetime], None]:
    """Set timezone.now() to a moment: entries sealed "in the past", or the sequencer run "later",
    without sleeping (sealed entries can't be edited afterwards: the append-only triggers)."""

    def set_clock(moment: dt.datetime) -> None:
        monkeypatch.setattr(timezone, "now", lambda: moment)

    return set_clock


def _api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def _offline_verify(tmp_path: Path, proof: dict, keys: dict) -> subprocess.CompletedProcess:
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    # the auditor's machine: no Django settings, no database
    env = {
        k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ledger.verify",
            "proof",
            str(tmp_path / "proof.json"),
            "--keys",
            str(tmp_path / "keys.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_quiet_ledger_is_checkpointed_once_the_interval_has_passed(
    alice, clock_at, tmp_path, settings
):
    # given: two deposits, fewer than LEDGER_CHECKPOINT_EVERY, sealed 20 s ago
    assert settings.LEDGER_CHECKPOINT_EVERY > 2
    fund(alice, "BTC", "0.1")
    fund(alice, "BTC", "0.2")
    now = timezone.now()
    sealed_at = now - dt.timedelta(seconds=20)
    clock_at(sealed_at)
    assert ledger_seal_pending() == 2

    # when: the sequencer's clock looks before the interval is up
    clock_at(now)
    early = ledger_checkpoint_due()

    # then: nothing is signed yet, and the API says when the proof will be ready
    assert early is None
    assert not Checkpoint.objects.exists()
    waiting = _api(alice).get("/api/v1/ledger/entries/2/proof/")
    assert waiting.status_code == 409
    assert waiting.json()["error"]["code"] == "not_checkpointed"
    ready_by = (sealed_at + dt.timedelta(seconds=INTERVAL)).astimezone(dt.UTC)
    message = waiting.json()["error"]["message"]
    assert f"signed by {ready_by:%Y-%m-%dT%H:%M:%SZ} (in about 10 s)" in message

    # when: it looks again once the entries have waited the interval
    clock_at(sealed_at + dt.timedelta(seconds=INTERVAL))
    checkpoint = ledger_checkpoint_due()

    # then: one checkpoint over both entries, whose proof verifies offline
    assert checkpoint is not None
    assert checkpoint.tree_size == 2
    assert list(Checkpoint.objects.values_list("tree_size", flat=True)) == [2]
    proof = _api(alice).get("/api/v1/ledger/entries/2/proof/")
    assert proof.status_code == 200, proof.json()
    assert proof.json()["checkpoint"]["tree_size"] == 2
    keys = APIClient().get("/api/v1/ledger/public-key/").json()
    run = _offline_verify(tmp_path, proof.json(), keys)
    assert run.returncode == 0, run.stderr
    assert "OK: entry 2 (deposit 0.20000000 BTC) is in the signed ledger" in run.stdout


def test_the_clock_signs_one_beat_early_so_the_interval_is_a_bound(alice, clock_at, settings):
    # given: an entry sealed at t0, and the sequencer running every `period` seconds
    period = settings.CELERY_BEAT_SCHEDULE["ledger-seal"]["schedule"]
    assert 0 < period < INTERVAL
    fund(alice, "BTC", "0.1")
    t0 = timezone.now()
    clock_at(t0)
    ledger_seal_pending()

    # when: a run comes just before t0 + interval - period, and the next one a period later
    clock_at(t0 + dt.timedelta(seconds=INTERVAL - period - 0.5))
    before = ledger_checkpoint_due()
    clock_at(t0 + dt.timedelta(seconds=INTERVAL - 0.5))
    within = ledger_checkpoint_due()

    # then: the first signs nothing, the second signs, still inside the interval
    assert before is None
    assert within is not None
    assert within.tree_size == 1


def test_no_second_checkpoint_while_nothing_new_is_sealed(alice, clock_at):
    # given: one entry sealed long enough ago
    fund(alice, "BTC", "0.1")
    clock_at(timezone.now() - dt.timedelta(seconds=INTERVAL + 1))
    ledger_seal_pending()
    clock_at(timezone.now() + dt.timedelta(seconds=INTERVAL + 1))

    # when: the periodic service runs twice
    first = ledger_checkpoint_due()
    second = ledger_checkpoint_due()

    # then: the first signs, the second signs nothing
    assert first is not None
    assert second is None
    assert Checkpoint.objects.count() == 1


def test_an_entry_sealed_after_the_checkpoint_waits_for_its_own_interval(alice, clock_at):
    # given: a checkpoint over entry 1, then entry 2 sealed just now
    fund(alice, "BTC", "0.1")
    now = timezone.now()
    clock_at(now - dt.timedelta(seconds=INTERVAL))
    ledger_seal_pending()
    clock_at(now)
    assert ledger_checkpoint_due().tree_size == 1
    fund(alice, "BTC", "0.2")
    ledger_seal_pending()

    # when: the sequencer looks now and after the interval
    early = ledger_checkpoint_due()
    clock_at(now + dt.timedelta(seconds=INTERVAL))
    late = ledger_checkpoint_due()

    # then: the old checkpoint's age does not sign early; the new entry's does later
    assert early is None
    assert late.tree_size == 2


def test_the_periodic_task_seals_and_checkpoints(alice, clock_at):
    # given: a committed deposit, not sealed yet
    fund(alice, "BTC", "0.1")
    now = timezone.now()

    # when: beat runs the sequencer task now, then once the interval has passed
    clock_at(now)
    sealed = seal_pending()
    after_first_run = Checkpoint.objects.count()
    clock_at(now + dt.timedelta(seconds=INTERVAL))
    seal_pending()

    # then: the first run sealed without signing, the second signed
    assert sealed == 1
    assert after_first_run == 0
    assert list(Checkpoint.objects.values_list("tree_size", flat=True)) == [1]


def test_clock_off_means_checkpoints_by_count_only(alice, clock_at, settings):
    # given: the clock switched off and an entry sealed long ago
    settings.LEDGER_CHECKPOINT_INTERVAL = 0
    fund(alice, "BTC", "0.1")
    clock_at(timezone.now() - dt.timedelta(days=1))
    ledger_seal_pending()

    # when
    checkpoint = ledger_checkpoint_due()

    # then
    assert checkpoint is None


# --- the public key ---------------------------------------------------------------------------


def test_the_public_key_is_listed_on_a_fresh_database(refdata):
    # given: a database just migrated, with no transfer and no checkpoint
    assert not Transfer.objects.exists()
    assert not Checkpoint.objects.exists()

    # when
    response = APIClient().get("/api/v1/ledger/public-key/")

    # then: the current key is listed all the same
    key_id, key = signing.current_key()
    assert response.status_code == 200
    assert response.json()["keys"] == [
        {"key_id": key_id, "public_key": signing.raw_public(key).hex()}
    ]


def test_migrate_publishes_a_new_key(db, settings):
    # given: the operator configured another key
    settings.LEDGER_SIGNING_KEY = OTHER_KEY
    key_id, _ = signing.current_key()
    assert not SigningKey.objects.filter(key_id=key_id).exists()

    # when: `migrate` finishes (its post_migrate signal)
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")

    # then: both keys are listed, the old one (still valid for old checkpoints) first
    keys = APIClient().get("/api/v1/ledger/public-key/").json()["keys"]
    assert [k["key_id"] for k in keys][-1] == key_id
    assert len(keys) == 2


def test_no_key_configured_publishes_nothing_quietly(db, settings):
    # given: no signing key at all
    settings.LEDGER_SIGNING_KEY = ""
    before = SigningKey.objects.count()

    # when
    published = signing_key_publish()
    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")

    # then: no error, no row
    assert published is None
    assert SigningKey.objects.count() == before


# --- the wallet's verify page -----------------------------------------------------------------


def test_verify_page_says_when_a_sealed_entry_will_be_ready(client, alice, clock_at):
    # given: a deposit sealed 10 s ago, no checkpoint yet
    fund(alice, "BTC", "0.1")
    now = timezone.now()
    clock_at(now - dt.timedelta(seconds=10))
    ledger_seal_pending()
    clock_at(now)
    client.force_login(alice)

    # when
    response = client.get("/wallet/proof/1/")

    # then
    page = response.content.decode()
    assert response.status_code == 200
    assert "Sealed, waiting for its checkpoint." in page
    assert f"within about {INTERVAL - 10} seconds" in page
    assert "Verified." not in page


def test_verify_page_says_when_an_entry_is_not_sealed_yet(client, alice):
    # given: a committed deposit the sequencer has not sealed
    fund(alice, "BTC", "0.1")
    transfer = Transfer.objects.get()
    client.force_login(alice)

    # when: the wallet links its "awaiting seal" to the page
    wallet = client.get("/wallet/").content.decode()
    page = client.get(f"/wallet/transfers/{transfer.pk}/proof/").content.decode()

    # then
    assert f"/wallet/transfers/{transfer.pk}/proof/" in wallet
    assert "Not sealed yet." in page
    assert f"within about {INTERVAL} seconds" in page


def test_verify_page_follows_the_entry_once_sealed_and_checkpointed(client, alice, bob, clock_at):
    # given: a deposit sealed and then checkpointed by the clock
    fund(alice, "BTC", "0.1")
    transfer = Transfer.objects.get()
    now = timezone.now()
    clock_at(now - dt.timedelta(seconds=INTERVAL))
    ledger_seal_pending()
    clock_at(now)
    ledger_checkpoint_due()
    client.force_login(alice)

    # when
    by_id = client.get(f"/wallet/transfers/{transfer.pk}/proof/")
    page = client.get(by_id["Location"]).content.decode()

    # then: the transfer's page sends to its seq's proof, which verifies; nobody else's
    assert by_id.status_code == 302
    assert by_id["Location"] == "/wallet/proof/1/"
    assert "Verified." in page
    client.force_login(bob)
    assert client.get(f"/wallet/transfers/{transfer.pk}/proof/").status_code == 404
    assert client.get("/wallet/proof/1/").status_code == 404
