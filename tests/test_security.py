"""Production settings pass `check --deploy`; headers, password hashing and login lockout."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from conftest import ROOT


def test_check_deploy_is_clean_with_production_settings():
    env = {
        # (the browser tests' conftest allows async-unsafe calls for Playwright; production doesn't)
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": "x" * 30 + "-a-long-random-production-secret-key-value-0123456789",
        "LEDGER_SIGNING_KEY": "5e1f0c9a2b7d4e8f6a3c1b0d9e7f5a2c4b6d8e0f1a3c5e7b9d2f4a6c8e0b1d3f",
        "ALLOWED_HOSTS": "p2p.example.com",
    }
    run = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no issues" in run.stdout


@pytest.mark.parametrize(
    "key", ["change-me", "local-dev-only-not-secret", "django-insecure-" + "k" * 40, "short-key"]
)
def test_production_refuses_a_default_known_or_short_secret_key(key):
    # given production settings with a key anyone could know (security finding 12)
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": key,
        "LEDGER_SIGNING_KEY": "5e1f0c9a2b7d4e8f6a3c1b0d9e7f5a2c4b6d8e0f1a3c5e7b9d2f4a6c8e0b1d3f",
        "ALLOWED_HOSTS": "p2p.example.com",
    }
    # when the site starts
    run = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    # then it refuses, naming the setting
    assert run.returncode != 0
    assert "SECRET_KEY is a default, known or short key" in run.stderr


@pytest.mark.django_db
def test_security_headers_on_pages(client, refdata):
    response = client.get("/")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"


def test_passwords_are_hashed_with_argon2_outside_tests():
    from config.settings import base

    assert base.PASSWORD_HASHERS[0] == "django.contrib.auth.hashers.Argon2PasswordHasher"
    from django.contrib.auth.hashers import Argon2PasswordHasher

    encoded = Argon2PasswordHasher().encode("demo-pass-123", Argon2PasswordHasher().salt())
    assert encoded.startswith("argon2$argon2id$")


@pytest.mark.django_db
def test_login_lockout_after_repeated_failures(client, alice):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    locked = client.post("/accounts/login/", {"username": "alice", "password": "demo-pass-123"})
    assert locked.status_code == 429
    # the API's token endpoint is behind the same lock
    api = APIClient().post(
        "/api/v1/auth/token/", {"username": "alice", "password": "demo-pass-123"}, format="json"
    )
    assert api.status_code == 429
    assert api.json()["error"]["code"] == "locked_out"
