"""The benchmark scripts and the example bot start (their --help), so a refactor that moves what
they import is caught here, not on the next benchmark day."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.parametrize(
    "script",
    [
        "bench/settlement.py",
        "bench/load.py",
        "bench/verify.py",
        "bench/lending_installments.py",
        "examples/bot.py",
    ],
)
def test_the_script_starts(script):
    run = subprocess.run(
        [sys.executable, script, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage:" in run.stdout
