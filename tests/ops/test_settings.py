"""Production settings refuse to start without real secrets, each with a message saying which
and how to make one; secrets may come from files (Docker secrets); ledger_keygen makes a key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import ROOT
from ledger import signing

GOOD_SECRET = "k3Y-" + "x7Qp9Lm2Zr4Tn8Wv1Bc6Hd0Jf5Sg3Ka" * 2
GOOD_SEED = "3b1f7e0c9a8d6f5e4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918f7e6d5c"


def load_production(**env: str) -> subprocess.CompletedProcess[str]:
    """Import config.settings.production in a fresh interpreter with only this environment."""
    base = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": "postgres://localhost/unused",
        "REDIS_URL": "redis://localhost/0",
        "ALLOWED_HOSTS": "market.example.com",
    }
    return subprocess.run(
        [sys.executable, "-c", "import config.settings.production"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, "production settings loaded"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("django.core.exceptions.ImproperlyConfigured: "), result.stderr
    return last.removeprefix("django.core.exceptions.ImproperlyConfigured: ")


def test_real_secrets_load():
    assert load_production(SECRET_KEY=GOOD_SECRET, LEDGER_SIGNING_KEY=GOOD_SEED).returncode == 0


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"LEDGER_SIGNING_KEY": GOOD_SEED}, "SECRET_KEY is missing"),
        ({"SECRET_KEY": "change-me", "LEDGER_SIGNING_KEY": GOOD_SEED}, "SECRET_KEY is a default"),
        ({"SECRET_KEY": "short-key", "LEDGER_SIGNING_KEY": GOOD_SEED}, "SECRET_KEY is a default"),
        ({"SECRET_KEY": GOOD_SECRET}, "LEDGER_SIGNING_KEY is missing"),
        # the public test key of config/settings/test.py
        (
            {
                "SECRET_KEY": GOOD_SECRET,
                "LEDGER_SIGNING_KEY": (
                    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
                ),
            },
            "LEDGER_SIGNING_KEY is a default, known or malformed key",
        ),
        (
            {"SECRET_KEY": GOOD_SECRET, "LEDGER_SIGNING_KEY": "0" * 64},
            "LEDGER_SIGNING_KEY is a default, known or malformed key",
        ),
        (
            {"SECRET_KEY": GOOD_SECRET, "LEDGER_SIGNING_KEY": "not-hex"},
            "LEDGER_SIGNING_KEY is a default, known or malformed key",
        ),
        (
            {"SECRET_KEY": GOOD_SECRET, "LEDGER_SIGNING_KEY": GOOD_SEED, "METRICS_TOKEN": "abc"},
            "METRICS_TOKEN is too short",
        ),
    ],
)
def test_production_refuses_missing_default_or_short_secrets(env, says):
    message = refusal(load_production(**env))
    assert message.startswith(says), message


def test_secrets_from_files_as_docker_secrets_gives_them(tmp_path):
    (tmp_path / "secret_key").write_text(GOOD_SECRET + "\n")
    (tmp_path / "signing_key").write_text(GOOD_SEED + "\n")
    files = {
        "SECRET_KEY_FILE": str(tmp_path / "secret_key"),
        "LEDGER_SIGNING_KEY_FILE": str(tmp_path / "signing_key"),
    }
    assert load_production(**files).returncode == 0
    # a file that is not there is named
    message = refusal(load_production(**{**files, "LEDGER_SIGNING_KEY_FILE": "/run/secrets/no"}))
    assert message.startswith("LEDGER_SIGNING_KEY_FILE=/run/secrets/no cannot be read")
    # both ways at once is ambiguous
    message = refusal(load_production(**files, SECRET_KEY=GOOD_SECRET))
    assert message == "Set SECRET_KEY or SECRET_KEY_FILE, not both."


def test_ledger_keygen_prints_a_seed_and_its_key_id_without_any_secret_set():
    # given a first install: no secrets at all
    result = subprocess.run(
        [sys.executable, "manage.py", "ledger_keygen"],
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DATABASE_URL": "postgres://localhost/unused",
            "REDIS_URL": "redis://localhost/0",
            "ALLOWED_HOSTS": "market.example.com",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.split())
    # then the seed, the public key and the key id belong together
    seed = lines["LEDGER_SIGNING_KEY"]
    public = signing.raw_public(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed)))
    assert lines["public_key"] == public.hex()
    assert lines["key_id"] == signing.key_id_for(public)
    # and production accepts the seed
    assert load_production(SECRET_KEY=GOOD_SECRET, LEDGER_SIGNING_KEY=seed).returncode == 0


def test_private_files_go_to_an_s3_compatible_bucket_when_one_is_named():
    # given production settings with a bucket named in the environment (an S3-compatible
    # endpoint: MinIO, Ceph, R2...), when the private storage is built (no connection is made)
    script = (
        "import django; django.setup()\n"
        "from common.files import private_storage\n"
        "private_storage._setup(); s = private_storage._wrapped\n"
        "print(type(s).__mro__[1].__module__, s.bucket_name, s.endpoint_url, s.location, "
        "s.default_acl, s.file_overwrite)\n"
        "try:\n    s.url('kyc/x.pdf')\nexcept ValueError as e:\n    print('no url:', e)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={
            "PATH": os.environ["PATH"],
            "DATABASE_URL": "postgres://localhost/unused",
            "REDIS_URL": "redis://localhost/0",
            "ALLOWED_HOSTS": "market.example.com",
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": GOOD_SECRET,
            "LEDGER_SIGNING_KEY": GOOD_SEED,
            "PRIVATE_STORAGE_BUCKET": "market-private",
            "PRIVATE_STORAGE_ENDPOINT_URL": "https://s3.internal.example:9000",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    # then the files go to that bucket, privately, under a prefix, and still never get a URL
    first, second = run.stdout.strip().splitlines()[-2:]
    assert first == (
        "storages.backends.s3 market-private https://s3.internal.example:9000 private private False"
    )
    assert second.startswith("no url: This file is not accessible via a URL")
