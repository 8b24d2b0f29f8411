"""Webhook, email and Telegram tasks: load by id, call one service, own only the retry policy."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.exceptions import Retry
from django.db import OperationalError
from django.utils import timezone

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


@shared_task(
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    max_retries=5,
    # common.outbox holds a message open this long for more ids: one task writes the news of
    # the moves of many requests of a web process (their live events went out at once). A
    # second: the worker's CPU a move halves from batches of 7 to batches of 20
    # (BENCHMARKS.md), and the news (an email, a badge) is as good a second later.
    outbox_coalesce=1.0,
)
def announce_trade_moves(event_ids: list[int]) -> int:
    """The news of moves made one by one (a user's request): their notifications, emails,
    Telegram messages and webhooks, and the badges that announce them, once each."""
    from notifications.live import events as live_events

    with live_events.wakes_merged():  # the badges of the batch: one wake-up per socket
        return len(services.trade_news_write(event_ids=event_ids))


@shared_task(acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def notify_trade_events(event_ids: list[int]) -> int:
    """The notifications of a settlement batch, off the settlement worker's path, then its
    live events (after the news they announce), from one read of the trades."""
    from notifications.live import events as live_events
    from notifications.live import listeners as live

    with live_events.wakes_merged():  # the news' badges and the moves' events: one wake-up
        events = services.trade_news_write(event_ids=event_ids)
        if events:
            live.on_trade_transitions(events)
    return len(events)


@shared_task(acks_late=True)
def sweep_trade_news() -> int:
    """The news of moves whose task never came (a lost broker message, the broker down)."""
    return len(services.trade_news_overdue())


# --- email and Telegram (notifications.outbound) ---


@shared_task(
    bind=True,
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    # common.outbox holds a message open for 1 s for more ids: one task for the news of many
    # requests (a second later matters nothing for an email).
    outbox_coalesce=1.0,
)
def send_outbound_many(self: Any, message_ids: list[int]) -> dict[str, int]:
    """One attempt at each due row of a batch (common.outbox merges the ids of many commits into
    one message); the failed ones are re-queued, each after its row's backoff (the row counts
    the attempts and knows when to give up). Returns how many rows ended in each status."""
    messages = outbound.outbound_deliver_many(message_ids=message_ids)
    for countdown, ids in outbound.outbound_retries(messages):
        _retry_later(self, ids, countdown)
    counts: dict[str, int] = {"skipped": len(set(message_ids)) - len(messages)}
    for message in messages:
        counts[message.status] = counts.get(message.status, 0) + 1
    return counts


def _retry_later(task: Any, message_ids: list[int], countdown: float) -> None:
    """These rows again in `countdown` seconds, on the queue this batch came from."""
    if task.request.is_eager:
        return  # in-process tasks can't wait: the sweeper sends the retry when it is due
    info = task.request.delivery_info or {}
    if info.get("exchange") == "" and info.get("routing_key"):
        route = {"queue": info["routing_key"]}  # the default exchange: the queue's own name
    else:
        route = {k: info[k] for k in ("exchange", "routing_key") if info.get(k) is not None}
    try:
        task.apply_async((message_ids,), countdown=countdown, **route)
    except Exception:
        logger.warning("could not schedule retry of messages %s; the sweeper will", message_ids)


@shared_task(bind=True, acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True)
def send_outbound(self: Any, message_id: int) -> str:
    """One attempt at one email or Telegram message (messages published before
    send_outbound_many; the sweeper and new rows use that); a failed one is retried by Celery
    after the row's backoff."""
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
