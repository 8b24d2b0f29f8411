"""A real WebSocket server for tests: `uvicorn config.asgi:application` in a child process, on
the test database and the test Redis (tests/browser/test_live.py, notifications' bot tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings as django_settings
from django.db import connection

from conftest import wait_for

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WsServer:
    """`uvicorn config.asgi:application` on the test database and the test Redis."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        db = urlsplit(os.environ["DATABASE_URL"])
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": urlunsplit(db._replace(path="/" + connection.settings_dict["NAME"])),
            "LIVE_REDIS_URL": django_settings.LIVE_REDIS_URL,
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--ws-max-size",
                "65536",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        wait_for(self._listening, timeout=30)

    def _listening(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, "uvicorn exited"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # as a crash would: no goodbye to the sockets
            self.process.wait(timeout=10)
        self.process = None
