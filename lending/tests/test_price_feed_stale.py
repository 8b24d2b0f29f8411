"""A pair the price feed marked stale pauses liquidations on it, though its price is recent; a
fresh price lets them go on."""

from __future__ import annotations

import pytest

from lending import services
from lending.models import Loan, LoanEvent
from lending.tests.helpers import bal, lenders, request_example
from marketplace.services import price_index_set, price_pair_mark_stale
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db


@pytest.fixture
def usdt_loan(alice):
    """1500 USDT borrowed against 1 ETH (ETH 3000 EUR, USDT 0.92 EUR)."""
    fund(alice, "ETH", "1")
    request = request_example(alice, asset="USDT", amount="1500", collateral_asset="ETH",
                              collateral_amount="1")  # fmt: skip
    (lender,) = lenders("1500", asset="USDT")
    services.loan_request_fund(request_id=request.pk, lender=lender, amount="1500")
    return Loan.objects.get(pk=request.pk), lender


def test_a_stale_pair_pauses_liquidation_until_a_fresh_price(usdt_loan, alice):
    loan, lender = usdt_loan
    # given ETH crashed to 1000 EUR (LTV past the line), then every source failed
    price_index_set(asset_code="ETH", fiat_code="EUR", price="1000")
    assert price_pair_mark_stale(
        asset_code="ETH", fiat_code="EUR", reason="every source failed (kraken: timed out)"
    )
    # when the LTV check runs: the price is minutes old, but the feed vouches for none
    assert services.loans_check_ltv()["liquidated"] == 0
    # then nothing is liquidated, and the loan records why
    loan.refresh_from_db()
    assert (loan.state, loan.liquidation_blocked_at is not None) == ("active", True)
    assert bal(lender, "ETH") == 0
    blocked = LoanEvent.objects.filter(request_id=loan.pk, reason__startswith="liquidation blocked")
    assert "kraken: timed out" in blocked.get().reason
    # when a fresh price comes in, the liquidation goes ahead
    price_index_set(asset_code="ETH", fiat_code="EUR", price="1000")
    assert services.loans_check_ltv()["liquidated"] == 1
    assert Loan.objects.get(pk=loan.pk).state == "liquidated"
