"""The moderators' admin index: the counts of every queue (open disputes, disputes past their SLA,
pending KYC reviews, failed settlements, queued withdrawals), each from its app's selector, each
linking to its filtered list, and none shown to staff without the permission to see that queue.
Also: evidence images as thumbnails in the trade room, PDFs as links, both only through the
permission-checked view."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from accounts.services import kyc_document_submit
from accounts.tests.factories import PDF, UserFactory, upload
from disputes import services as disputes
from disputes.apps import ensure_moderators_group
from disputes.models import Dispute
from escrow import services as escrow
from escrow.models import Settlement, Trade
from ledger.models import Asset, Withdrawal
from marketplace.tests.factories import make_trade
from tests.browser.helpers import PNG

pytestmark = pytest.mark.django_db


def _moderator(username: str = "mod"):
    ensure_moderators_group()
    user = UserFactory(username=username, is_staff=True)
    user.groups.add(Group.objects.get(name="Moderators"))
    return type(user).objects.get(pk=user.pk)


def _disputed(seller, buyer, *, hours_ago: int = 0) -> Dispute:
    trade = make_trade(seller, buyer)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=buyer)
    Trade.objects.filter(pk=trade.pk).update(paid_at=timezone.now() - timedelta(minutes=11))
    dispute = disputes.dispute_open(
        trade_id=trade.pk, actor=buyer, category="paid_not_released", text="I paid, ref 1234."
    )
    if hours_ago:
        Dispute.objects.filter(pk=dispute.pk).update(
            created_at=timezone.now() - timedelta(hours=hours_ago)
        )
    return dispute


def _count(html: str, key: str) -> str:
    match = re.search(rf'data-count="{key}">.*?<td class="count">(.*?)</td>', html, re.S)
    assert match, f"no {key} row"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def test_the_index_counts_every_queue(alice, bob, carol):
    # given two open disputes (one past the SLA), a decided one whose settlement failed, two
    # pending KYC documents, and a withdrawal in every status
    mod = _moderator()
    _disputed(alice, bob)
    _disputed(alice, bob, hours_ago=30)
    decided = _disputed(alice, carol)
    disputes.dispute_assign(dispute_id=decided.pk, actor=mod)
    disputes.dispute_decide(
        dispute_id=decided.pk, actor=mod, outcome="refund", reason="No payment was shown."
    )
    Settlement.objects.filter(trade_id=decided.trade_id).update(status=Settlement.Status.FAILED)
    for user in (bob, carol):
        kyc_document_submit(user=user, kind="passport", file=upload(), requested_tier=1)
    btc = Asset.objects.get(code="BTC")
    for status in Withdrawal.Status.values:
        Withdrawal.objects.create(
            user=alice, asset=btc, amount=Decimal("0.1"), address="bc1qexample", status=status
        )

    # when a moderator (a KYC reviewer too) opens the admin index
    client = Client()
    mod.user_permissions.add(*mod.user_permissions.model.objects.filter(codename="review_kyc"))
    client.force_login(mod)
    html = client.get("/admin/").content.decode()

    # then every queue is counted and links to its list
    assert _count(html, "open-disputes") == "2"
    assert _count(html, "past-sla") == "1"
    assert _count(html, "pending-kyc") == "2"
    assert _count(html, "failed-settlements") == "1"
    assert _count(html, "queued-withdrawals") == "3"  # requested, submitted, held
    for link in (
        "/admin/disputes/dispute/?sla=past",
        "/admin/accounts/kycdocument/?status__exact=pending",
        "/admin/ledger/withdrawal/?status__in=requested,submitted,held",
    ):
        assert link in html
    # and each link lists what it counted
    listed = client.get("/admin/disputes/dispute/?sla=past").content.decode()
    assert "1 dispute" in listed
    withdrawals = client.get("/admin/ledger/withdrawal/?status__in=requested,submitted,held")
    assert withdrawals.status_code == 200
    assert "3 withdrawals" in withdrawals.content.decode()


def test_staff_without_the_permissions_see_no_counts(alice, bob):
    _disputed(alice, bob)
    clerk = UserFactory(username="clerk", is_staff=True)
    client = Client()
    client.force_login(clerk)
    html = client.get("/admin/").content.decode()
    assert 'id="moderator-queues"' not in html
    assert "Open disputes" not in html


def test_evidence_images_are_thumbnails_and_pdfs_links(alice, bob, carol):
    dispute = _disputed(alice, bob)
    image = disputes.evidence_submit(
        dispute_id=dispute.pk,
        actor=bob,
        file=SimpleUploadedFile("receipt.png", PNG, content_type="application/octet-stream"),
    )
    pdf = disputes.evidence_submit(dispute_id=dispute.pk, actor=bob, file=upload(PDF, "bank.pdf"))
    client = Client()
    client.force_login(alice)
    html = client.get(f"/trades/{dispute.trade_id}/").content.decode()

    # the image: a thumbnail whose source and click-through are the checked view
    url = f"/disputes/evidence/{image.pk}/"
    assert re.search(
        rf'<a class="thumb-link" href="{url}"[^>]*><img class="thumb" src="{url}"', html
    )
    # the PDF: a plain link, never an <img>
    pdf_url = f"/disputes/evidence/{pdf.pk}/"
    assert f'href="{pdf_url}"' in html
    assert f'src="{pdf_url}"' not in html
    # the thumbnail's source is the private file for a party, and nothing for anyone else
    assert client.get(url)["Content-Type"] == "image/png"
    outsider = Client()
    outsider.force_login(carol)
    assert outsider.get(url).status_code == 404
