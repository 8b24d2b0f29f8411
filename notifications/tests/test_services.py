"""Webhook delivery against a real local HTTP server; notifications and email on trade events."""

from __future__ import annotations

import json
import logging
import socket
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from common.errors import ValidationFailed
from escrow import services as escrow
from escrow import services as escrow_services
from marketplace.tests.factories import fund, make_offer, make_trade
from notifications import listeners, services, tasks, webhooks
from notifications.models import Notification, WebhookDelivery

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("trade_news_inline")]

PENDING, DELIVERED, FAILED = (
    WebhookDelivery.Status.PENDING,
    WebhookDelivery.Status.DELIVERED,
    WebhookDelivery.Status.FAILED,
)


@pytest.fixture
def fast_backoff(settings):
    settings.WEBHOOK_BACKOFF_BASE_SECONDS = 1
    settings.WEBHOOK_BACKOFF_MAX_SECONDS = 3600
    settings.WEBHOOK_MAX_ATTEMPTS = 8
    return settings


def _delivery_for(user, url, *, events=None):
    """A trade event queued for `user`'s new endpoint at `url` (no worker: on-commit never runs
    inside a non-transactional test, so nothing is sent until we call webhook_deliver)."""
    endpoint, secret = services.webhook_create(user=user, url=url, events=events)
    trade = make_trade(user, _buyer())
    event = trade.events.get(new_state="funded")
    services.notify_trade_event(trade=trade, event=event)
    return WebhookDelivery.objects.get(endpoint=endpoint), secret, trade


def _buyer():
    from accounts.tests.factories import UserFactory

    return UserFactory(username="buyer-bot")


def _make_due(delivery: WebhookDelivery) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def test_delivery_is_signed_and_verifiable(alice, receiver, fast_backoff):
    # given a trade.created delivery to alice's endpoint
    delivery, secret, trade = _delivery_for(alice, receiver.url)
    # when it is delivered
    before = int(time.time())
    result = services.webhook_deliver(delivery_id=delivery.pk)
    # then the receiver got one POST whose signature it can recompute from the raw body
    assert result is not None
    assert result.status == DELIVERED
    (got,) = receiver.received
    assert got.path == "/hooks"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-event"] == "trade.created"
    assert got.headers["x-delivery-id"] == str(delivery.pk)
    assert before - 1 <= int(got.headers["x-timestamp"]) <= int(time.time()) + 1
    assert got.signature_ok(secret)
    # and a tampered body or another secret does not verify
    assert not got.__class__(
        got.path, got.headers, got.body.replace(b"0.01", b"9.99")
    ).signature_ok(secret)
    assert not got.signature_ok(secret + "x")
    assert got.headers["x-signature"] == services.webhook_signature(
        secret=secret, timestamp=got.headers["x-timestamp"], body=got.body
    )
    # and the body is the documented payload, amounts as strings at the asset's precision
    body = got.json
    assert body == {
        "event": "trade.created",
        "delivery_id": delivery.pk,
        "created_at": body["created_at"],
        "trade": {
            "id": trade.pk,
            "state": "funded",
            "asset": "BTC",
            "fiat": "EUR",
            "amount": "0.01000000",
            "fiat_amount": "800.00",
            "buyer": "buyer-bot",
            "seller": "alice",
        },
    }
    assert body["created_at"].endswith("Z")
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.attempts, stored.last_status_code, stored.last_error) == (1, 200, "")
    assert stored.delivered_at is not None
    assert stored.next_attempt_at is None


def test_500_then_200_is_retried_after_the_backoff(alice, receiver, fast_backoff):
    # given a receiver that fails once, then succeeds
    receiver.answer(500)
    delivery, secret, _ = _delivery_for(alice, receiver.url)
    # when the first attempt fails
    started = timezone.now()
    first = services.webhook_deliver(delivery_id=delivery.pk)
    # then it stays pending, due again 2 s (1 s * 2^1) later, with the error logged
    assert first is not None
    assert first.status == PENDING
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert stored.attempts == 1
    assert stored.last_status_code == 500
    assert stored.last_error == "http_status"
    assert (
        started + timedelta(seconds=2)
        <= stored.next_attempt_at
        <= timezone.now() + timedelta(seconds=2)
    )
    # and an early call (a duplicate task) sends nothing
    assert services.webhook_deliver(delivery_id=delivery.pk) is None
    assert len(receiver.received) == 1
    # when it is due and tried again
    _make_due(delivery)
    second = services.webhook_deliver(delivery_id=delivery.pk)
    # then it is delivered on the second attempt, same delivery id, both signed
    assert second is not None
    assert second.status == DELIVERED
    stored.refresh_from_db()
    assert (stored.attempts, stored.last_status_code, stored.last_error) == (2, 200, "")
    assert [r.headers["x-delivery-id"] for r in receiver.received] == [str(delivery.pk)] * 2
    assert all(r.signature_ok(secret) for r in receiver.received)
    # and a delivered row is never sent again
    _make_due(delivery)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=DELIVERED)
    assert services.webhook_deliver(delivery_id=delivery.pk) is None


def test_backoff_doubles_and_fails_after_max_attempts(alice, receiver, fast_backoff):
    # given a receiver that always answers 500
    receiver.answer(*[500] * 20)
    delivery, _, _ = _delivery_for(alice, receiver.url)
    delays = []
    # when every attempt is made as soon as it is due
    for attempt in range(1, 9):
        _make_due(delivery)
        services.webhook_deliver(delivery_id=delivery.pk)
        stored = WebhookDelivery.objects.get(pk=delivery.pk)
        assert stored.attempts == attempt
        if attempt < 8:
            assert stored.status == PENDING
            delays.append(round((stored.next_attempt_at - timezone.now()).total_seconds()))
    # then the waits doubled: 2, 4, ... 128 s, and the 8th failure is final
    assert delays == [2, 4, 8, 16, 32, 64, 128]
    assert stored.status == FAILED
    assert stored.next_attempt_at is None
    assert len(receiver.received) == 8
    _make_due(delivery)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=FAILED)
    assert services.webhook_deliver(delivery_id=delivery.pk) is None
    assert len(receiver.received) == 8


def test_backoff_is_capped(fast_backoff):
    assert [services.backoff_delay(n).total_seconds() for n in (1, 2, 3)] == [2, 4, 8]
    assert services.backoff_delay(11).total_seconds() == 2048
    assert services.backoff_delay(12).total_seconds() == 3600
    fast_backoff.WEBHOOK_BACKOFF_BASE_SECONDS = 60
    assert services.backoff_delay(3).total_seconds() == 480
    assert services.backoff_delay(8).total_seconds() == 3600


def test_unreachable_endpoint_and_redirects_count_as_failures(alice, bob, receiver, fast_backoff):
    # given an endpoint on a port nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    delivery, _, _ = _delivery_for(alice, f"http://127.0.0.1:{dead_port}/x")
    services.webhook_deliver(delivery_id=delivery.pk)
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.attempts, stored.last_status_code) == (PENDING, 1, None)
    assert stored.last_error == "connection_error"
    # and a redirect is not followed: the signed body goes to the registered URL only
    receiver.answer(302, headers={"Location": "http://127.0.0.1:1/elsewhere"})
    redirected, _, _ = _delivery_for(bob, receiver.url)
    services.webhook_deliver(delivery_id=redirected.pk)
    redirected.refresh_from_db()
    assert (redirected.status, redirected.last_status_code) == (PENDING, 302)
    assert redirected.last_error == "redirect"


def test_event_filter_and_inactive_endpoints(alice, bob, receiver):
    # given alice wants only trade.paid and bob's endpoint is disabled
    only_paid, _ = services.webhook_create(user=alice, url=receiver.url, events=["trade.paid"])
    disabled, _ = services.webhook_create(user=bob, url=receiver.url)
    disabled.is_active = False
    disabled.save()
    trade = make_trade(alice, bob)
    # when the trade is created, then paid
    services.notify_trade_event(trade=trade, event=trade.events.get(new_state="funded"))
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    services.notify_trade_event(trade=trade, event=trade.events.get(new_state="paid"))
    # then only alice's endpoint got one delivery, for trade.paid
    assert list(WebhookDelivery.objects.values_list("endpoint_id", "event")) == [
        (only_paid.pk, "trade.paid")
    ]


def test_sweeper_requeues_only_overdue_pending_deliveries(alice, receiver, monkeypatch):
    queued: list[int] = []
    monkeypatch.setattr(webhooks, "_enqueue", queued.append)
    delivery, _, _ = _delivery_for(alice, receiver.url)
    # a delivery just due belongs to its own queued task, not to the sweeper
    assert services.webhook_deliveries_requeue_due() == 0
    # an overdue one (its message was lost) is re-queued, once
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=5)
    )
    assert services.webhook_deliveries_requeue_due() == 1
    assert queued == [delivery.pk]
    assert services.webhook_deliveries_requeue_due() == 0
    # and the re-queued task can claim it at once
    assert services.webhook_deliver(delivery_id=delivery.pk).status == DELIVERED


def test_webhook_url_and_events_are_validated(alice):
    for bad in ("ftp://example.com/x", "javascript:alert(1)", "example.com/hook", "", "http://"):
        with pytest.raises(ValidationFailed) as err:
            services.webhook_create(user=alice, url=bad)
        assert set(err.value.fields) == {"url"}
    with pytest.raises(ValidationFailed) as err:
        services.webhook_create(user=alice, url="https://x.example/" + "a" * 490)
    assert set(err.value.fields) == {"url"}
    with pytest.raises(ValidationFailed) as err:
        services.webhook_create(user=alice, url="https://x.example/", events=["trade.nope"])
    assert set(err.value.fields) == {"events"}
    endpoint, secret = services.webhook_create(
        user=alice, url="https://x.example/h", events=["trade.paid", "trade.created", "trade.paid"]
    )
    assert endpoint.events == ["trade.created", "trade.paid"]
    assert secret.startswith("whsec_")
    assert len(secret) == 70
    assert endpoint.secret == secret


# --- in-app notifications and email -------------------------------------------------------------


def test_counterparty_notified_and_seller_emailed(
    alice, bob, django_capture_on_commit_callbacks, mailoutbox, outbound_inline
):
    # given alice's sell offer
    fund(alice, "BTC", "1")
    offer = make_offer(alice)
    # when bob takes it (the on-commit listeners run)
    with django_capture_on_commit_callbacks(execute=True):
        trade = escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
    # then alice, the maker, is told in-app and by email; bob, who acted, is not
    (created,) = Notification.objects.all()
    assert (created.user, created.kind, created.trade) == (alice, "created", trade)
    assert created.text == (
        f"bob opened trade #{trade.pk} on your offer #{offer.pk}: 0.01000000 BTC for 800.00 EUR."
    )
    assert [m.to for m in mailoutbox] == [["alice@example.test"]]
    # when bob marks it paid
    with django_capture_on_commit_callbacks(execute=True):
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    # then alice, the seller, gets the paid notification and an email asking her to check
    paid = Notification.objects.get(kind="paid")
    assert paid.user == alice
    assert not Notification.objects.filter(user=bob).exists()
    assert len(mailoutbox) == 2
    email = mailoutbox[1]
    assert email.to == ["alice@example.test"]
    assert email.subject == f"Trade #{trade.pk}: paid"
    assert "check that 800.00 EUR arrived" in email.body
    # when alice releases: bob is notified and emailed
    with django_capture_on_commit_callbacks(execute=True):
        escrow.escrow_release(trade_id=trade.pk, actor=alice)
    assert Notification.objects.get(user=bob).kind == "releasing"
    assert mailoutbox[-1].to == ["bob@example.test"]


def test_system_transitions_notify_both_parties(alice, bob, django_capture_on_commit_callbacks):
    # given a trade whose payment window ran out
    trade = make_trade(alice, bob)
    from escrow.models import Trade

    Trade.objects.filter(pk=trade.pk).update(payment_deadline=timezone.now())
    # when the system expires it
    with django_capture_on_commit_callbacks(execute=True):
        escrow.escrow_expire(trade_id=trade.pk)
    # then both are told (no one acted)
    assert sorted(Notification.objects.filter(kind="expired").values_list("user__username")) == [
        ("alice",),
        ("bob",),
    ]


def test_dispute_emails_both(
    alice, bob, django_capture_on_commit_callbacks, mailoutbox, outbound_inline
):
    trade = make_trade(alice, bob)
    with django_capture_on_commit_callbacks(execute=True):
        escrow.trade_dispute(trade_id=trade.pk, actor=bob, reason="paid but could not mark it")
    assert sorted(m.to[0] for m in mailoutbox) == ["alice@example.test", "bob@example.test"]
    (note,) = Notification.objects.filter(kind="disputed")
    assert note.user == alice
    assert note.text.startswith("bob opened a dispute")


def test_listener_never_raises_into_the_transition(alice, bob, monkeypatch, caplog):
    # a batch of moves whose task the broker refused writes its news inline: that failing is
    # logged, never raised into the moves that committed
    trades = [make_trade(alice, bob) for _ in range(2)]

    def broken(**kwargs):
        raise RuntimeError("mail server on fire")

    def refused(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(services, "trade_news_write", broken)
    monkeypatch.setattr(tasks.notify_trade_events, "apply_async", refused)
    with caplog.at_level(logging.ERROR, logger="notifications.listeners"):
        listeners.on_trade_transitions([t.events.get() for t in trades])
    assert f"notifications for trade #{trades[0].pk}" in caplog.text
    assert listeners.on_trade_transitions in escrow.transition_listeners


def test_mark_read_is_per_user_and_idempotent(alice, bob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        make_trade(alice, bob)
    note = Notification.objects.get(user=alice)
    first = services.notification_mark_read(notification_id=note.pk, user=alice)
    again = services.notification_mark_read(notification_id=note.pk, user=alice)
    assert first.read_at is not None
    assert again.read_at == first.read_at
    with pytest.raises(services.NotFound):
        services.notification_mark_read(notification_id=note.pk, user=bob)


def test_payload_is_json_serialisable_and_stable(alice, receiver, fast_backoff):
    delivery, _, _ = _delivery_for(alice, receiver.url)
    services.webhook_deliver(delivery_id=delivery.pk)
    (got,) = receiver.received
    assert (
        got.body
        == json.dumps(
            WebhookDelivery.objects.get(pk=delivery.pk).payload,
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
    )
