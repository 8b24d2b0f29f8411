"""Loan news through lending's hooks: in-app notifications for the borrower and every lender,
moderators on a blocked liquidation, webhooks through the outbox, failures that stay here."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from accounts.tests.factories import UserFactory
from ledger import services as ledger
from lending import services
from lending.models import Loan
from lending.tests.helpers import at, lenders, request_example
from marketplace.models import PriceIndex
from marketplace.services import price_index_set
from marketplace.tests.factories import fund
from notifications import webhooks
from notifications.models import Notification, WebhookDelivery, WebhookEndpoint
from notifications.webhooks import WEBHOOK_EVENTS

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    sent: list[int] = []
    monkeypatch.setattr(webhooks, "_enqueue", sent.append)
    return sent


@pytest.fixture
def bots(alice):
    """alice's bot wants every event; another only trade events."""
    every = WebhookEndpoint.objects.create(user=alice, url="https://bot.example.com/h", secret="s")
    trades = WebhookEndpoint.objects.create(
        user=alice, url="https://x.example/h", secret="s", events=["trade.paid"]
    )
    return every, trades


def _usdt_loan(alice, capture):
    """1500 USDT borrowed by alice against 1 ETH from two lenders (1000 and 500 USDT)."""
    fund(alice, "ETH", "1")
    request = request_example(alice, asset="USDT", amount="1500", collateral_asset="ETH",
                              collateral_amount="1")  # fmt: skip
    big, small = lenders("1000", "500", asset="USDT")
    services.loan_request_fund(request_id=request.pk, lender=big, amount="1000")
    with capture(execute=True):
        services.loan_request_fund(request_id=request.pk, lender=small, amount="500")
    return Loan.objects.get(pk=request.pk), big, small


def _texts(user) -> list[str]:
    return list(
        Notification.objects.filter(user=user).order_by("id").values_list("text", flat=True)
    )


def test_loan_events_are_webhook_events():
    # given / when the list a webhook can subscribe to
    # then every loan event is there, after the trade ones
    assert WEBHOOK_EVENTS[-5:] == [
        "loan.activated", "loan.installment_paid", "loan.installment_missed", "loan.margin_call",
        "loan.liquidated",
    ]  # fmt: skip


def test_activation_tells_borrower_every_lender_and_bots(
    alice, bots, queued, django_capture_on_commit_callbacks
):
    # given a request that two lenders fund
    # when the last commitment activates the loan
    loan, big, small = _usdt_loan(alice, django_capture_on_commit_callbacks)
    # then the borrower and both lenders are told in-app, with no trade
    for user in (alice, big, small):
        (text,) = _texts(user)
        assert text.startswith(f"Loan #{loan.pk} is active: alice borrowed 1500 USDT")
    assert not Notification.objects.exclude(kind="loan").exists()
    assert not Notification.objects.filter(trade__isnull=False).exists()
    # and alice's bot that wants everything gets loan.activated through the outbox, queued once
    every, _ = bots
    (delivery,) = WebhookDelivery.objects.all()
    assert (delivery.endpoint_id, delivery.event) == (every.pk, "loan.activated")
    assert delivery.payload["loan"]["id"] == loan.pk
    assert delivery.payload["delivery_id"] == delivery.pk
    assert queued == [delivery.pk]


def test_installments_paid_then_missed(alice, bots, queued, monkeypatch,
                                       django_capture_on_commit_callbacks):  # fmt: skip
    # given an active loan whose borrower holds the 1500 USDT borrowed, not the interest
    loan, big, _ = _usdt_loan(alice, django_capture_on_commit_callbacks)
    last = loan.installments.order_by("n").last()
    # when every installment is collected at the end of the term
    at(monkeypatch, last.due_at + timedelta(minutes=1))
    with django_capture_on_commit_callbacks(execute=True):
        services.installments_collect_due()
    # then five were paid and the sixth missed: everyone hears of each, and the loan is late
    texts = _texts(big)[1:]
    for n, text in enumerate(texts[:5], start=1):
        assert text.startswith(f"Loan #{loan.pk}: installment {n} paid (")
    assert texts[5].startswith(f"Loan #{loan.pk} is late: installment 6 could not be collected")
    assert len(texts) == 6
    assert _texts(alice)[1:] == texts
    events = list(WebhookDelivery.objects.order_by("id").values_list("event", "payload"))
    assert [e for e, _ in events] == ["loan.activated"] + ["loan.installment_paid"] * 5 + [
        "loan.installment_missed"
    ]
    assert [p.get("installment") for _, p in events[1:]] == [1, 2, 3, 4, 5, 6]


def test_margin_call_tells_the_borrower(alice, queued, django_capture_on_commit_callbacks):
    # given an active loan
    loan, big, _ = _usdt_loan(alice, django_capture_on_commit_callbacks)
    # when ETH falls past the margin-call line and the LTV is checked twice
    price_index_set(asset_code="ETH", fiat_code="EUR", price="1800")
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            services.loans_check_ltv()
    # then the borrower alone is told, once
    (call,) = [t for t in _texts(alice) if "margin call" in t]
    assert call.startswith(f"Loan #{loan.pk}: margin call. Its LTV is 77.")
    assert "past the 75.0% line" in call
    assert not [t for t in _texts(big) if "margin call" in t]


def test_default_and_liquidation_tell_everyone(
    alice, bots, queued, monkeypatch, django_capture_on_commit_callbacks
):
    # given a loan late since its first installment, past the grace period, with fresh prices
    loan, big, small = _usdt_loan(alice, django_capture_on_commit_callbacks)
    Loan.objects.filter(pk=loan.pk).update(state="late", late_since=timezone.now())
    later = timezone.now() + timedelta(hours=73)
    at(monkeypatch, later)
    price_index_set(asset_code="ETH", fiat_code="EUR", price="3000")
    price_index_set(asset_code="USDT", fiat_code="EUR", price="0.92")
    # when the sweeper defaults and liquidates it
    with django_capture_on_commit_callbacks(execute=True):
        services.loans_default_overdue()
    # then all three hear of the default, then of the liquidation
    for user in (alice, big, small):
        texts = _texts(user)[1:]
        assert texts[0].startswith(f"Loan #{loan.pk} defaulted")
        assert texts[1].startswith(f"Loan #{loan.pk} was liquidated: default: LTV")
    assert WebhookDelivery.objects.order_by("-id").first().event == "loan.liquidated"


def test_stale_price_tells_moderators_until_read(alice, django_capture_on_commit_callbacks):
    # given a moderator, and a loan past the liquidation line on a stale price
    moderator = UserFactory(username="mod", is_staff=True)
    moderator.user_permissions.add(Permission.objects.get(codename="decide_trade"))
    loan, big, _ = _usdt_loan(alice, django_capture_on_commit_callbacks)
    price_index_set(asset_code="ETH", fiat_code="EUR", price="1000")
    PriceIndex.objects.update(updated_at=timezone.now() - timedelta(hours=2))
    # when the check runs twice
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            services.loans_check_ltv()
    # then the moderator is told once (until read), the parties not
    (text,) = _texts(moderator)
    assert text.startswith(f"Loan #{loan.pk}: liquidation blocked: price index stale")
    assert text.endswith(f"/admin/lending/loan/{loan.pk}/change/")
    assert not [t for t in _texts(big) if "blocked" in t]


def test_failing_notifications_leave_the_loan_alone(
    alice, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    # given notifications that fail
    from notifications import loans

    def broken(**_):
        raise RuntimeError("notifications down")

    monkeypatch.setattr(loans, "notify_loan_events", broken)
    # when the loan activates
    loan, _, _ = _usdt_loan(alice, django_capture_on_commit_callbacks)
    # then it is active all the same, and the failure is logged
    assert loan.state == "active"
    assert "notifications about loan events" in caplog.text
    assert not Notification.objects.exists()


def test_loan_news_emails_whoever_must_act_and_links_to_the_loan(
    alice, queued, mailoutbox, django_capture_on_commit_callbacks, monkeypatch, outbound_inline
):
    # given users with email addresses and an activated loan
    alice.email = "alice@example.com"
    alice.save(update_fields=["email"])
    loan, big, small = _usdt_loan(alice, django_capture_on_commit_callbacks)
    # then everyone with an address is emailed about the activation; the note links to the loan
    assert sorted(m.to[0] for m in mailoutbox) == sorted([alice.email, big.email, small.email])
    assert {m.subject for m in mailoutbox} == {f"Loan #{loan.pk}: activated"}
    assert Notification.objects.filter(user=alice, loan=loan).count() == 1
    # when alice spends the principal and the first installment can't be collected
    mailoutbox.clear()
    ledger.transfer_post(
        idempotency_key="spent", debit=ledger.account_for_user(user=alice, asset=loan.asset),
        credit=ledger.account_world(asset=loan.asset), amount=Decimal(1500), kind="withdrawal",
    )  # fmt: skip
    first = loan.installments.order_by("n").first()
    at(monkeypatch, first.due_at + timedelta(minutes=1))
    with django_capture_on_commit_callbacks(execute=True):
        services.installments_collect_due()
    # then the borrower, who must act, gets an email; an installment paid would not
    assert [(m.subject, m.to) for m in mailoutbox] == [
        (f"Loan #{loan.pk}: installment missed", ["alice@example.com"])
    ]


def test_a_loan_dispute_reaches_moderators_and_the_parties(
    alice, queued, mailoutbox, django_capture_on_commit_callbacks, outbound_inline
):
    loan, big, small = _usdt_loan(alice, django_capture_on_commit_callbacks)
    mod = UserFactory(username="mod", is_staff=True, email="mod@example.com")
    mod.user_permissions.add(Permission.objects.get(codename="decide_trade"))
    mod = type(mod).objects.get(pk=mod.pk)
    mailoutbox.clear()
    # when alice opens a dispute
    with django_capture_on_commit_callbacks(execute=True):
        dispute = services.loan_dispute_open(
            loan_id=loan.pk, actor=alice, category="installment",
            text="Installment 1 was collected twice from my wallet.",
        )  # fmt: skip
    # then the moderator is told with a link to the admin, the lenders in-app and by email
    (staff,) = _texts(mod)
    assert f"/admin/lending/loandispute/{dispute.pk}/change/" in staff
    assert any(f"opened dispute #{dispute.pk}" in t for t in _texts(big))
    assert any(f"opened dispute #{dispute.pk}" in t for t in _texts(small))
    assert not any("dispute" in t for t in _texts(alice))  # she opened it
    assert sorted(m.to[0] for m in mailoutbox) == sorted([big.email, small.email])
    # when the moderator decides it
    with django_capture_on_commit_callbacks(execute=True):
        services.loan_dispute_decide(dispute_id=dispute.pk, actor=mod, outcome="rejected",
                                     reason="The ledger shows one collection.")  # fmt: skip
    for user in (alice, big, small):
        assert any(f"dispute #{dispute.pk} decided: Rejected" in t for t in _texts(user))
