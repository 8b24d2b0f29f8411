"""The offline verifier runs on an auditor's machine: no Django, no database driver.

Each check runs in a fresh interpreter without Django settings (this one has loaded both long
ago) and asserts on its sys.modules.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT

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
