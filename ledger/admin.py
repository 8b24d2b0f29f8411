"""Moderator screens for the ledger: read-only transfers and accounts (nobody, superusers
included, edits or deletes them here), deposit confirmations and withdrawal decisions that call
the services."""

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from common.admin import ReadOnlyAdmin
from common.errors import ApplicationError
from ledger import services
from ledger.models import Asset, Deposit, LedgerAccount, Transfer, Withdrawal


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = (
        "code",
        "kind",
        "asset",
        "user",
        "credits_posted",
        "debits_posted",
        "debits_pending",
    )
    list_filter = ("kind", "asset")
    search_fields = ("code", "user__username")


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "seq",
        "kind",
        "flags",
        "asset",
        "amount",
        "debit_account",
        "credit_account",
        "created_at",
    )
    list_filter = ("kind", "flags", "asset")
    search_fields = ("idempotency_key", "debit_account__code", "credit_account__code")
    list_select_related = ("asset", "debit_account", "credit_account")


def _run(
    modeladmin: "admin.ModelAdmin[Any]",
    request: HttpRequest,
    queryset: QuerySet[Any],
    call: Callable[[Any], object],
    done: str,
) -> None:
    ok = 0
    for obj in queryset:
        try:
            call(obj)
            ok += 1
        except ApplicationError as exc:
            modeladmin.message_user(request, f"#{obj.pk}: {exc.message}", messages.ERROR)
    if ok:
        modeladmin.message_user(request, f"{ok} {done}.", messages.SUCCESS)


@admin.register(Deposit)
class DepositAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "asset", "amount", "reference", "status", "created_at")
    list_filter = ("status", "asset")
    actions = ["confirm"]

    def get_readonly_fields(
        self, request: HttpRequest, obj: Deposit | None = None
    ) -> list[str] | tuple[str, ...]:
        return (
            ("status", "transfer", "confirmed_by")
            if obj is None
            else [f.name for f in Deposit._meta.fields]
        )

    @admin.action(description="Confirm and credit the selected deposits")
    def confirm(self, request: HttpRequest, queryset: QuerySet[Deposit]) -> None:
        _run(
            self,
            request,
            queryset,
            lambda d: services.deposit_confirm(deposit_id=d.pk, actor=request.user),
            "deposits credited",
        )


@admin.register(Withdrawal)
class WithdrawalAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "asset", "amount", "address", "status", "txid", "created_at")
    list_filter = ("status", "asset")
    actions = ["confirm_sent", "reject", "release_hold"]

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return obj is None  # the list and its actions, never the form

    @admin.action(description="Confirm sent on chain (posts the hold)")
    def confirm_sent(self, request: HttpRequest, queryset: QuerySet[Withdrawal]) -> None:
        _run(
            self,
            request,
            queryset,
            lambda w: services.withdrawal_confirm(
                withdrawal_id=w.pk, txid=f"manual:{request.user.username}", actor=request.user
            ),
            "withdrawals confirmed",
        )

    @admin.action(description="Release the hold (the account was cleared): send it")
    def release_hold(self, request: HttpRequest, queryset: QuerySet[Withdrawal]) -> None:
        _run(
            self,
            request,
            queryset,
            lambda w: services.withdrawal_release_hold(withdrawal_id=w.pk, actor=request.user),
            "withdrawals released",
        )

    @admin.action(description="Reject (voids the hold back to the user)")
    def reject(self, request: HttpRequest, queryset: QuerySet[Withdrawal]) -> None:
        _run(
            self,
            request,
            queryset,
            lambda w: services.withdrawal_reject(
                withdrawal_id=w.pk,
                reason=f"rejected by {request.user.username}",
                actor=request.user,
            ),
            "withdrawals rejected",
        )


@admin.register(Asset)
class AssetAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "precision", "display_precision", "is_active")
    list_editable = ("display_precision",)

    def get_readonly_fields(
        self, request: HttpRequest, obj: Asset | None = None
    ) -> list[str] | tuple[str, ...]:
        # Amounts already stored were validated at this precision; changing it would re-scale them.
        return ("code", "precision") if obj else ()


# The chain's transactions, and the withdrawals list with their chain state (ledger/evm/admin.py).
import ledger.evm.admin  # noqa: E402

# The chain deposits' screens live beside their code; imported so the admin registers them.
import ledger.evm.deposits_admin  # noqa: E402, F401

# The reserves' screens live beside their code (the hot wallet page among them).
from ledger.evm import reserves_admin as reserves_admin  # noqa: E402
