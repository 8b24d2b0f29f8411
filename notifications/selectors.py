"""Reads of notifications, webhook endpoints and their delivery logs, always for one user."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connection
from django.db.models import QuerySet
from django.utils.translation import gettext

from common.errors import NotFound
from notifications.models import Notification, WebhookDelivery, WebhookEndpoint


def notification_list_for_user(*, user: Any, unread_only: bool = False) -> QuerySet[Notification]:
    qs = Notification.objects.filter(user=user)
    if unread_only:
        qs = qs.filter(read_at__isnull=True)
    return qs


# The header's badge shows at most this many ("99+" past it). Its counts (every page, and every
# trade move's live event) stop at UNREAD_BADGE_CAP + 1 rows, so they cost the same for a bot
# that never reads its notifications as for anyone else; the API's count stays exact.
UNREAD_BADGE_CAP = 99


def notification_unread_count(*, user: Any, cap: int | None = None) -> int:
    """The user's unread notifications; with `cap`, counted up to cap + 1 (more than cap)."""
    unread = Notification.objects.filter(user=user, read_at__isnull=True)
    if cap is not None:
        return unread.values("pk")[: cap + 1].count()
    return unread.count()


def notification_unread_counts(*, user_ids: Iterable[int], cap: int) -> dict[int, int]:
    """Each user's unread notifications counted up to cap + 1, in one query: a count per user
    that stops after cap + 1 rows of the unread index (a GROUP BY would read them all)."""
    ids = sorted({int(uid) for uid in user_ids})
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT u.id, (SELECT count(*) FROM (SELECT 1 FROM notifications_notification n"
            " WHERE n.user_id = u.id AND n.read_at IS NULL LIMIT %s) AS unread)"
            " FROM unnest(%s::bigint[]) AS u(id)",
            [cap + 1, ids],
        )
        return {int(uid): int(n) for uid, n in cursor.fetchall()}


def webhook_list_for_user(*, user: Any) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(user=user)


def webhook_get_for_user(*, endpoint_id: int, user: Any) -> WebhookEndpoint:
    """One of the user's endpoints; anyone else's is not-found, not a hint it exists."""
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id, user=user).first()
    if endpoint is None:
        raise NotFound(gettext("Webhook #{endpoint_id} not found.").format(endpoint_id=endpoint_id))
    return endpoint


def delivery_list_for_endpoint(*, endpoint_id: int, user: Any) -> QuerySet[WebhookDelivery]:
    endpoint = webhook_get_for_user(endpoint_id=endpoint_id, user=user)
    return WebhookDelivery.objects.filter(endpoint=endpoint)
