from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject


def unread(request: HttpRequest) -> dict[str, Any]:
    """The header's unread count, counted only when a page shows it (up to the badge's cap:
    more than UNREAD_BADGE_CAP shows as "99+")."""

    def count() -> int:
        from notifications.selectors import UNREAD_BADGE_CAP, notification_unread_count

        user = getattr(request, "user", None)
        if not (user and user.is_authenticated):
            return 0
        return notification_unread_count(user=user, cap=UNREAD_BADGE_CAP)

    return {"unread_notifications": SimpleLazyObject(count)}
