"""The chain's outgoing transactions in the admin (ledger/admin.py imports this module): every
signed transaction with its nonce, hash, gas, confirmations and status, and the withdrawals list
with each one's chain state. Withdrawals the sequencer has signed are its own: the manual
"confirm sent" and "reject" actions refuse them (the chain decides)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.cache import cache
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from common.admin import ReadOnlyAdmin
from common.money import fmt
from ledger.admin import WithdrawalAdmin
from ledger.evm.config import confirmations_required, enabled
from ledger.evm.fees import wei_to_eth
from ledger.evm.models import ChainTransaction
from ledger.models import Withdrawal

TX = ChainTransaction


def _head_block() -> int | None:
    """The node's latest block (cached a few seconds: one call per page, not per row)."""
    if not enabled():
        return None
    key = f"evm-admin-head:{settings.EVM_RPC_URL}"
    head = cache.get(key)
    if head is None:
        try:
            from ledger.evm.rpc import web3

            head = int(web3().eth.block_number)
        except Exception:
            return None
        cache.set(key, head, 5)
    return int(head)


def tx_link(tx: ChainTransaction) -> SafeString:
    """The hash, linked to EVM_EXPLORER_TX_URL ("https://etherscan.io/tx/{}") when set."""
    short = f"{tx.tx_hash[:10]}…{tx.tx_hash[-6:]}"
    if settings.EVM_EXPLORER_TX_URL:
        return format_html(
            '<a class="mono" href="{}" title="{}">{}</a>',
            settings.EVM_EXPLORER_TX_URL.format(tx.tx_hash),
            tx.tx_hash,
            short,
        )
    return format_html('<span class="mono" title="{}">{}</span>', tx.tx_hash, short)


def confirmations(tx: ChainTransaction, head: int | None) -> str:
    if tx.block_number is None or head is None:
        return "—"
    return f"{max(head - int(tx.block_number) + 1, 0)}/{confirmations_required()}"


def gas_text(tx: ChainTransaction) -> str:
    if tx.gas_used is None:
        most = wei_to_eth(int(tx.gas_limit) * int(tx.max_fee_per_gas))
        return f"≤ {fmt(most, 18).rstrip('0')} ETH"
    return f"{fmt(wei_to_eth(tx.fee_paid_wei), 18).rstrip('0')} ETH"


@admin.register(ChainTransaction)
class ChainTransactionAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "asset",
        "amount",
        "from_address",
        "to_address",
        "nonce",
        "hash",
        "gas",
        "confirmations_text",
        "withdrawal",
        "created_at",
    )
    list_filter = ("kind", "status", "asset")
    search_fields = ("tx_hash", "from_address", "to_address")
    list_select_related = ("asset", "withdrawal")

    @admin.display(description="tx hash")
    def hash(self, tx: ChainTransaction) -> SafeString:
        return tx_link(tx)

    @admin.display(description="gas fee")
    def gas(self, tx: ChainTransaction) -> str:
        return gas_text(tx)

    @admin.display(description="confirmations")
    def confirmations_text(self, tx: ChainTransaction) -> str:
        return confirmations(tx, _head_block())


class ChainWithdrawalAdmin(WithdrawalAdmin):
    list_display = (  # type: ignore[assignment]  # the base's columns, with the chain's
        "id",
        "user",
        "asset",
        "amount",
        "fee",
        "address",
        "status",
        "chain_state",
        "created_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Withdrawal]:
        return (
            super()
            .get_queryset(request)
            .prefetch_related(
                Prefetch("chain_transactions", queryset=ChainTransaction.objects.order_by("pk"))
            )
        )

    @admin.display(description="on chain")
    def chain_state(self, w: Withdrawal) -> SafeString | str:
        """Each signed transaction: nonce, hash, status, gas, confirmations."""
        txs = list(w.chain_transactions.all())
        if not txs:
            return w.txid or "—"
        head = _head_block()
        return format_html_join(
            mark_safe("<br>"),
            "nonce {} · {} · {} · gas {} · {} conf.",
            (
                (
                    tx.nonce,
                    tx_link(tx),
                    tx.get_status_display(),
                    gas_text(tx),
                    confirmations(tx, head),
                )
                for tx in txs
            ),
        )

    def _not_on_chain(
        self, request: HttpRequest, queryset: QuerySet[Withdrawal]
    ) -> QuerySet[Withdrawal]:
        signed = queryset.filter(chain_transactions__isnull=False).distinct()
        for w in signed:
            self.message_user(
                request,
                f"#{w.pk}: the sequencer has signed it; the chain decides (see its transactions).",
                messages.ERROR,
            )
        return queryset.exclude(pk__in=signed.values("pk"))

    @admin.action(description="Confirm sent on chain (posts the hold)")
    def confirm_sent(self, request: HttpRequest, queryset: QuerySet[Withdrawal]) -> None:
        super().confirm_sent(request, self._not_on_chain(request, queryset))

    @admin.action(description="Reject (voids the hold back to the user)")
    def reject(self, request: HttpRequest, queryset: QuerySet[Withdrawal]) -> None:
        super().reject(request, self._not_on_chain(request, queryset))


admin.site.unregister(Withdrawal)
admin.site.register(Withdrawal, ChainWithdrawalAdmin)
