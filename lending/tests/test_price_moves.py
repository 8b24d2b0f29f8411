"""The LTV is rechecked when a price index moves (marketplace's price_listeners)."""

from __future__ import annotations

import pytest

from lending import listeners, services
from lending.models import Loan
from lending.tests.helpers import lenders, request_example
from marketplace.services import price_index_set, price_listeners
from marketplace.tests.factories import fund
from notifications.models import Notification

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    """The tasks lending queues, run at once (and recorded)."""
    names: list[str] = []

    def run(task, *args):
        names.append(task.name)
        task(*args)

    monkeypatch.setattr(listeners, "publish_after_commit", run)
    return names


@pytest.fixture
def usdt_loan(alice):
    """1500 USDT borrowed against 1 ETH (ETH 3000 EUR, USDT 0.92 EUR: LTV 0.4667)."""
    fund(alice, "ETH", "1")
    request = request_example(alice, asset="USDT", amount="1500", collateral_asset="ETH",
                              collateral_amount="1")  # fmt: skip
    (lender,) = lenders("1500", asset="USDT")
    services.loan_request_fund(request_id=request.pk, lender=lender, amount="1500")
    return Loan.objects.get(pk=request.pk)


def _margin_calls(user) -> int:
    return Notification.objects.filter(user=user, text__contains="margin call").count()


def test_lending_listens_to_price_moves():
    # given / when the apps are ready
    # then lending's listener is on marketplace's hook, once
    assert price_listeners.count(listeners.on_price_moved) == 1


def test_price_move_past_the_line_margin_calls_once(
    usdt_loan, alice, queued, django_capture_on_commit_callbacks
):
    # given an active loan at LTV 0.47
    # when ETH falls to 1800 EUR (LTV 0.778, past 0.75) through the price index
    with django_capture_on_commit_callbacks(execute=True):
        price_index_set(asset_code="ETH", fiat_code="EUR", price="1800")
    # then the LTV check ran and the borrower is told
    assert queued == ["lending.tasks.check_ltv"]
    assert Loan.objects.get(pk=usdt_loan.pk).margin_called
    assert _margin_calls(alice) == 1
    # when it moves again, staying above the line (LTV 0.80) but below liquidation (0.83)
    with django_capture_on_commit_callbacks(execute=True):
        price_index_set(asset_code="ETH", fiat_code="EUR", price="1750")
    # then the check ran again, and told no one twice
    assert len(queued) == 2
    assert _margin_calls(alice) == 1
    assert Loan.objects.get(pk=usdt_loan.pk).state == "active"


def test_price_move_of_an_unused_asset_checks_nothing(
    usdt_loan, queued, django_capture_on_commit_callbacks
):
    # given a loan in USDT against ETH
    # when BTC's price moves
    with django_capture_on_commit_callbacks(execute=True):
        price_index_set(asset_code="BTC", fiat_code="EUR", price="50000")
    # then no LTV check is queued
    assert queued == []
