from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject


def unread(request: HttpRequest) -> dict[str, Any]:
    """The header's unread count, counted only when a page shows it."""

    def count() -> int:
        from notifications.selectors import notification_unread_count

        user = getattr(request, "user", None)
        return notification_unread_count(user=user) if user and user.is_authenticated else 0

    return {"unread_notifications": SimpleLazyObject(count)}
