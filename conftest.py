"""Shared fixtures: reference data, traders, and a real Celery worker process over Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from accounts.tests.factories import UserFactory
from marketplace.tests.factories import reference_data

ROOT = Path(__file__).resolve().parent


@pytest.fixture
def refdata(db: None) -> None:
    reference_data()


@pytest.fixture
def alice(refdata: None):
    return UserFactory(username="alice")


@pytest.fixture
def bob(refdata: None):
    return UserFactory(username="bob")


@pytest.fixture
def carol(refdata: None):
    return UserFactory(username="carol")


def require_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: run through `make test` (it starts one)")


def wait_for(
    predicate: Callable[[], object], *, timeout: float = 30.0, interval: float = 0.05
) -> object:
    """Poll until predicate() is truthy or the deadline passes (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class CeleryWorker:
    """A real `celery worker` process on the test database and the test Redis."""

    def __init__(self, db_name: str) -> None:
        self.db_name = db_name
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = (
            Path(os.environ.get("TEST_SERVICES_DIR") or tempfile.gettempdir())
            / f"celery-worker-{os.getpid()}.log"
        )

    def env(self) -> dict[str, str]:
        from django.conf import settings

        db = settings.DATABASES["default"]
        env = dict(os.environ)
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:{db['PORT']}/{self.db_name}"
        )
        env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
        return env

    def start(self) -> None:
        from config.celery import app

        app.control.purge()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-l",
                "info",
                "-P",
                "threads",
                "-c",
                "4",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"test-{os.getpid()}@%h",
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: b"ready." in self.log.read_bytes() or self._died(), timeout=60, interval=0.1
        )
        if self._died():
            raise RuntimeError(f"celery worker died:\n{self.log.read_text()[-3000:]}")

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker) -> Iterator[CeleryWorker]:
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs Redis: run through `make test` (it starts one)")
    with django_db_blocker.unblock():
        require_postgres()
        name = connection.settings_dict["NAME"]
    worker = CeleryWorker(name)
    worker.start()
    yield worker
    worker.stop()
