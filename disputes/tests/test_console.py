"""The moderator console in the admin, and who may see what (evidence, chat files, decisions)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from accounts.tests.factories import UserFactory
from disputes import services
from disputes.models import Dispute, Evidence, ModeratorAction
from disputes.tests.test_services import PNG, moderator
from escrow import services as escrow
from escrow import services as escrow_services
from escrow.models import Trade
from marketplace.tests.factories import make_trade

pytestmark = pytest.mark.django_db


@pytest.fixture
def case(alice, bob):
    trade = make_trade(alice, bob, amount="0.01")
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    Trade.objects.filter(pk=trade.pk).update(paid_at=timezone.now() - timedelta(minutes=11))
    dispute = services.dispute_open(
        trade_id=trade.pk,
        actor=bob,
        category="paid_not_released",
        text="Paid, ref 1234, no release.",
    )
    evidence = services.evidence_submit(
        dispute_id=dispute.pk,
        actor=bob,
        statement="Receipt",
        file=SimpleUploadedFile("r.png", PNG, content_type="image/png"),
    )
    message = escrow_services.trade_message_send(
        trade_id=trade.pk,
        actor=bob,
        attachment=SimpleUploadedFile("p.png", PNG, content_type="image/png"),
    )
    return dispute, evidence, message


def _client(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def test_permission_matrix(case, alice, bob, carol):
    dispute, evidence, message = case
    mod = moderator()
    clerk = UserFactory(username="clerk", is_staff=True)  # staff, but not a moderator
    evidence_url = f"/disputes/evidence/{evidence.pk}/"
    chat_url = f"/trades/{dispute.trade_id}/chat/{message.pk}/attachment/"
    decide_url = f"/admin/disputes/dispute/{dispute.pk}/decide/"
    decision = {"outcome": "refund", "reason": "Nothing arrived at all.", "confirm": "on"}
    expected = {
        # who: (evidence file, chat file, admin dispute page, decision takes effect)
        "buyer": (bob, 200, 200, 302, False),
        "seller": (alice, 200, 200, 302, False),
        "other user": (carol, 404, 404, 302, False),
        "staff without the permission": (clerk, 404, 404, 403, False),
        "anonymous": (None, 302, 302, 302, False),
    }
    for who, (user, ev, chat, page, _) in expected.items():
        client = _client(user)
        assert client.get(evidence_url).status_code == ev, who
        assert client.get(chat_url).status_code == chat, who
        assert client.get(f"/admin/disputes/dispute/{dispute.pk}/change/").status_code == page, who
        client.post(decide_url, decision)
        assert Dispute.objects.get(pk=dispute.pk).status != Dispute.Status.DECIDED, who
    # the moderator reads the chat once assigned to the dispute, sees everything and decides
    client = _client(mod)
    assert client.get(evidence_url).status_code == 200
    assert client.get(chat_url).status_code == 404
    services.dispute_assign(dispute_id=dispute.pk, actor=mod)
    assert client.get(chat_url).status_code == 200
    page = client.get(f"/admin/disputes/dispute/{dispute.pk}/change/")
    assert page.status_code == 200
    body = page.content.decode()
    for piece in (
        "Timeline",
        "Chat",
        "Evidence",
        "Buyer: bob",
        "Seller: alice",
        "Record the decision",
        "Receipt",
    ):
        assert piece in body, piece
    response = client.post(decide_url, decision)
    assert response.status_code == 302
    dispute.refresh_from_db()
    assert dispute.status == Dispute.Status.DECIDED
    assert dispute.decided_by == mod
    assert ModeratorAction.objects.filter(actor=mod, action="decide_refund").exists()


def test_moderator_queue_filters(case):
    dispute, _, _ = case
    mod = moderator()
    client = _client(mod)
    queue = client.get("/admin/disputes/dispute/")
    assert queue.status_code == 200
    assert f"#{dispute.trade_id}" in queue.content.decode()
    assert (
        client.get("/admin/disputes/dispute/?assigned=me").content.decode().count("PAST SLA") == 0
    )
    client.post(f"/admin/disputes/dispute/{dispute.pk}/assign/")
    assert Dispute.objects.get(pk=dispute.pk).assigned_to == mod
    mine = client.get("/admin/disputes/dispute/?assigned=me").content.decode()
    assert f"#{dispute.trade_id}" in mine
    Dispute.objects.filter(pk=dispute.pk).update(created_at=timezone.now() - timedelta(days=2))
    late = client.get("/admin/disputes/dispute/?sla=past").content.decode()
    assert "PAST SLA" in late


def test_nobody_edits_or_deletes_ledger_transfers_in_the_admin(case, admin_client):
    from ledger.models import Transfer

    transfer = Transfer.objects.first()
    assert (
        admin_client.get(f"/admin/ledger/transfer/{transfer.pk}/change/").status_code == 200
    )  # view only
    admin_client.post(f"/admin/ledger/transfer/{transfer.pk}/change/", {"amount": "999"})
    assert (
        admin_client.post(
            f"/admin/ledger/transfer/{transfer.pk}/delete/", {"post": "yes"}
        ).status_code
        == 403
    )
    transfer.refresh_from_db()
    assert str(transfer.amount) != "999"
    assert Transfer.objects.filter(pk=transfer.pk).exists()


def test_evidence_stays_private(case, settings):
    _, evidence, _ = case
    with pytest.raises(ValueError, match="not accessible via a URL"):
        evidence.file.url  # noqa: B018 - the property itself must refuse
    assert not str(settings.PRIVATE_MEDIA_ROOT).startswith(str(settings.STATIC_ROOT))
    assert Evidence.objects.get(pk=evidence.pk).file.name.startswith("evidence/")
