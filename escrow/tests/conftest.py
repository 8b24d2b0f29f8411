"""What several escrow test modules share: a trade paid into the seller's copied payment
account (the payment-details tests, the trade answer's)."""

from __future__ import annotations

import pytest

from accounts.models import Profile
from accounts.selectors import profile_for
from escrow import services as escrow
from escrow.models import Trade
from marketplace.services import payment_accounts as pay
from marketplace.tests.factories import fund, make_offer

IBAN = "DE89370400440532013000"


@pytest.fixture
def accounts(alice):
    profile_for(alice)
    Profile.objects.filter(user=alice).update(verified_name="Alice Martin")
    revolut = pay.payment_account_create(
        user=alice,
        method="revolut",
        details={"holder_name": "Alice Martin", "revtag": "@alicem"},
        label="Daily",
    )
    sepa = pay.payment_account_create(
        user=alice, method="sepa", details={"holder_name": "alice martin", "iban": IBAN}
    )
    return revolut, sepa


@pytest.fixture
def trade(alice, bob, accounts) -> Trade:
    """bob buys from alice's sell offer, paying by Revolut."""
    revolut, sepa = accounts
    fund(alice)
    offer = make_offer(
        alice, payment_methods=["sepa", "revolut"], payment_accounts=[revolut.pk, sepa.pk]
    )
    return escrow.trade_open(
        offer_id=offer.pk, taker=bob, fiat_amount="100", payment_method="revolut"
    )
