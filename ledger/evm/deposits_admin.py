"""Moderators' view of the chain deposits: each with its chain state (block, confirmations on the
watcher's view, tx hash) and links to the user, the ledger deposit and a block explorer. Read
only: the watcher alone writes them (ledger.admin imports this module)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from common.admin import ReadOnlyAdmin
from ledger.evm.config import confirmations_required
from ledger.evm.deposits import chain_tip_number
from ledger.evm.models import ChainBlock, ChainDeposit


def _explorer_tx(tx_hash: str) -> str:
    """The hash, linked to EVM_EXPLORER_TX_URL ("https://etherscan.io/tx/{}") when set."""
    template = str(settings.EVM_EXPLORER_TX_URL)
    return (
        format_html('<a href="{}">{}</a>', template.format(tx_hash), tx_hash)
        if template
        else tx_hash
    )


@admin.register(ChainDeposit)
class ChainDepositAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "user_link",
        "asset",
        "amount",
        "status",
        "confirmations",
        "block",
        "tx",
        "ledger_deposit",
        "seen_at",
        "credited_at",
    )
    list_filter = ("status", "asset", "chain")
    search_fields = ("tx_hash", "address", "sender", "user__username")
    list_select_related = ("asset", "user", "deposit")
    readonly_fields = ("confirmations", "tx", "block", "ledger_deposit")

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):  # type: ignore[no-untyped-def,type-arg]
        self._tip = chain_tip_number()  # once per page, not per row
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):  # type: ignore[no-untyped-def]
        self._tip = chain_tip_number()
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="user", ordering="user__username")
    def user_link(self, obj: ChainDeposit) -> str:
        url = reverse("admin:auth_user_change", args=[obj.user_id])
        return format_html('<a href="{}">{}</a>', url, obj.user)

    @admin.display(description="confirmations")
    def confirmations(self, obj: ChainDeposit) -> str:
        required = confirmations_required()
        tip = getattr(self, "_tip", None)
        if obj.status != ChainDeposit.Status.SEEN or tip is None:
            return "—"
        return f"{max(0, min(required, tip - obj.block_number + 1))}/{required}"

    @admin.display(description="block", ordering="block_number")
    def block(self, obj: ChainDeposit) -> str:
        return format_html("#{}", obj.block_number)

    @admin.display(description="transaction")
    def tx(self, obj: ChainDeposit) -> str:
        suffix = "" if obj.log_index < 0 else f" (log {obj.log_index})"
        return format_html("{}{}", _explorer_tx(obj.tx_hash), suffix)

    @admin.display(description="ledger deposit")
    def ledger_deposit(self, obj: ChainDeposit) -> str:
        if obj.deposit_id is None:
            return "—"
        url = reverse("admin:ledger_deposit_change", args=[obj.deposit_id])
        return format_html('<a href="{}">#{}</a>', url, obj.deposit_id)


@admin.register(ChainBlock)
class ChainBlockAdmin(ReadOnlyAdmin):
    list_display = ("number", "hash", "parent_hash", "chain", "seen_at")
    list_filter = ("chain",)
    search_fields = ("hash",)
