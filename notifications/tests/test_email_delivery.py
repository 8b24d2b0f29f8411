"""Email never slows a request: an SMTP server on 127.0.0.1 that accepts connections and never
writes its banner holds the worker's attempts, not the release request; once it answers (a real
SMTP server, aiosmtpd, on the same port) the worker's retries deliver every mail, once.

A real Celery worker process of this test's own, on its own queue, with the SMTP backend set to
the hanging server (EMAIL_TIMEOUT 1 s) and a short backoff; the test process keeps the locmem
backend, so any mail sent inline by the request would show in `mail.outbox`."""

from __future__ import annotations

import email
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from conftest import CeleryWorker, require_postgres, wait_for
from escrow import services as escrow
from marketplace.tests.factories import make_trade
from notifications.models import OutboundMessage
from notifications.tasks import send_outbound, send_outbound_many

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]

PASSWORD = "demo-pass-123"  # accounts.tests.factories.UserFactory's


class Recorder:
    """aiosmtpd's handler: keeps each message it accepts."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 Message accepted for delivery"


class HangingSmtp:
    """Accepts every connection on 127.0.0.1 and never answers (no 220 banner) until
    `release()`: then the held connections are dropped and a real SMTP server takes the port."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(32)
        self.port: int = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.accepted = 0
        self.released = threading.Event()
        self.recorder = Recorder()
        self.controller: Controller | None = None
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="hanging-smtp", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # released: the listener is shut
            with self._lock:
                self.held.append(conn)
                self.accepted += 1

    def release(self) -> None:
        self.released.set()
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        with self._lock:
            for conn in self.held:
                conn.close()
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
        elif not self.released.is_set():
            self.release()
            assert self.controller is not None
            self.controller.stop()


@pytest.fixture
def smtp() -> Iterator[HangingSmtp]:
    server = HangingSmtp()
    yield server
    server.stop()


@pytest.fixture
def mail_worker(transactional_db, smtp, monkeypatch) -> Iterator[CeleryWorker]:
    """A worker of this test's own that sends mail to the hanging server: the email task is
    routed to its queue, so the session's worker (locmem mail) never takes it."""
    if not os.environ.get("REDIS_URL"):
        pytest.skip("needs Redis: run through `make test` (it starts one)")
    require_postgres()
    queue = f"mail-{os.getpid()}"
    for task in (send_outbound, send_outbound_many):
        monkeypatch.setattr(task, "queue", queue, raising=False)
        monkeypatch.setattr(task, "_exec_options", None)  # Celery caches the options
    worker = CeleryWorker(
        connection.settings_dict["NAME"],
        queue=queue,
        extra_env={
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(smtp.port),
            "EMAIL_TIMEOUT": "1",
            "OUTBOUND_BACKOFF_BASE_SECONDS": "0.25",
            "OUTBOUND_BACKOFF_MAX_SECONDS": "2",
        },
    )
    worker.start()
    yield worker
    worker.stop()


def _row(subject: str) -> OutboundMessage:
    return OutboundMessage.objects.get(channel="email", subject=subject)


def test_a_hanging_smtp_server_slows_no_request_and_the_mail_is_retried(
    smtp, mail_worker, alice, bob, mailoutbox, trade_news_inline
):
    # (the moves' news rows are written here, by their task's own code, as each move commits:
    # this test's only worker is the mail queue's)
    # given a trade alice sells and bob marked paid: the worker is stuck on the SMTP banner
    trade = make_trade(alice, bob)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    wait_for(lambda: smtp.accepted >= 1)
    assert not smtp.released.is_set()

    # when alice releases it through the API
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=alice)[0].key}")
    released = api.post(
        f"/api/v1/trades/{trade.pk}/release/", {"password": PASSWORD}, format="json"
    )

    # then the request has returned while the SMTP server still hangs: it never waited on SMTP
    assert released.status_code == 200, released.json()
    assert released.json()["state"] in ("releasing", "completed")
    assert not smtp.released.is_set()
    assert mailoutbox == []  # nothing was sent from the request's own process
    subjects = {
        f"Trade #{trade.pk}: created": alice.email,
        f"Trade #{trade.pk}: paid": alice.email,
        f"Trade #{trade.pk}: releasing": bob.email,
    }
    assert {s: _row(s).address for s in subjects} == subjects

    # and the worker keeps trying: each attempt times out on the banner and is retried
    def retried() -> bool:
        row = _row(f"Trade #{trade.pk}: releasing")
        return row.attempts >= 2 and row.status == "pending"

    wait_for(retried, timeout=60)
    assert _row(f"Trade #{trade.pk}: releasing").last_error == "timeout"
    assert smtp.accepted >= 2

    # when the server answers at last
    smtp.release()

    # then every mail is delivered, once each, to the right person
    def all_sent() -> bool:
        return all(_row(s).status == "sent" for s in subjects)

    wait_for(all_sent, timeout=60)
    got = {}
    for rcpts, raw in smtp.recorder.messages:
        parsed = email.message_from_bytes(raw)
        if parsed["Subject"] in subjects:
            assert parsed["Subject"] not in got, f"{parsed['Subject']} was delivered twice"
            got[parsed["Subject"]] = (rcpts, parsed["Message-ID"], parsed.get_payload())
    assert {s: rcpts for s, (rcpts, _, _) in got.items()} == {s: [a] for s, a in subjects.items()}
    # rendered for its recipient, with the same Message-ID on every attempt
    rcpts, message_id, body = got[f"Trade #{trade.pk}: releasing"]
    assert body.startswith("Hello bob,")
    assert "released to bob; settling now." in body
    row = _row(f"Trade #{trade.pk}: releasing")
    assert message_id == f"<outbound.{row.pk}.{int(row.created_at.timestamp())}@localhost>"
    assert row.attempts >= 3
    assert row.sent_at is not None
    assert row.last_error == ""
