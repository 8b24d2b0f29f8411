"""Read-only moderator screens of loans (a first cut: no actions yet)."""

from __future__ import annotations

from django.contrib import admin

from common.admin import ReadOnlyAdmin
from lending.models import Installment, Loan, LoanCommitment, LoanEvent, LoanRequest


@admin.register(LoanRequest)
class LoanRequestAdmin(ReadOnlyAdmin):
    list_display = ("id", "borrower", "amount", "asset", "funded", "state", "funding_deadline")
    list_filter = ("state", "asset")


@admin.register(LoanCommitment)
class LoanCommitmentAdmin(ReadOnlyAdmin):
    list_display = ("request", "lender", "amount", "created_at")


@admin.register(Loan)
class LoanAdmin(ReadOnlyAdmin):
    list_display = ("request", "borrower", "principal", "asset", "state", "margin_called",
                    "late_since", "shortfall", "liquidation_blocked_at")  # fmt: skip
    list_filter = ("state", "margin_called")


@admin.register(Installment)
class InstallmentAdmin(ReadOnlyAdmin):
    list_display = ("loan", "n", "due_at", "principal", "interest", "status", "paid_at")
    list_filter = ("status",)


@admin.register(LoanEvent)
class LoanEventAdmin(ReadOnlyAdmin):
    list_display = ("request", "subject", "old_state", "new_state", "actor", "actor_role",
                    "reason", "created_at")  # fmt: skip
    list_filter = ("subject", "new_state")
