"""Reads of notifications, webhook endpoints and their delivery logs, always for one user."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext

from common.errors import NotFound
from notifications.models import Notification, WebhookDelivery, WebhookEndpoint


def notification_list_for_user(*, user: Any, unread_only: bool = False) -> QuerySet[Notification]:
    qs = Notification.objects.filter(user=user)
    if unread_only:
        qs = qs.filter(read_at__isnull=True)
    return qs


def notification_unread_count(*, user: Any) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).count()


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
