"""The notification list with its unread badge, and the wallet's ledger proof page."""

from __future__ import annotations

import pytest

from escrow import services as escrow
from ledger.models import Transfer
from ledger.services import checkpoint_create
from marketplace.tests.factories import make_trade
from notifications.models import Notification

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
