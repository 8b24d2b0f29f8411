"""Moderator screens of loans: loans at risk by LTV (the LTV check's own query), late, defaulted
and liquidated loans (filters), a loan's audit trail and every ledger transfer it made, and the
"pause liquidations" switch for a broken price feed. Actions only call lending.services."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from accounts.selectors import is_moderator
from common.admin import ReadOnlyAdmin
from common.errors import ApplicationError
from lending import selectors, services
from lending.models import (
    Installment,
    LendingControlChange,
    Loan,
    LoanCommitment,
    LoanEvent,
    LoanRequest,
)


@admin.register(LoanRequest)
class LoanRequestAdmin(ReadOnlyAdmin):
    list_display = ("id", "borrower", "amount", "asset", "funded", "state", "funding_deadline")
    list_filter = ("state", "asset")


@admin.register(LoanCommitment)
class LoanCommitmentAdmin(ReadOnlyAdmin):
    list_display = ("request", "lender", "amount", "created_at")


class _ModeratorsRead:
    """Moderators read lending's screens whatever model permissions they were given."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_moderator(request.user) or super().has_view_permission(request, obj)  # type: ignore[misc]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_moderator(request.user) or super().has_module_permission(request)  # type: ignore[misc]


@admin.register(Loan)
class LoanAdmin(_ModeratorsRead, ReadOnlyAdmin):
    """Late, defaulted and liquidated loans through the state filter; a loan's page shows its
    events (liquidations name their prices) and its transfers. "Loans at risk" is a view of its
    own, sorted by LTV, with the pause switch."""

    list_display = ("request", "borrower", "principal", "asset", "state", "margin_called",
                    "late_since", "shortfall", "liquidation_blocked_at")  # fmt: skip
    list_filter = ("state", "margin_called", "asset", "collateral_asset")
    search_fields = ("=request__id", "borrower__username")
    readonly_fields = ("events_table", "transfers_table")
    change_list_template = "admin/lending/loan/change_list.html"

    @admin.display(description="events")
    def events_table(self, loan: Loan) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td><td>{}</td></tr>",
            (
                (e.created_at.strftime("%Y-%m-%d %H:%M:%S"), e.subject, e.old_state or "-",
                 e.new_state, e.actor or e.actor_role, e.reason)
                for e in selectors.loan_events(loan_id=loan.pk)
            ),
        )  # fmt: skip
        return format_html(
            "<table><tr><th>when</th><th>of</th><th>move</th><th>by</th><th>why</th></tr>{}"
            "</table>",
            rows,
        )

    @admin.display(description="ledger transfers (reference = loan id)")
    def transfers_table(self, loan: Loan) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td>"
            "<td>{}</td></tr>",
            (
                (t.pk, t.created_at.strftime("%Y-%m-%d %H:%M:%S"), t.kind, t.amount.normalize(),
                 t.asset.code, t.flags, t.debit_account.code, t.credit_account.code)
                for t in selectors.loan_transfers(loan_id=loan.pk)
            ),
        )  # fmt: skip
        return format_html(
            "<table><tr><th>#</th><th>when</th><th>kind</th><th>amount</th><th>flags</th>"
            "<th>debit</th><th>credit</th></tr>{}</table>",
            rows,
        )

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("at-risk/", wrap(self.at_risk_view), name="lending_loan_at_risk"),
            path("liquidations/", wrap(self.pause_view), name="lending_loan_pause"),
            *super().get_urls(),
        ]

    def at_risk_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        floor = request.GET.get("min_ltv")
        try:
            min_ltv = Decimal(floor) if floor else None
        except ArithmeticError:
            min_ltv = None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Loans at risk, by LTV",
            "rows": selectors.loans_at_risk(min_ltv=min_ltv),
            "min_ltv": floor or "",
            "margin_call_ltv": settings.LENDING_MARGIN_CALL_LTV,
            "liquidation_ltv": settings.LENDING_LIQUIDATION_LTV,
            "control": selectors.lending_control(),
            "changes": selectors.lending_control_changes(),
            "can_pause": is_moderator(request.user),
        }
        return TemplateResponse(request, "admin/lending/loan/at_risk.html", context)

    def pause_view(self, request: HttpRequest) -> HttpResponse:
        """POST action=pause|resume, reason: the switch, through the service."""
        back = HttpResponseRedirect(reverse("admin:lending_loan_at_risk"))
        if request.method != "POST":
            return back
        paused = request.POST.get("action") == "pause"
        try:
            services.liquidations_set_paused(
                paused=paused, actor=request.user, reason=request.POST.get("reason", "")
            )
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return back
        self.message_user(
            request,
            "Liquidations paused." if paused else "Liquidations resumed.",
            messages.WARNING if paused else messages.SUCCESS,
        )
        return back


@admin.register(Installment)
class InstallmentAdmin(ReadOnlyAdmin):
    list_display = ("loan", "n", "due_at", "principal", "interest", "status", "paid_at")
    list_filter = ("status",)


@admin.register(LoanEvent)
class LoanEventAdmin(_ModeratorsRead, ReadOnlyAdmin):
    list_display = ("request", "subject", "old_state", "new_state", "actor", "actor_role",
                    "reason", "created_at")  # fmt: skip
    list_filter = ("subject", "new_state")
    search_fields = ("=request__id",)


@admin.register(LendingControlChange)
class LendingControlChangeAdmin(_ModeratorsRead, ReadOnlyAdmin):
    list_display = ("created_at", "liquidations_paused", "actor", "reason")
