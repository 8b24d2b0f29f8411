"""Moderator screens for the ledger: read-only transfers and accounts (nobody, superusers
included, edits or deletes them here), deposit confirmations and withdrawal decisions that call
the services."""

from django.contrib import admin

from common.admin import ReadOnlyAdmin, messages
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


def _run(modeladmin, request, queryset, call, done: str) -> None:
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

    def get_readonly_fields(self, request, obj=None):
        return (
            ("status", "transfer", "confirmed_by")
            if obj is None
            else [f.name for f in Deposit._meta.fields]
        )

    @admin.action(description="Confirm and credit the selected deposits")
    def confirm(self, request, queryset):
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
    actions = ["confirm_sent", "reject"]

    def has_change_permission(self, request, obj=None):
        return obj is None  # the list and its actions, never the form

    @admin.action(description="Confirm sent on chain (posts the hold)")
    def confirm_sent(self, request, queryset):
        _run(
            self,
            request,
            queryset,
            lambda w: services.withdrawal_confirm(
                withdrawal_id=w.pk, txid=f"manual:{request.user.username}", actor=request.user
            ),
            "withdrawals confirmed",
        )

    @admin.action(description="Reject (voids the hold back to the user)")
    def reject(self, request, queryset):
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
    list_display = ("code", "name", "precision", "is_active")

    def get_readonly_fields(self, request, obj=None):
        # Amounts already stored were validated at this precision; changing it would re-scale them.
        return ("code", "precision") if obj else ()
