"""Moderator screens of loans: loans at risk by LTV (the LTV check's own query), late, defaulted
and liquidated loans (filters), a loan's audit trail and every ledger transfer it made, and the
"pause liquidations" switch for a broken price feed; loan disputes, taken and decided by a
moderator who is no party. Actions only call lending.services."""

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
    LoanDispute,
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


@admin.register(LoanDispute)
class LoanDisputeAdmin(_ModeratorsRead, ReadOnlyAdmin):
    """Open disputes first; a dispute's page shows the statements and the loan, and has the
    "take it" and "decide" forms (lending.services.loan_dispute_assign / _decide)."""

    list_display = ("id", "loan", "opened_by", "opener_role", "category", "status",
                    "assigned_to", "outcome", "created_at")  # fmt: skip
    list_filter = ("status", "category", "outcome")
    search_fields = ("=loan__request__id", "opened_by__username")
    readonly_fields = ("loan_link", "statements_table", "decision")
    fields = ("loan_link", "opened_by", "opener_role", "category", "text", "status",
              "assigned_to", "statements_table", "decision")  # fmt: skip
    change_form_template = "admin/lending/loandispute/change_form.html"

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).order_by("status", "-id")

    @admin.display(description="loan")
    def loan_link(self, dispute: LoanDispute) -> str:
        url = reverse("admin:lending_loan_change", args=[dispute.loan_id])
        return format_html('<a href="{}">Loan #{}</a>', url, dispute.loan_id)

    @admin.display(description="statements")
    def statements_table(self, dispute: LoanDispute) -> str:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{} ({})</td><td>{}</td></tr>",
            (
                (st.created_at.strftime("%Y-%m-%d %H:%M"), st.author.username, st.role, st.text)
                for st in dispute.statements.select_related("author")
            ),
        )
        return format_html("<table><tr><th>when</th><th>who</th><th>said</th></tr>{}</table>", rows)

    @admin.display(description="decision")
    def decision(self, dispute: LoanDispute) -> str:
        if dispute.status == LoanDispute.Status.OPEN:
            return "-"
        paid = ""
        if dispute.compensation_amount is not None and dispute.compensation_asset is not None:
            paid = (f"; user #{dispute.payer_id} paid user #{dispute.payee_id} "
                    f"{dispute.compensation_amount.normalize()} {dispute.compensation_asset.code}")  # fmt: skip
        return f"{dispute.outcome} by {dispute.decided_by}: {dispute.decision_reason}{paid}"

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:dispute_id>/take/", wrap(self.take_view), name="lending_loandispute_take"),
            path(
                "<int:dispute_id>/decide/",
                wrap(self.decide_view),
                name="lending_loandispute_decide",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        dispute = (
            LoanDispute.objects.select_related("loan__asset", "loan__collateral_asset")
            .filter(pk=object_id)
            .first()
        )
        extra = dict(extra_context or {})
        if dispute is not None:
            extra.update(
                dispute=dispute,
                can_judge=is_moderator(request.user),
                outcomes=LoanDispute.Outcome.choices,
                assets=[dispute.loan.asset.code, dispute.loan.collateral_asset.code],
                parties=selectors.loan_party_users(loan_id=dispute.loan_id),
            )
        return super().change_view(request, object_id, form_url, extra)

    def _back(self, dispute_id: int) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:lending_loandispute_change", args=[dispute_id]))

    def take_view(self, request: HttpRequest, dispute_id: int) -> HttpResponse:
        if request.method == "POST":
            try:
                services.loan_dispute_assign(dispute_id=dispute_id, actor=request.user)
                self.message_user(request, f"Dispute #{dispute_id} is yours.", messages.SUCCESS)
            except ApplicationError as exc:
                self.message_user(request, exc.message, messages.ERROR)
        return self._back(dispute_id)

    def decide_view(self, request: HttpRequest, dispute_id: int) -> HttpResponse:
        if request.method == "POST":
            p = request.POST
            compensate = p.get("outcome") == LoanDispute.Outcome.COMPENSATE
            try:
                services.loan_dispute_decide(
                    dispute_id=dispute_id, actor=request.user, outcome=p.get("outcome"),
                    reason=p.get("reason"),
                    compensation_asset=p.get("compensation_asset") if compensate else None,
                    compensation_amount=p.get("compensation_amount") if compensate else None,
                    payer_id=p.get("payer") if compensate else None,
                    payee_id=p.get("payee") if compensate else None,
                )  # fmt: skip
                self.message_user(request, f"Dispute #{dispute_id} decided.", messages.SUCCESS)
            except ApplicationError as exc:
                self.message_user(request, exc.message, messages.ERROR)
        return self._back(dispute_id)
