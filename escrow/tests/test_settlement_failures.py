"""A settlement that cannot settle is never silent: a refused posting is counted, after
SETTLEMENT_MAX_ATTEMPTS it is `failed` (out of every queue), the parties and the moderators are
told once, the trade room and the admin show it, and a moderator's retry settles it once. A
transient database error is retried, never counted."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.core import mail
from django.core.management import call_command
from django.db import OperationalError
from django.test import Client
from django.utils import timezone

from accounts.tests.factories import UserFactory
from common.errors import InvalidTransition, PermissionDenied
from conftest import require_postgres
from escrow import selectors, services, tasks
from escrow.models import Settlement, Trade
from escrow.services import settlement as settlement_service
from escrow.services import transitions
from ledger import services as ledger
from ledger.models import Transfer
from marketplace.tests.factories import make_trade
from notifications.models import Notification

S = Trade.State
pytestmark = pytest.mark.django_db
DELAYED = "Settlement delayed: staff have been notified and will retry it."
CHANGELIST = "/admin/escrow/settlement/"


@pytest.fixture(autouse=True)
def queued(monkeypatch) -> list[int]:
    """The settlements sent to the broker; the test settles them itself."""
    require_postgres()
    sent: list[int] = []
    monkeypatch.setattr(transitions, "_enqueue", sent.append)
    return sent


@pytest.fixture
def moderator():
    user = UserFactory(username="mod", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="decide_trade"))
    return UserFactory._meta.model.objects.get(pk=user.pk)  # a fresh permission cache


@pytest.fixture
def clerk():
    """Staff, but not a moderator: neither told nor allowed to retry."""
    return UserFactory(username="clerk", is_staff=True)


def _released(seller, buyer) -> Trade:
    trade = make_trade(seller, buyer, amount="0.01")
    services.trade_mark_paid(trade_id=trade.pk, actor=buyer)
    return services.escrow_release(trade_id=trade.pk, actor=seller)


def _refuse_posting(trade: Trade) -> Decimal:
    """Behind the state machine's back, the trade's fee grows past what its escrow holds: the
    ledger refuses to pay it out (the batch's overdraft check, then InsufficientFunds one by
    one). Returns the fee as it was, to put it back."""
    fee = Trade.objects.values_list("seller_fee", flat=True).get(pk=trade.pk)
    Trade.objects.filter(pk=trade.pk).update(seller_fee=Decimal("0.5"))
    return fee


def _settle(settlement: Settlement, capture) -> int:
    """What the `settle` task does for the settlement's message, its on-commit hooks run."""
    with capture(execute=True):
        return tasks.settle(settlement.pk)


def _fail(settlement: Settlement, capture, times: int) -> None:
    for _ in range(times):
        assert _settle(settlement, capture) == 0


def _room(user, trade: Trade) -> str:
    client = Client()
    client.force_login(user)
    return client.get(f"/trades/{trade.pk}/").content.decode()


def _poll_version(user, trade: Trade) -> str:
    """The version the trade room's 3-second poll sends (unchanged: 204, nothing swapped)."""
    client = Client()
    client.force_login(user)
    html = client.get(f"/trades/{trade.pk}/status/").content.decode()
    version = html.split("?v=", 1)[1].split('"', 1)[0].replace("%3A", ":")
    assert client.get(f"/trades/{trade.pk}/status/", {"v": version}).status_code == 204
    return version


def _settlement_notes() -> dict[str, int]:
    notes = Notification.objects.filter(kind=Notification.Kind.SETTLEMENT)
    return {u: notes.filter(user__username=u).count() for u in ("alice", "bob", "mod", "clerk")}


def test_the_default_is_five_attempts():
    from django.conf import settings

    assert settings.SETTLEMENT_MAX_ATTEMPTS == 5


def test_a_refused_posting_fails_after_max_attempts_and_everyone_is_told_once(
    alice, bob, moderator, clerk, django_capture_on_commit_callbacks, settings, outbound_inline
):
    # given a released trade whose posting the ledger refuses
    trade = _released(alice, bob)
    _refuse_posting(trade)
    settlement = Settlement.objects.get(trade=trade)
    n = settings.SETTLEMENT_MAX_ATTEMPTS

    # when it is tried one time less than the limit
    _fail(settlement, django_capture_on_commit_callbacks, n - 1)

    # then each attempt was counted with its error, it is still pending, and nobody was told
    settlement.refresh_from_db()
    assert (settlement.status, settlement.attempts) == (Settlement.Status.PENDING, n - 1)
    assert settlement.last_error.startswith("InsufficientFunds: Insufficient BTC balance")
    assert settlement.last_attempt_at is not None
    assert _settlement_notes() == {"alice": 0, "bob": 0, "mod": 0, "clerk": 0}
    assert DELAYED not in _room(bob, trade)
    version = _poll_version(bob, trade)

    # when the last attempt fails too, and the task, the batches and the sweeper come again
    _fail(settlement, django_capture_on_commit_callbacks, 3)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.settlements_execute_pending(batch_size=10) == 0
    Settlement.objects.filter(pk=settlement.pk).update(
        queued_at=timezone.now() - 2 * settings.SETTLEMENT_REQUEUE_AFTER,
        last_attempt_at=timezone.now() - 2 * settings.SETTLEMENT_REQUEUE_AFTER,
    )
    assert services.settlements_requeue_stale() == 0
    assert services.settlements_execute_pending(batch_size=10) == 0

    # then it is failed after exactly n attempts, and no one tries it again
    settlement.refresh_from_db()
    assert (settlement.status, settlement.attempts) == (Settlement.Status.FAILED, n)
    assert Trade.objects.get(pk=trade.pk).state == S.RELEASING
    assert not Transfer.objects.filter(reference=trade.pk).exclude(
        kind="escrow_hold", flags="pending"
    )
    assert selectors.settlement_failed_count() == 1
    # and both parties and the moderator were told once (in-app and by email), the clerk not
    assert _settlement_notes() == {"alice": 1, "bob": 1, "mod": 1, "clerk": 0}
    assert sorted(m.to[0] for m in mail.outbox) == [
        "alice@example.test",
        "bob@example.test",
        "mod@example.test",
    ]
    staff_note = Notification.objects.get(user__username="mod", kind="settlement").text
    assert f"trade #{trade.pk} (release) failed {n} times: InsufficientFunds" in staff_note
    # and the trade room says so to both parties, on the next poll too
    for user in (alice, bob):
        assert DELAYED in _room(user, trade)
    client = Client()
    client.force_login(bob)
    poll = client.get(f"/trades/{trade.pk}/status/", {"v": version})
    assert poll.status_code == 200
    assert DELAYED in poll.content.decode()


def test_a_batch_does_not_spend_the_attempts_of_one_that_just_failed(
    alice, bob, django_capture_on_commit_callbacks, settings
):
    # given a settlement whose posting was refused a moment ago
    trade = _released(alice, bob)
    _refuse_posting(trade)
    settlement = Settlement.objects.get(trade=trade)
    _fail(settlement, django_capture_on_commit_callbacks, 1)

    # when batches come along right away, then a sweep later
    assert services.settlements_execute_pending(batch_size=10) == 0
    assert Settlement.objects.get(pk=settlement.pk).attempts == 1
    Settlement.objects.filter(pk=settlement.pk).update(
        last_attempt_at=timezone.now() - settings.SETTLEMENT_REQUEUE_AFTER
    )
    assert services.settlements_execute_pending(batch_size=10) == 0

    # then only the one a sweep apart was an attempt
    assert Settlement.objects.get(pk=settlement.pk).attempts == 2


def test_a_moderator_retries_from_the_admin_and_it_settles_once(
    alice, bob, moderator, clerk, queued, django_capture_on_commit_callbacks, settings
):
    # given a settlement that failed
    trade = _released(alice, bob)
    fee = _refuse_posting(trade)
    settlement = Settlement.objects.get(trade=trade)
    _fail(settlement, django_capture_on_commit_callbacks, settings.SETTLEMENT_MAX_ATTEMPTS)
    client = Client()
    client.force_login(moderator)

    # then the admin index counts it and the moderators' queue lists it with its error
    index = client.get("/admin/").content.decode()
    assert "1 failed settlement" in index
    assert f"{CHANGELIST}?status__exact=failed" in index
    page = client.get(CHANGELIST, {"status__exact": "failed"})
    assert page.status_code == 200
    html = page.content.decode()
    assert f"#{trade.pk}</a>" in html
    assert "InsufficientFunds: Insufficient BTC balance" in html
    assert f'<td class="field-attempts">{settings.SETTLEMENT_MAX_ATTEMPTS}</td>' in html
    assert "Retry the selected failed settlements" in html

    # when the cause is removed and the moderator retries it through the admin action
    Trade.objects.filter(pk=trade.pk).update(seller_fee=fee)
    queued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(CHANGELIST, {"action": "retry", "_selected_action": [settlement.pk]})
    assert response.status_code == 302

    # then it is pending again with its attempts reset, queued, and the retry is on record
    settlement.refresh_from_db()
    assert (settlement.status, settlement.attempts) == (Settlement.Status.PENDING, 0)
    assert queued == [settlement.pk]
    entry = LogEntry.objects.get(object_id=str(settlement.pk), user=moderator)
    assert "Retried after 5 failed attempts: InsufficientFunds" in entry.get_change_message()
    assert DELAYED not in _room(bob, trade)

    # when its message is delivered, and delivered again (at least once)
    assert _settle(settlement, django_capture_on_commit_callbacks) == 1
    assert _settle(settlement, django_capture_on_commit_callbacks) == 0

    # then the trade is completed and every transfer was posted once
    assert Trade.objects.get(pk=trade.pk).state == S.COMPLETED
    settlement.refresh_from_db()
    assert (settlement.status, settlement.attempts) == (Settlement.Status.DONE, 1)
    rows = sorted(Transfer.objects.filter(reference=trade.pk).values_list("kind", "flags"))
    assert rows == [
        ("escrow_hold", "pending"),
        ("escrow_hold", "post_pending"),
        ("trade_fee", "single"),
        ("trade_payout", "single"),
    ]
    keys = Transfer.objects.filter(reference=trade.pk).values_list("idempotency_key", flat=True)
    assert sorted(keys) == [f"trade:{trade.pk}:{k}" for k in ("fee", "hold", "payout", "post")]
    # and nobody was told of the failure twice; the index has nothing to count
    assert _settlement_notes() == {"alice": 1, "bob": 1, "mod": 1, "clerk": 0}
    assert "failed settlement" not in client.get("/admin/").content.decode()
    # and the ledger verifies
    ledger.ledger_seal_pending()
    call_command("verify_ledger", "--no-progress")


def test_only_a_moderator_retries_and_only_a_failed_settlement(
    alice, bob, moderator, clerk, queued, django_capture_on_commit_callbacks, settings
):
    # given a failed settlement and a pending one
    failed = Settlement.objects.get(trade=_released(alice, bob))
    Trade.objects.filter(pk=failed.trade_id).update(seller_fee=Decimal("0.5"))
    _fail(failed, django_capture_on_commit_callbacks, settings.SETTLEMENT_MAX_ATTEMPTS)
    pending = Settlement.objects.get(trade=_released(alice, bob))
    queued.clear()

    # then staff without the moderators' permission cannot retry (service or admin)
    with pytest.raises(PermissionDenied):
        services.settlement_retry(settlement_id=failed.pk, actor=clerk)
    client = Client()
    client.force_login(clerk)
    client.post(CHANGELIST, {"action": "retry", "_selected_action": [failed.pk]})
    assert Settlement.objects.get(pk=failed.pk).status == Settlement.Status.FAILED
    # and a settlement that has not failed is not retried
    with pytest.raises(InvalidTransition):
        services.settlement_retry(settlement_id=pending.pk, actor=moderator)
    assert queued == []


def test_a_transient_database_error_is_retried_not_counted(
    alice, bob, monkeypatch, django_capture_on_commit_callbacks
):
    # given a released trade the batch cannot take (it goes one by one), and a database that
    # drops the first payout's statement (a lock timeout, a lost connection)
    trade = _released(alice, bob)
    fee = _refuse_posting(trade)
    settlement = Settlement.objects.get(trade=trade)
    post = ledger.transfer_post
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs["idempotency_key"])
        if len(calls) == 1:
            raise OperationalError("canceling statement due to lock timeout")
        return post(**kwargs)

    monkeypatch.setattr(ledger, "transfer_post", flaky)

    # when the service meets it
    with pytest.raises(OperationalError):
        services.settlement_execute(settlement_id=settlement.pk)

    # then it was not counted: the whole claim rolled back, for the task to retry
    settlement.refresh_from_db()
    assert (settlement.status, settlement.attempts, settlement.last_error) == (
        Settlement.Status.PENDING,
        0,
        "",
    )
    assert settlement.last_attempt_at is None
    assert not Transfer.objects.filter(reference=trade.pk).exclude(flags="pending").exists()
    assert {OperationalError} <= set(tasks.settle.autoretry_for)

    # when the task meets one in the batch (the cause fixed meanwhile): Celery retries it
    Trade.objects.filter(pk=trade.pk).update(seller_fee=fee)
    post_batch = settlement_service.ledger_transfers_post_select
    batches = []

    def flaky_batch(*args, **kwargs):
        batches.append(1)
        if len(batches) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return post_batch(*args, **kwargs)

    monkeypatch.setattr(settlement_service, "ledger_transfers_post_select", flaky_batch)
    with django_capture_on_commit_callbacks(execute=True):
        # (apply runs the retry in-process; throw=False lets it, as a worker would)
        result = tasks.settle.apply(args=(settlement.pk,), throw=False)

    # then the retry settled it, once, as its first counted attempt
    assert result.get() == 1
    assert len(batches) == 2
    settlement.refresh_from_db()
    assert (settlement.status, settlement.attempts) == (Settlement.Status.DONE, 1)
    assert Transfer.objects.filter(reference=trade.pk, kind="trade_payout").count() == 1
