"""Four eyes: a decision on a trade worth more than DISPUTE_FOUR_EYES_EUR settles only once a
second, impartial moderator approves it; the proposer cannot approve their own proposal."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from common.errors import PermissionDenied
from disputes import services
from disputes.models import Dispute, ModeratorAction
from disputes.tests.test_services import moderator, settle
from escrow.models import Trade
from marketplace.tests.factories import make_trade

pytestmark = pytest.mark.django_db


@pytest.fixture
def large_dispute(alice, bob, settings):
    # given a 0.02 BTC trade (1,600 EUR at the test price) above a 1,000 EUR four-eyes line
    settings.DISPUTE_FOUR_EYES_EUR = Decimal(1000)
    trade = make_trade(alice, bob, amount="0.02")
    dispute = services.dispute_open(
        trade_id=trade.pk, actor=bob, category="other", text="Paid by SEPA, nothing moves."
    )
    return trade, dispute


def test_a_large_decision_waits_for_a_second_moderator(large_dispute):
    trade, dispute = large_dispute
    first, second = moderator("first"), moderator("second")
    # when the first moderator decides
    services.dispute_decide(
        dispute_id=dispute.pk, actor=first, outcome="refund", reason="No payment ever arrived."
    )
    # then it is only proposed: nothing settles, and the proposer can't approve it
    dispute.refresh_from_db()
    trade.refresh_from_db()
    assert dispute.status == Dispute.Status.AWAITING_APPROVAL
    assert trade.state == Trade.State.DISPUTED
    with pytest.raises(PermissionDenied) as refused:
        services.dispute_approve(dispute_id=dispute.pk, actor=first)
    assert refused.value.code == "four_eyes"
    # when a second moderator approves
    services.dispute_approve(dispute_id=dispute.pk, actor=second)
    # then it settles as proposed, with both names on record
    dispute.refresh_from_db()
    assert (dispute.status, dispute.decided_by, dispute.approved_by) == (
        Dispute.Status.DECIDED,
        first,
        second,
    )
    assert settle(trade).state == Trade.State.REFUNDED
    assert ModeratorAction.objects.filter(actor=second, action="approve_refund").exists()


def test_a_proposal_sent_back_goes_back_to_review(large_dispute):
    trade, dispute = large_dispute
    first, second = moderator("first"), moderator("second")
    services.dispute_decide(
        dispute_id=dispute.pk, actor=first, outcome="release", reason="Receipt looks genuine."
    )
    services.dispute_send_back(dispute_id=dispute.pk, actor=second, reason="Check the bank ref.")
    dispute.refresh_from_db()
    assert dispute.status == Dispute.Status.IN_REVIEW
    assert dispute.outcome == ""
    trade.refresh_from_db()
    assert trade.state == Trade.State.DISPUTED


def test_a_small_decision_settles_at_once(alice, bob, settings):
    settings.DISPUTE_FOUR_EYES_EUR = Decimal(1000)
    trade = make_trade(alice, bob, amount="0.01")  # 800 EUR
    dispute = services.dispute_open(
        trade_id=trade.pk, actor=bob, category="other", text="Paid by SEPA, nothing moves."
    )
    services.dispute_decide(
        dispute_id=dispute.pk, actor=moderator(), outcome="release", reason="Receipt checks out."
    )
    dispute.refresh_from_db()
    assert dispute.status == Dispute.Status.DECIDED


def test_the_console_offers_approval_to_the_other_moderator_only(client, large_dispute):
    _, dispute = large_dispute
    first, second = moderator("first"), moderator("second")
    services.dispute_decide(
        dispute_id=dispute.pk, actor=first, outcome="refund", reason="No payment ever arrived."
    )
    url = reverse("admin:disputes_dispute_change", args=[dispute.pk])
    client.force_login(first)
    assert "Approve and settle" not in client.get(url).content.decode()
    client.force_login(second)
    assert "Approve and settle" in client.get(url).content.decode()
    client.post(reverse("admin:disputes_dispute_approve", args=[dispute.pk]))
    dispute.refresh_from_db()
    assert dispute.status == Dispute.Status.DECIDED
