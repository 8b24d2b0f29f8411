"""News that leaves the site (email, Telegram) never slows the request it comes from.

The listeners hand over `Outgoing` items (who, which category, subject, text); `outgoing_send`
keeps the ones each person's preferences allow, renders them for that person and writes one
`OutboundMessage` row per channel in the caller's transaction; each row is published on commit
through common.outbox (a daemon thread: a hanging broker doesn't hold the request either). The
worker's task `send_outbound` claims a row with a lease, makes one attempt (SMTP with
EMAIL_TIMEOUT, the Bot API with its timeouts), records it and retries with backoff; a sent row
is never sent again. The sweeper re-queues rows whose message was lost."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from common.outbox import publish_after_commit
from notifications import preferences, telegram
from notifications.email import (
    SendFailed,
    email_render,
    email_send,
    in_language,
    recipient_languages,
)
from notifications.models import OutboundMessage

logger = logging.getLogger(__name__)
Channel = OutboundMessage.Channel
Status = OutboundMessage.Status

# A claimed row is not due again for this long: more than one attempt can take (each SMTP step
# has EMAIL_TIMEOUT), so two workers never send it at once; the sweeper takes it over afterwards.
CLAIM_LEASE = timedelta(minutes=5)
CLAIM_SLACK = timedelta(seconds=1)
REQUEUE_GRACE = timedelta(seconds=30)
TELEGRAM_MAX_CHARS = 4096


@dataclass(frozen=True)
class Outgoing:
    """News for one person worth sending outside the site, if their preferences say so."""

    user_id: int
    category: str
    subject: Any  # str, or a lazy translation written out in the recipient's language
    text: Any


def outgoing_send(
    items: Iterable[Outgoing],
    *,
    users: dict[int, Any] | None = None,
    languages: dict[int, str] | None = None,
) -> list[OutboundMessage]:
    """Queue the email and Telegram messages these items call for, as each person chose (three
    queries whatever the number, one when the caller passes the `users` it has and their
    `languages` from recipient_languages); nothing is sent here."""
    items = list(items)
    if not items:
        return []
    user_ids = {item.user_id for item in items}
    if users is None or not user_ids <= users.keys():
        users = get_user_model().objects.in_bulk(user_ids)
    chosen = preferences.channels_for(user_ids=user_ids)
    chats = telegram.telegram_chats(user_ids=user_ids) if telegram.telegram_enabled() else {}
    # Each text is written out in its recipient's language (lazy texts; plain ones stay as is).
    langs = recipient_languages(user_ids) if languages is None else languages
    rows: list[OutboundMessage] = []
    for item in items:
        user = users.get(item.user_id)
        if user is None or not user.is_active:
            continue
        by_email, by_telegram = preferences.channels_of(
            chosen, user_id=user.pk, category=item.category
        )
        if by_email and user.email:
            subject, body = email_render(
                user=user,
                subject=item.subject,
                text=item.text,
                language=langs.get(user.pk, settings.LANGUAGE_CODE),
            )
            rows.append(
                OutboundMessage(
                    user=user,
                    channel=Channel.EMAIL,
                    category=item.category,
                    address=user.email,
                    subject=subject,
                    body=body,
                )
            )
        chat_id = chats.get(user.pk)
        if by_telegram and chat_id is not None:
            rows.append(
                OutboundMessage(
                    user=user,
                    channel=Channel.TELEGRAM,
                    category=item.category,
                    address=str(chat_id),
                    body=in_language(langs, user.pk, item.text, TELEGRAM_MAX_CHARS),
                )
            )
    outbound_messages_queue(rows)
    return rows


def outbound_messages_queue(rows: list[OutboundMessage]) -> None:
    """Write the rows and publish each once the caller's transaction commits."""
    if not rows:
        return
    now = timezone.now()
    for row in rows:
        row.next_attempt_at = now
    with transaction.atomic():
        OutboundMessage.objects.bulk_create(rows)
        for row in rows:
            transaction.on_commit(partial(_enqueue, row.pk))


def _enqueue(message_id: int) -> None:
    from notifications.tasks import send_outbound

    publish_after_commit(send_outbound, message_id)


def backoff_delay(attempts: int) -> timedelta:
    """How long after the n-th failed attempt the next one is due: base * 2^n, capped."""
    base = float(settings.OUTBOUND_BACKOFF_BASE_SECONDS)
    return timedelta(seconds=min(base * 2**attempts, float(settings.OUTBOUND_BACKOFF_MAX_SECONDS)))


SENDERS = {Channel.EMAIL: email_send, Channel.TELEGRAM: telegram.telegram_send}


def outbound_deliver(*, message_id: int) -> OutboundMessage | None:
    """Make one due attempt at one row: claim it (no two workers send it at once), send, record
    it. None when there was nothing to do: not due, already sent or failed, or claimed."""
    now = timezone.now()
    lease_until = now + CLAIM_LEASE
    claimed = OutboundMessage.objects.filter(
        pk=message_id, status=Status.PENDING, next_attempt_at__lte=now + CLAIM_SLACK
    ).update(next_attempt_at=lease_until)
    if not claimed:
        return None
    message = OutboundMessage.objects.get(pk=message_id)
    retry_after: float | None = None
    try:
        SENDERS[Channel(message.channel)](message)
    except SendFailed as failed:
        message.last_error = failed.error
        permanent, retry_after = failed.permanent, failed.retry_after
    else:
        message.last_error = ""
        permanent = False
    message.attempts += 1
    finished = timezone.now()
    if not message.last_error:
        message.status, message.sent_at, message.next_attempt_at = Status.SENT, finished, None
    elif permanent or message.attempts >= settings.OUTBOUND_MAX_ATTEMPTS:
        message.status, message.next_attempt_at = Status.FAILED, None
        logger.warning(
            "%s message %s failed for good after %s attempt(s): %s",
            message.channel,
            message.pk,
            message.attempts,
            message.last_error,
        )
    else:
        delay = backoff_delay(message.attempts)
        if retry_after is not None:
            delay = max(delay, timedelta(seconds=retry_after))
        message.next_attempt_at = finished + delay
    # Compare-and-set on our lease: written only if nobody took the row over meanwhile.
    OutboundMessage.objects.filter(
        pk=message.pk, status=Status.PENDING, next_attempt_at=lease_until
    ).update(
        status=message.status,
        attempts=message.attempts,
        last_error=message.last_error,
        next_attempt_at=message.next_attempt_at,
        sent_at=message.sent_at,
    )
    return message


def outbound_requeue_due() -> int:
    """Re-queue pending rows whose attempt is overdue (a lost message or a dead worker)."""
    now = timezone.now()
    rows = list(
        OutboundMessage.objects.filter(
            status=Status.PENDING, next_attempt_at__lte=now - REQUEUE_GRACE
        )
        .order_by("next_attempt_at")
        .values_list("pk", "next_attempt_at")[:1000]
    )
    requeued = 0
    for message_id, due in rows:
        # Compare-and-set on next_attempt_at: two sweepers racing queue each row once.
        if OutboundMessage.objects.filter(
            pk=message_id, status=Status.PENDING, next_attempt_at=due
        ).update(next_attempt_at=now):
            _enqueue(message_id)
            requeued += 1
    return requeued
