"""The benchmark scripts and the example bot start (their --help), so a refactor that moves what
they import is caught here, not on the next benchmark day."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT, require_postgres


@pytest.mark.parametrize(
    "script",
    [
        "bench/settlement.py",
        "bench/load.py",
        "bench/verify.py",
        "bench/lending_liquidation.py",
        "bench/lending_installments.py",
        "bench/live.py",
        "bench/take_history.py",
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


def test_the_liquidation_benchmark_runs_on_a_small_book():
    """bench/lending_liquidation.py end to end on 300 loans (no pgbench, BENCHMARKS.md left
    alone): its own checks (each loan liquidated once, none left past the line, verify_ledger)
    must pass."""
    require_postgres()
    run = subprocess.run(
        [sys.executable, "bench/lending_liquidation.py", "--loans", "300", "--pgbench-seconds",
         "0", "--no-write"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:])
    assert "all passed" in run.stdout


def test_the_take_history_benchmark_runs_on_a_small_history():
    """bench/take_history.py end to end (BENCHMARKS.md left alone): the history is copied in and
    every measured trade goes through the API (the script asserts each answer)."""
    require_postgres()
    run = subprocess.run(
        [sys.executable, "bench/take_history.py", "--history", "0,600", "--trades", "6",
         "--rounds", "1", "--no-write"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:])
    assert "| 600 (" in run.stdout
