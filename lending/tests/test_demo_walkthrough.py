"""The README's lending walkthrough on the `make run` demo data: a moderator moves the ETH price
in the admin, bob's loan gets a margin call, then a deeper fall liquidates it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from lending import listeners
from lending.models import Loan, LoanRequest
from marketplace.models import PriceIndex
from notifications.models import Notification

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    """The LTV check lending queues on a price move, run at once (a worker does it in make run)."""
    monkeypatch.setattr(listeners, "publish_after_commit", lambda task, *args: task(*args))


def test_moving_the_price_in_the_admin_margin_calls_then_liquidates(
    admin_client, queued, django_capture_on_commit_callbacks
):
    call_command("seed_demo", verbosity=0)
    call_command("seed_lending_demo", verbosity=0)
    loan = Loan.objects.get(borrower__username="bob", state="active")
    alice, bob = (get_user_model().objects.get(username=n) for n in ("alice", "bob"))
    # README step 1: bob funds the rest of alice's request from Lend: it activates
    example = LoanRequest.objects.get(borrower=alice, state="open")
    admin_client.force_login(bob)
    page = admin_client.post(f"/lending/requests/{example.pk}/fund/", {"amount": "0.6"})
    assert page.status_code == 302, page.content[:2000]
    assert Loan.objects.get(pk=example.pk).state == "active"
    # step 2: alice borrows 0.1 ETH against 600 USDT from Borrow; bob funds it
    admin_client.force_login(alice)
    page = admin_client.post("/lending/borrow/", {
        "asset": "ETH", "amount": "0.1", "annual_rate": "5", "term_months": "3",
        "plan": "amortized", "collateral_asset": "USDT", "collateral_amount": "600",
        "funding_window": "72",
    })  # fmt: skip
    assert page.status_code == 302, page.content[:3000]
    second = LoanRequest.objects.filter(borrower=alice, state="open").get()
    admin_client.force_login(bob)
    admin_client.post(f"/lending/requests/{second.pk}/fund/", {"amount": "0.1"})
    assert Loan.objects.get(pk=second.pk).state == "active"
    admin_client.force_login(get_user_model().objects.get(username="admin"))
    # the demo database is days old: every price is older than PRICE_MAX_AGE
    PriceIndex.objects.update(updated_at=timezone.now() - timedelta(days=2))
    # the moderator confirms the prices the feed did not move
    with django_capture_on_commit_callbacks(execute=True):
        page = admin_client.post("/admin/marketplace/priceindex/", {
            "action": "confirm_prices",
            "_selected_action": list(PriceIndex.objects.values_list("pk", flat=True)),
        })  # fmt: skip
    assert page.status_code == 302
    assert not PriceIndex.objects.filter(updated_at__lt=timezone.now() - timedelta(hours=1))

    eth = PriceIndex.objects.get(asset__code="ETH", fiat__code="EUR")

    def move(price: str) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            page = admin_client.post(f"/admin/marketplace/priceindex/{eth.pk}/change/", {
                "asset": eth.asset_id, "fiat": eth.fiat_id, "price": price, "source": "admin",
            })  # fmt: skip
        assert page.status_code == 302, page.content[:2000]

    # ETH 3000 -> 800 EUR: bob's 1 ETH no longer covers his USDT debt by the margin (LTV > 0.75)
    move("800")
    loan.refresh_from_db()
    assert (loan.state, loan.margin_called) == ("active", True)
    assert (
        Notification.objects.filter(user=loan.borrower, text__contains="margin call").count() == 1
    )
    # ETH -> 700 EUR: past 0.83, liquidated for alice
    move("700")
    loan.refresh_from_db()
    assert loan.state == "liquidated"
    assert Notification.objects.filter(
        user__username="alice", text__contains=f"Loan #{loan.pk} was liquidated"
    ).exists()
