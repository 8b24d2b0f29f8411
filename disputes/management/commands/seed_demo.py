"""Demo data for `make run`: traders alice and bob (password demo-pass-123) with balances and open
offers in several assets and currencies, and a staff moderator `admin`. Safe to run again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.utils import timezone

from disputes.apps import ensure_moderators_group
from disputes.services import dispute_open, evidence_submit
from escrow import services as escrow_services
from escrow.models import Trade
from escrow.services import trade_mark_paid
from ledger import services as ledger
from marketplace import services
from marketplace.models import Offer
from marketplace.selectors import payment_account_list_for_user
from marketplace.services.payment_accounts import payment_account_create

PASSWORD = "demo-pass-123"

BALANCES = {
    "alice": {"BTC": "1.5", "ETH": "20", "USDT": "5000"},
    "bob": {"BTC": "0.4", "ETH": "3", "USDT": "12000"},
}

OFFERS: list[dict[str, Any]] = [
    {
        "maker": "alice",
        "side": "sell",
        "asset": "BTC",
        "fiat": "EUR",
        "price_type": "floating",
        "margin_percent": "1.5",
        "amount": "0.5",
        "min_fiat": "50",
        "max_fiat": "2000",
        "payment_methods": ["sepa", "revolut"],
        "payment_window_minutes": 30,
        "terms": "SEPA or Revolut from an account in your own name. No third-party payments.",
    },
    {
        "maker": "alice",
        "side": "sell",
        "asset": "ETH",
        "fiat": "EUR",
        "price_type": "fixed",
        "price": "2600",
        "amount": "5",
        "min_fiat": "100",
        "max_fiat": "5000",
        "payment_methods": ["sepa", "wise"],
        "payment_window_minutes": 15,
        "terms": "SEPA or Wise; reference: the trade number.",
    },
    {
        "maker": "alice",
        "side": "buy",
        "asset": "USDT",
        "fiat": "USD",
        "price_type": "fixed",
        "price": "0.99",
        "amount": "3000",
        "min_fiat": "20",
        "max_fiat": "1500",
        "payment_methods": ["zelle"],
        "payment_window_minutes": 30,
        "terms": "I pay by Zelle within minutes.",
    },
    {
        "maker": "bob",
        "side": "sell",
        "asset": "USDT",
        "fiat": "NGN",
        "price_type": "floating",
        "margin_percent": "2",
        "amount": "4000",
        "min_fiat": "10000",
        "max_fiat": "2000000",
        "payment_methods": ["bank-transfer", "opay"],
        "payment_window_minutes": 45,
        "terms": "Bank transfer or OPay. Send the exact amount.",
    },
    {
        "maker": "bob",
        "side": "sell",
        "asset": "BTC",
        "fiat": "EUR",
        "price_type": "fixed",
        "price": "86500",
        "amount": "0.2",
        "min_fiat": "100",
        "max_fiat": "5000",
        "payment_methods": ["sepa-instant"],
        "payment_window_minutes": 20,
        "terms": "SEPA Instant only.",
    },
    {
        "maker": "bob",
        "side": "buy",
        "asset": "BTC",
        "fiat": "EUR",
        "price_type": "floating",
        "margin_percent": "-1",
        "amount": "0.3",
        "min_fiat": "50",
        "max_fiat": "3000",
        "payment_methods": ["sepa", "revolut"],
        "payment_window_minutes": 30,
        "terms": "Fast payer.",
    },
]


class Command(BaseCommand):
    help = "Create demo traders alice and bob with balances and open offers (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        admin, created = User.objects.get_or_create(
            username="admin",
            defaults={"is_staff": True, "is_superuser": True, "email": "admin@example.test"},
        )
        if created:
            admin.set_password(PASSWORD)
            admin.save()
        users = {}
        for name, balances in BALANCES.items():
            user, created = User.objects.get_or_create(
                username=name, defaults={"email": f"{name}@example.test"}
            )
            users[name] = user
            if not created:
                continue
            user.set_password(PASSWORD)
            user.save()
            for asset, amount in balances.items():
                ledger.deposit_credit(
                    user=user, asset_code=asset, amount=amount, reference="demo deposit", actor=None
                )
        self._moderator(User)
        if Offer.objects.filter(maker__in=users.values()).exists():
            self.stdout.write("demo data already present")
            return
        accounts = self._payment_accounts(users["alice"])
        offers = []
        for spec in OFFERS:
            spec = dict(spec)
            if spec["maker"] == "alice" and spec["side"] == "sell":
                # Her sell offers tell buyers which of her saved accounts to pay into.
                spec["payment_accounts"] = [
                    accounts[m] for m in spec["payment_methods"] if m in accounts
                ]
            offers.append(services.offer_create(maker=users[spec.pop("maker")], **spec))
        self._seed_dispute(offer=offers[1], buyer=users["bob"])
        self.stdout.write(
            f"demo ready: traders alice and bob, moderator mod, superuser admin (password "
            f"{PASSWORD}); {len(OFFERS)} offers and one open dispute for mod to resolve"
        )

    def _payment_accounts(self, alice: Any) -> dict[str, int]:
        """alice's saved payment accounts (Settings → Payment accounts), by method code."""
        demo = {
            "revolut": {"holder_name": "Alice Martin", "revtag": "@alicem"},
            "sepa": {"holder_name": "Alice Martin", "iban": "DE89 3704 0044 0532 0130 00"},
            "wise": {"holder_name": "Alice Martin", "email": "alice@example.test"},
        }
        have = {a.method.code: a.pk for a in payment_account_list_for_user(user=alice)}
        for method, details in demo.items():
            if method not in have:
                have[method] = payment_account_create(user=alice, method=method, details=details).pk
        return have

    def _moderator(self, User: Any) -> None:
        """`mod`: staff in the Moderators group (no superuser powers)."""
        ensure_moderators_group()
        mod, created = User.objects.get_or_create(
            username="mod", defaults={"is_staff": True, "email": "mod@example.test"}
        )
        if created:
            mod.set_password(PASSWORD)
            mod.save()
        mod.groups.add(Group.objects.get(name="Moderators"))

    def _seed_dispute(self, *, offer: Offer, buyer: Any) -> None:
        """bob bought ETH from alice, says he paid; alice says nothing arrived: a dispute."""
        trade = escrow_services.trade_open(offer_id=offer.pk, taker=buyer, fiat_amount="260.00")
        escrow_services.trade_message_send(
            trade_id=trade.pk,
            actor=buyer,
            text="Sent 260 EUR by SEPA, reference T" + str(trade.pk),
        )
        trade_mark_paid(trade_id=trade.pk, actor=buyer)
        escrow_services.trade_message_send(
            trade_id=trade.pk, actor=offer.maker, text="Nothing has arrived in my account yet."
        )
        # The dispute delay has passed (demo data: moved back instead of waited for).
        Trade.objects.filter(pk=trade.pk).update(paid_at=timezone.now() - timedelta(minutes=30))
        dispute = dispute_open(
            trade_id=trade.pk,
            actor=buyer,
            category="paid_not_released",
            text="I paid 260 EUR half an hour ago; the seller says nothing arrived.",
        )
        evidence_submit(
            dispute_id=dispute.pk,
            actor=buyer,
            statement="My bank shows the payment as completed at the time of the trade.",
        )
