"""Demo loans for `make run` (issue 16 point 10), after `seed_demo` made alice and bob: alice's open
request of the issue's example (1 ETH at 5 % over 6 months, USDT collateral) partly funded by
bob, and bob's active USDT loan from alice with its first installment paid. Everything through
lending.services; time is moved by setting the loan's dates in the past. Safe to run again.

It lives in lending, not in disputes' seed_demo: disputes and lending import neither each other
(docs/architecture.md §1)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db.models import F
from django.utils import timezone

from ledger import services as ledger
from lending import services
from lending.models import Installment, Loan, LoanRequest

# What the demo loans take from the demo users' wallets, credited here so that the offers
# seed_demo made keep what backs them.
CREDITS = {"alice": {"USDT": "7000"}, "bob": {"ETH": "1.4"}}


class Command(BaseCommand):
    help = "Seed one open, partly funded loan request and one active loan with a paid installment."

    def handle(self, *args: Any, **options: Any) -> None:
        users = {u.username: u for u in get_user_model().objects.filter(username__in=CREDITS)}
        if len(users) != len(CREDITS):
            raise CommandError("run seed_demo first: the demo traders alice and bob are missing")
        alice, bob = users["alice"], users["bob"]
        if LoanRequest.objects.filter(borrower__in=[alice, bob]).exists():
            self.stdout.write("demo loans already present")
            return
        for name, balances in CREDITS.items():
            for asset, amount in balances.items():
                ledger.deposit_credit(user=users[name], asset_code=asset, amount=amount,
                                      reference="demo lending deposit", actor=None)  # fmt: skip
        now = timezone.now()
        # The example, open for a week and 0.4 ETH funded by bob.
        example = services.loan_request_create(
            borrower=alice, asset="ETH", amount="1", annual_rate="5", term_months=6,
            plan="amortized", collateral_asset="USDT", collateral_amount="6000",
            funding_deadline=now + timedelta(days=7), allow_partial=True, min_fill="0.5",
        )  # fmt: skip
        services.loan_request_fund(request_id=example.pk, lender=bob, amount="0.4")
        # bob borrows 1000 USDT against 1 ETH over 3 months; alice funds it all (it activates).
        request = services.loan_request_create(
            borrower=bob, asset="USDT", amount="1000", annual_rate="8", term_months=3,
            plan="amortized", collateral_asset="ETH", collateral_amount="1",
            funding_deadline=now + timedelta(days=7),
        )  # fmt: skip
        services.loan_request_fund(request_id=request.pk, lender=alice, amount="1000")
        # A month and a day ago: the first installment is due, and collected from bob's wallet.
        back = timedelta(days=32)
        Loan.objects.filter(pk=request.pk).update(activated_at=F("activated_at") - back)
        Installment.objects.filter(loan_id=request.pk).update(due_at=F("due_at") - back)
        paid = services.loan_collect(loan_id=request.pk)
        self.stdout.write(
            f"demo loans ready: request #{example.pk} (alice, 1 ETH at 5 %, 0.4 funded by bob), "
            f"loan #{request.pk} (bob, 1000 USDT from alice, {paid} installment paid)"
        )
