"""The notification list with its unread badge, and the wallet's ledger proof page."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from escrow import services as escrow
from ledger.models import Transfer
from ledger.services import checkpoint_create
from marketplace.tests.factories import make_trade
from notifications.models import Notification
from notifications.selectors import (
    UNREAD_BADGE_CAP,
    notification_unread_count,
    notification_unread_counts,
)

pytestmark = pytest.mark.django_db


def test_unread_badge_and_list(client, alice, bob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        trade = make_trade(alice, bob)
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    client.force_login(alice)
    unread = Notification.objects.filter(user=alice, read_at__isnull=True).count()
    assert unread >= 1
    page = client.get("/notifications/").content.decode()
    assert f"{unread} unread" in page
    first = Notification.objects.filter(user=alice).first()
    opened = client.post(f"/notifications/{first.pk}/read/")
    assert opened.status_code == 302
    assert opened["Location"] == f"/trades/{trade.pk}/"
    first.refresh_from_db()
    assert first.read_at is not None


def test_the_badge_counts_up_to_99_then_says_99_plus(client, alice, bob, carol):
    # given bob has 3 unread notifications and alice 150 (a bot that never reads them)
    Notification.objects.bulk_create(
        [Notification(user=bob, kind="paid", text=f"n{i}") for i in range(3)]
        + [Notification(user=alice, kind="paid", text=f"n{i}") for i in range(150)]
    )
    # then bob's header counts them exactly, alice's says "99+"
    client.force_login(bob)
    assert ">3</span>" in client.get("/notifications/").content.decode()
    client.force_login(alice)
    page = client.get("/notifications/").content.decode()
    assert 'aria-label="More than 99 unread">99+</span>' in page
    # and the live events' counts stop after 100 rows, for everyone in one query
    with CaptureQueriesContext(connection) as queries:
        counts = notification_unread_counts(
            user_ids=[alice.pk, bob.pk, carol.pk], cap=UNREAD_BADGE_CAP
        )
    assert counts == {alice.pk: 100, bob.pk: 3, carol.pk: 0}
    assert len(queries) == 1
    # while the API's count stays exact
    assert notification_unread_count(user=alice) == 150


def test_wallet_proof_page(client, alice, bob, carol):
    make_trade(alice, bob)
    checkpoint_create()
    mine = Transfer.objects.filter(credit_account__user=alice).exclude(seq=None).first()
    client.force_login(alice)
    assert "verify" in client.get("/wallet/").content.decode()
    page = client.get(f"/wallet/proof/{mine.seq}/").content.decode()
    assert "Verified." in page
    client.force_login(carol)
    assert client.get(f"/wallet/proof/{mine.seq}/").status_code == 404
