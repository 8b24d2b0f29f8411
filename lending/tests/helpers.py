"""Scenario builders for the lending tests: everything through the services."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from accounts.tests.factories import UserFactory
from ledger.selectors import balance_available
from lending import services
from marketplace.models import PriceIndex
from marketplace.tests.factories import fund


def bal(user: Any, asset: str) -> Decimal:
    return balance_available(user=user, asset_code=asset)


def request_example(borrower: Any, **overrides: Any):
    """The issue's example: 1 ETH at 5 % over 6 months, amortized, USDT collateral."""
    values: dict[str, Any] = {
        "asset": "ETH",
        "amount": "1",
        "annual_rate": "5",
        "term_months": 6,
        "plan": "amortized",
        "collateral_asset": "USDT",
        "collateral_amount": "6000",
        "funding_deadline": timezone.now() + timedelta(days=2),
    }
    values.update(overrides)
    return services.loan_request_create(borrower=borrower, **values)


def lenders(*amounts: str, asset: str = "ETH", prefix: str = "lender") -> list[Any]:
    users = []
    for i, amount in enumerate(amounts):
        user = UserFactory(username=f"{prefix}{i}")
        fund(user, asset, amount)
        users.append(user)
    return users


def at(monkeypatch: Any, moment: datetime) -> None:
    """Move the clock every service and auto_now field reads."""
    monkeypatch.setattr(timezone, "now", lambda: moment)


def move_price(asset: str, eur: str) -> None:
    """Move the asset's EUR index, fresh, without announcing it: price_index_set would queue the
    LTV check to whatever Celery worker runs, and a race test must decide who competes. The
    tests that want the check call services.loans_check_ltv themselves."""
    PriceIndex.objects.filter(asset__code=asset, fiat__code="EUR").update(
        price=Decimal(eur), updated_at=timezone.now()
    )
