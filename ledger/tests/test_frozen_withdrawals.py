"""Security finding 7: a frozen account ("suspected fraud") cannot withdraw; what it queued
before the freeze is held for a moderator, who releases or rejects it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts import services as accounts
from common.errors import PermissionDenied
from ledger import services
from ledger.models import Withdrawal
from ledger.selectors import balance_available
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db


def _freeze(user) -> None:
    accounts.profile_freeze(user=user, actor=None, reason="suspected fraud")


def test_a_frozen_account_cannot_request_a_withdrawal(alice):
    # given a funded account that was frozen
    fund(alice, "BTC", "1")
    _freeze(alice)
    # when it asks to withdraw
    with pytest.raises(PermissionDenied) as refused:
        services.withdrawal_request(
            user=alice, asset_code="BTC", amount="0.5", address="bc1qfrozenaddress"
        )
    # then it is refused and nothing is held
    assert refused.value.code == "account_frozen"
    assert not Withdrawal.objects.exists()
    assert balance_available(user=alice, asset_code="BTC") == Decimal(1)


def test_a_queued_withdrawal_is_held_then_released_or_rejected(alice, bob):
    # given withdrawals queued before their accounts were frozen
    fund(alice, "BTC", "1")
    fund(bob, "BTC", "1")
    kept = services.withdrawal_request(
        user=alice, asset_code="BTC", amount="0.4", address="bc1qaliceaddress"
    )
    refused = services.withdrawal_request(
        user=bob, asset_code="BTC", amount="0.3", address="bc1qbobaddress"
    )
    _freeze(alice)
    _freeze(bob)
    # when the worker picks them up
    for w in (kept, refused):
        services.withdrawal_process(withdrawal_id=w.pk)
    # then neither is sent: both wait for a moderator, the amounts still held
    kept.refresh_from_db()
    refused.refresh_from_db()
    assert (kept.status, refused.status) == (Withdrawal.Status.HELD, Withdrawal.Status.HELD)
    assert "frozen" in kept.failure_reason
    assert balance_available(user=alice, asset_code="BTC") == Decimal("0.6")
    # when a moderator rejects bob's, and releases alice's once her account is cleared
    services.withdrawal_reject(withdrawal_id=refused.pk, reason="fraud confirmed", actor=None)
    accounts.profile_unfreeze(user=alice, actor=None)
    services.withdrawal_release_hold(withdrawal_id=kept.pk, actor=None)
    services.withdrawal_process(withdrawal_id=kept.pk)
    # then bob's amount is back and alice's goes on to the chain adapter
    refused.refresh_from_db()
    kept.refresh_from_db()
    assert refused.status == Withdrawal.Status.FAILED
    assert balance_available(user=bob, asset_code="BTC") == Decimal(1)
    assert kept.status in (Withdrawal.Status.SUBMITTED, Withdrawal.Status.COMPLETED)


def test_a_withdrawal_queued_before_a_password_change_is_held(alice):
    # given a withdrawal queued, then the password changed (the thief may have queued it)
    from accounts.services import credentials_after_password_change

    fund(alice, "BTC", "1")
    queued = services.withdrawal_request(
        user=alice, asset_code="BTC", amount="0.2", address="bc1qbeforechange"
    )
    credentials_after_password_change(user=alice, keep_session_key=None)
    # when the worker picks it up
    services.withdrawal_process(withdrawal_id=queued.pk)
    # then it waits for a moderator, the amount still held
    queued.refresh_from_db()
    assert queued.status == Withdrawal.Status.HELD
    assert "password changed" in queued.failure_reason
    assert balance_available(user=alice, asset_code="BTC") == Decimal("0.8")
