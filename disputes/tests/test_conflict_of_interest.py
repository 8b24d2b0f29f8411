"""Security finding 1: a moderator never judges their own trade. A moderator who took an offer
and disputed at once (the buyer may dispute from `funded`) can't be assigned, can't read the
file as moderator, can't write as moderator and can't decide it; the console doesn't list it.
Staff reads of a dispute's file are written to the append-only moderators' audit."""

from __future__ import annotations

import pytest
from django.urls import reverse

from common.errors import PermissionDenied
from disputes import services
from disputes.models import ModeratorAction
from disputes.tests.test_services import moderator
from escrow import services as escrow
from escrow.models import Trade
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db


@pytest.fixture
def moderators(refdata):
    def make(name: str):
        return moderator(name)

    return make


@pytest.fixture
def own_dispute(moderators, alice):
    # given a moderator who took alice's offer and disputed it at once, as the buyer may
    fund(alice, "BTC", "1")
    offer = make_offer(alice, amount="0.5", min_fiat="10")
    mod = moderators("mod")
    trade = escrow.trade_open(offer_id=offer.pk, taker=mod, fiat_amount="100")
    dispute = services.dispute_open(
        trade_id=trade.pk, actor=mod, category="other", text="I paid, honest, release it now."
    )
    return mod, trade, dispute


def test_a_moderator_cannot_decide_their_own_trade(own_dispute):
    mod, trade, dispute = own_dispute
    # when they decide it for themselves
    with pytest.raises(PermissionDenied) as refused:
        services.dispute_decide(
            dispute_id=dispute.pk, actor=mod, outcome="release", reason="Buyer showed payment."
        )
    # then it is refused as a conflict of interest, and nothing moved
    assert refused.value.code == "conflict_of_interest"
    trade.refresh_from_db()
    assert trade.state == Trade.State.DISPUTED


def test_a_moderator_cannot_take_message_or_ask_on_their_own_trade(own_dispute):
    mod, _, dispute = own_dispute
    for attempt in (
        lambda: services.dispute_assign(dispute_id=dispute.pk, actor=mod),
        lambda: services.dispute_moderator_message(dispute_id=dispute.pk, actor=mod, text="hi"),
        lambda: services.dispute_request_evidence(
            dispute_id=dispute.pk, actor=mod, party="seller", note="proof please"
        ),
        lambda: services.dispute_file_read(dispute_id=dispute.pk, actor=mod),
    ):
        with pytest.raises(PermissionDenied):
            attempt()
    dispute.refresh_from_db()
    assert dispute.assigned_to is None
    assert not ModeratorAction.objects.filter(actor=mod).exists()


def test_the_console_hides_their_own_dispute_and_another_moderator_decides(
    client, own_dispute, moderators
):
    mod, trade, dispute = own_dispute
    url = reverse("admin:disputes_dispute_change", args=[dispute.pk])
    # when the party-moderator opens the console
    client.force_login(mod)
    listing = client.get(reverse("admin:disputes_dispute_changelist"))
    # then the dispute is neither listed nor readable
    assert f"/{dispute.pk}/change/" not in listing.content.decode()
    assert client.get(url).status_code == 404
    # when an impartial moderator reads the file, it is audited; and their decision stands
    other = moderators("other")
    client.force_login(other)
    assert client.get(url).status_code == 200
    assert ModeratorAction.objects.filter(actor=other, action="read_file").count() == 1
    services.dispute_decide(
        dispute_id=dispute.pk, actor=other, outcome="refund", reason="No payment arrived at all."
    )
    trade.refresh_from_db()
    assert trade.state in (Trade.State.REFUNDING, Trade.State.REFUNDED)
