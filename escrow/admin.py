"""Moderator screens of escrow: the audit trail, and the settlements with the failed ones first
(the queue of those that need a person), retried through escrow.services.settlement_retry."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.http import HttpRequest
from django.template.defaultfilters import truncatechars
from django.urls import reverse
from django.utils.html import format_html

from common.admin import ReadOnlyAdmin
from common.errors import ApplicationError
from escrow import services
from escrow.models import SELLER_FAULT_REASONS, EscrowEvent, Settlement, Trade


@admin.register(EscrowEvent)
class EscrowEventAdmin(ReadOnlyAdmin):
    list_display = (
        "trade",
        "old_state",
        "new_state",
        "actor",
        "actor_role",
        "reason",
        "created_at",
    )
    list_filter = ("new_state", "actor_role")


@admin.register(Settlement)
class SettlementAdmin(ReadOnlyAdmin):
    """Read-only; failed first, then pending, each oldest first. "Failed" in the status filter is
    the moderators' queue; the admin index links to it while it is not empty."""

    list_display = (
        "id",
        "trade_link",
        "kind",
        "status",
        "attempts",
        "error",
        "last_attempt_at",
        "queued_at",
        "settled_at",
    )
    list_filter = ("status", "kind")
    search_fields = ("=trade__id",)
    actions = ["retry"]

    def get_ordering(self, request: HttpRequest) -> list[Any]:
        queue_first = Case(
            When(status=Settlement.Status.FAILED, then=Value(0)),
            When(status=Settlement.Status.PENDING, then=Value(1)),
            default=Value(2),
            output_field=IntegerField(),
        )
        return [queue_first.asc(), "queued_at", "pk"]

    @admin.display(description="trade", ordering="trade_id")
    def trade_link(self, settlement: Settlement) -> str:
        url = reverse("trade_detail", args=[settlement.trade_id])
        return format_html('<a href="{}">#{}</a>', url, settlement.trade_id)

    @admin.display(description="last error")
    def error(self, settlement: Settlement) -> str:
        return format_html(
            '<span title="{}">{}</span>',
            settlement.last_error,
            truncatechars(settlement.last_error, 120),
        )

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("escrow.decide_trade")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Moderators work the failed queue whatever model permissions they were given.
        return self.has_decide_permission(request) or super().has_view_permission(request, obj)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_decide_permission(request) or super().has_module_permission(request)

    @admin.action(description="Retry the selected failed settlements", permissions=["decide"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Settlement]) -> None:
        done = 0
        for settlement in queryset:
            try:
                services.settlement_retry(settlement_id=settlement.pk, actor=request.user)
            except ApplicationError as exc:
                self.message_user(request, f"{settlement}: {exc.message}", messages.ERROR)
                continue
            # The admin's history of the row: who retried it, after what.
            self.log_change(
                request,
                settlement,
                f"Retried after {settlement.attempts} failed attempts: {settlement.last_error}",
            )
            done += 1
        if done:
            self.message_user(request, f"{done} settlement(s) queued again.", messages.SUCCESS)


class SellerFaultCancelFilter(admin.SimpleListFilter):
    """Buyers' cancellations blaming the seller, which don't count against the buyer's daily
    limit unless a moderator counts them (issue 20): the queue to review."""

    title = "cancelled for the seller's fault"
    parameter_name = "seller_fault"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("uncounted", "Not counted (to review)"), ("counted", "Counted by a moderator")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Trade]) -> QuerySet[Trade]:
        value = self.value()
        if value not in ("uncounted", "counted"):
            return queryset
        return queryset.filter(
            cancel_reason__in=SELLER_FAULT_REASONS, cancel_counted=value == "counted"
        )


@admin.register(Trade)
class TradeAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "state",
        "asset",
        "amount",
        "fiat_amount",
        "fiat",
        "buyer",
        "seller",
        "cancel_reason",
        "cancel_counted",
        "created_at",
    )
    list_filter = (
        "state",
        SellerFaultCancelFilter,
        "cancel_reason",
        "cancel_counted",
        "asset",
        "fiat",
    )
    search_fields = ("buyer__username", "seller__username", "id")
    readonly_fields = [f.name for f in Trade._meta.fields]
    actions = ["count_cancellation", "uncount_cancellation"]

    # --- issue 20: moderators review buyers' cancel reasons (escrow.services.cancellations) ---

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("escrow.decide_trade")

    def _review(self, request: HttpRequest, queryset: QuerySet[Trade], *, counted: bool) -> None:
        done = 0
        for trade in queryset:
            try:
                services.trade_cancellation_review(
                    trade_id=trade.pk, actor=request.user, counted=counted
                )
            except ApplicationError as exc:
                self.message_user(request, f"{trade}: {exc.message}", messages.ERROR)
                continue
            self.log_change(
                request,
                trade,
                "Counted against the buyer's daily cancellation limit"
                if counted
                else "No longer counted against the buyer's daily cancellation limit",
            )
            done += 1
        if done:
            self.message_user(request, f"{done} cancellation(s) reviewed.", messages.SUCCESS)

    @admin.action(
        description="Count against the buyer's daily cancellation limit (reason abused)",
        permissions=["decide"],
    )
    def count_cancellation(self, request: HttpRequest, queryset: QuerySet[Trade]) -> None:
        self._review(request, queryset, counted=True)

    @admin.action(
        description="Don't count against the buyer's daily cancellation limit",
        permissions=["decide"],
    )
    def uncount_cancellation(self, request: HttpRequest, queryset: QuerySet[Trade]) -> None:
        self._review(request, queryset, counted=False)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Trade | None = None) -> bool:
        return False
