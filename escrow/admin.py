from django.contrib import admin

from escrow.models import EscrowEvent, Settlement


@admin.register(EscrowEvent)
class EscrowEventAdmin(admin.ModelAdmin):
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

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Settlement)
class SettlementAdmin(EscrowEventAdmin):
    list_display = ("trade", "kind", "status", "attempts", "queued_at", "settled_at")
    list_filter = ("kind", "status")
