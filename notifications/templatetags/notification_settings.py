"""The settings page's "Notifications" section (the page is accounts'; preferences and the
Telegram link are notifications', a layer above, so the template asks here)."""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings

from notifications import preferences, telegram
from notifications.models import TelegramLink

register = template.Library()


@register.simple_tag
def notification_settings_of(user: Any) -> dict[str, Any]:
    """{"preferences": each category with its email and Telegram choice, "telegram": {"enabled",
    "bot_name", "linked", "linked_at"}}."""
    link = TelegramLink.objects.filter(user=user, chat_id__isnull=False).first()
    return {
        "preferences": preferences.preferences_for_user(user=user),
        "telegram": {
            "enabled": telegram.telegram_enabled(),
            "bot_name": settings.TELEGRAM_BOT_NAME,
            "linked": link is not None,
            "linked_at": link.linked_at if link else None,
        },
    }
