"""The 30-day limit under racing takes, on real PostgreSQL with real threads: the profile row
lock in offer_take makes them queue, so they can't all slip under the limit together."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from accounts.tests.factories import DEFAULT_LIMITS, UserFactory
from conftest import require_postgres
from escrow import services as escrow_services
from escrow.selectors import trade_volume_eur
from escrow.tests.test_concurrency import outcome, run_at_once
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db(transaction=True)


def test_racing_takes_of_one_taker_respect_the_30_day_limit(refdata, settings):
    require_postgres()
    # given a tier-0 taker allowed 5,000 EUR per 30 days, and six makers' offers
    settings.KYC_LIMITS_EUR = {
        **DEFAULT_LIMITS,
        0: {"per_trade": "5000", "per_30_days": "5000"},
    }
    taker = UserFactory(username="racer")
    offers = []
    for i in range(6):
        maker = UserFactory(username=f"maker{i}")
        fund(maker, "BTC", "1")
        offers.append(make_offer(maker, amount="0.5", max_fiat="10000"))
    # when the taker takes 2,000 EUR from each of them at once
    results = run_at_once(
        [
            lambda offer=offer: escrow_services.trade_open(
                offer_id=offer.pk, taker=taker, fiat_amount="2000"
            )
            for offer in offers
        ]
    )
    # then two go through (4,000 EUR) and the rest are refused by the limit, none crashed
    counts = Counter(outcome(r) for r in results)
    assert counts == {"ok": 2, "ValidationFailed:400": 4}, counts
    assert trade_volume_eur(user_ids=[taker.pk])[taker.pk] == Decimal("4000.00")
