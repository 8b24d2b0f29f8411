"""A real HTTP receiver on 127.0.0.1 (any free port) that webhooks are delivered to, a stub DNS
(no notifications test ever asks a real resolver), and broker queues no worker reads."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from common import outbox
from conftest import broker_messages
from notifications import egress

# Public addresses that tests only ever resolve, never connect to (documentation-style names).
PUBLIC_NAMES = {
    "bot.example.com": ["93.184.216.34"],
    "x.example": ["93.184.216.35"],
}


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The names egress.resolve knows in a test; add entries to point a name elsewhere. A name
    not listed does not resolve (socket.gaierror), as a real resolver would say."""
    table = {name: list(addresses) for name, addresses in PUBLIC_NAMES.items()}

    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(table[host])

    monkeypatch.setattr(egress, "resolve", resolve)
    return table


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def signature_ok(self, secret: str) -> bool:
        """What a receiver does: recompute HMAC-SHA256(secret, "<timestamp>.<raw body>")."""
        signed = self.headers["x-timestamp"].encode() + b"." + self.body
        expected = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.headers["x-signature"])


class Receiver:
    """Answers each POST with the next queued status and body (200 "ok" once the queue is
    empty)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._answers: list[tuple[int, dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    code, headers, answer = (
                        receiver._answers.pop(0) if receiver._answers else (200, {}, b"ok")
                    )
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks"

    def answer(
        self, *codes: int, headers: dict[str, str] | None = None, body: bytes = b"ok"
    ) -> None:
        with self._lock:
            self._answers.extend((code, headers or {}, body) for code in codes)

    def events(self) -> list[str]:
        with self._lock:
            return [r.headers["x-event"] for r in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def task_queue(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Any], Any]]:
    """`task_queue(task)`: that task's messages go to a queue of the test Redis that no worker
    reads; returns a function giving the id lists of the messages published there since (what
    this process's outbox publisher holds is sent first), each taken off the queue."""
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs Redis: run through `make test` (it starts one)")
    routed: list[Callable[[], list[list[int]]]] = []

    def route(task: Any) -> Callable[[], list[list[int]]]:
        name = f"{task.name}-test-{os.getpid()}"
        monkeypatch.setattr(task, "queue", name, raising=False)
        monkeypatch.setattr(task, "_exec_options", None)  # Celery caches the options

        def published() -> list[list[int]]:
            assert outbox.publish_pending()
            got = broker_messages(name)
            assert {sent for sent, _, _ in got} <= {task.name}
            return [args[0] for _, args, _ in got]

        published()
        routed.append(published)
        return published

    yield route
    for published in routed:
        published()
