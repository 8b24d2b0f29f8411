from typing import Any

from django.contrib import admin
from django.db import models

from common.admin import ReadOnlyAdmin
from notifications.models import (
    Notification,
    OutboundMessage,
    TelegramLink,
    WebhookDelivery,
    WebhookEndpoint,
)


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("user", "kind", "trade", "text", "created_at", "read_at")
    list_filter = ("kind",)
    search_fields = ("user__username", "text")
    raw_id_fields = ("user", "trade")
    date_hierarchy = "created_at"


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "url", "events", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("user__username", "url")
    raw_id_fields = ("user",)
    # The signing secret is the user's: moderators may disable an endpoint, never read it.
    exclude = ("secret",)
    readonly_fields = ("user", "created_at")
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def has_add_permission(self, request: Any) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "endpoint",
        "event",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "created_at",
        "delivered_at",
    )
    list_filter = ("status", "event")
    search_fields = ("endpoint__url", "endpoint__user__username")
    list_select_related = ("endpoint",)


@admin.register(OutboundMessage)
class OutboundMessageAdmin(ReadOnlyAdmin):
    # The bodies stay out of the list: they are the person's trade news.
    list_display = (
        "id",
        "channel",
        "user",
        "category",
        "status",
        "attempts",
        "last_error",
        "next_attempt_at",
        "created_at",
        "sent_at",
    )
    list_filter = ("channel", "status", "last_error")
    search_fields = ("user__username",)
    list_select_related = ("user",)


@admin.register(TelegramLink)
class TelegramLinkAdmin(ReadOnlyAdmin):
    list_display = ("user", "chat_id", "linked_at")
    search_fields = ("user__username",)
    exclude = ("code_hash",)
