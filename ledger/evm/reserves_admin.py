"""Moderator screens of the reserves: the reconciliations (read-only) and the "hot wallet" page
(per asset: the hot wallet's balance, the deposit addresses, the ledger's custody accounts, the
latest reconciliation and the withdrawals still queued). ledger/admin.py imports this module."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from common.admin import ReadOnlyAdmin
from ledger.evm import reserves
from ledger.evm.config import evm_assets
from ledger.evm.models import ReserveProof, ReserveReconciliation


@admin.register(ReserveReconciliation)
class ReserveReconciliationAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "asset",
        "status",
        "block_number",
        "onchain_total",
        "liabilities",
        "in_transit",
        "difference",
        "created_at",
    )
    list_filter = ("status", "asset")
    list_select_related = ("asset",)

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("hot-wallet/", wrap(self.hot_wallet_view), name="ledger_hot_wallet"),
            path(
                "hot-wallet/reconcile/",
                wrap(self.reconcile_view),
                name="ledger_hot_wallet_reconcile",
            ),
            *super().get_urls(),
        ]

    def hot_wallet_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Hot wallet",
            "rows": reserves.hot_wallet_overview(),
            "on_chain": bool(evm_assets()),
            "proofs": reserves.reserve_proofs_latest(),
        }
        return TemplateResponse(request, "admin/ledger/hot_wallet.html", context)

    def reconcile_view(self, request: HttpRequest) -> HttpResponse:
        """POST: reconcile every asset on the chain now (what the beat task does)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            for row in reserves.reserves_reconcile():
                level = messages.ERROR if row.status != row.Status.COVERED else messages.SUCCESS
                self.message_user(request, f"{row.asset.code}: {row.get_status_display()}", level)
        return HttpResponseRedirect(reverse("admin:ledger_hot_wallet"))


@admin.register(ReserveProof)
class ReserveProofAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "asset",
        "block_number",
        "onchain_total",
        "liabilities_total",
        "leaf_count",
        "timestamp",
    )
    list_filter = ("asset",)
    list_select_related = ("asset",)
    exclude = ("addresses",)
