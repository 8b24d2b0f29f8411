"""Webhook, email and Telegram tasks: load by id, call one service, own only the retry policy."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.exceptions import Retry
from django.db import OperationalError
from django.utils import timezone

from escrow.models import EscrowEvent
from notifications import outbound, services, telegram
from notifications.models import OutboundMessage, WebhookDelivery

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=10,
)
def deliver_webhook(self: Any, delivery_id: int) -> str:
    delivery = services.webhook_deliver(delivery_id=delivery_id)
    if delivery is None:
        return "skipped"  # not due, finished, or another worker holds it
    if delivery.status == WebhookDelivery.Status.PENDING and delivery.next_attempt_at:
        if self.request.is_eager:
            # In-process tasks (make run without a broker) can't wait: a countdown would run
            # at once. The periodic sweep sends the retry when it is due.
            return delivery.status
        countdown = max(0.0, (delivery.next_attempt_at - timezone.now()).total_seconds())
        try:
            deliver_webhook.apply_async((delivery_id,), countdown=countdown)
        except Exception:
            logger.warning("could not schedule retry of delivery %s; the sweeper will", delivery_id)
    return delivery.status


@shared_task(acks_late=True)
def sweep_webhooks() -> int:
    """Re-queue overdue pending deliveries: a lost broker message loses nothing."""
    return services.webhook_deliveries_requeue_due()


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def notify_trade_events(event_ids: list[int]) -> int:
    """The notifications of a settlement batch, off the settlement worker's path."""
    events = list(EscrowEvent.objects.filter(pk__in=event_ids).order_by("pk"))
    services.notify_trade_events(events=events)
    return len(events)


# --- email and Telegram (notifications.outbound) ---


@shared_task(bind=True, acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True)
def send_outbound(self: Any, message_id: int) -> str:
    """One attempt at one email or Telegram message; a failed one is retried by Celery after
    the row's backoff (the row counts the attempts and knows when to give up)."""
    message = outbound.outbound_deliver(message_id=message_id)
    if message is None:
        return "skipped"  # not due, finished, or another worker holds it
    if message.status == OutboundMessage.Status.PENDING and message.next_attempt_at:
        countdown = max(0.0, (message.next_attempt_at - timezone.now()).total_seconds())
        try:
            raise self.retry(countdown=countdown, max_retries=None)
        except Retry:
            raise
        except Exception:
            logger.warning("could not schedule retry of message %s; the sweeper will", message_id)
    return message.status


@shared_task(acks_late=True)
def sweep_outbound() -> int:
    """Re-queue overdue pending emails and Telegram messages: a lost broker message loses nothing."""
    return outbound.outbound_requeue_due()


@shared_task(acks_late=True)
def poll_telegram() -> int:
    """The bot's new updates (`/start CODE` links a chat); nothing when no bot is configured."""
    return telegram.telegram_updates_poll()
