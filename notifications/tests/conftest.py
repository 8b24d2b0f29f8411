"""A real HTTP receiver on 127.0.0.1 (any free port) that webhooks are delivered to."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


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
    """Answers each POST with the next queued status (200 once the queue is empty)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._answers: list[tuple[int, dict[str, str]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    code, headers = receiver._answers.pop(0) if receiver._answers else (200, {})
                self.send_response(code)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks"

    def answer(self, *codes: int, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._answers.extend((code, headers or {}) for code in codes)

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
