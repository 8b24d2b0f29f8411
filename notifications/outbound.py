"""News that leaves the site (email, Telegram) never slows the request it comes from.

The listeners hand over `Outgoing` items (who, which category, subject, text); `outgoing_send`
keeps the ones each person's preferences allow, renders them for that person and writes one
`OutboundMessage` row per channel in the caller's transaction; the rows' ids are published on
commit through common.outbox (a daemon thread: a hanging broker doesn't hold the request either),
as one `send_outbound_many` message that the publisher may merge with other transactions' ids.
The worker claims the batch's due rows with a lease, makes one attempt at each (SMTP with
EMAIL_TIMEOUT, the Bot API with its timeouts; one failing does not stop the others), records
every outcome in one statement and re-queues the failed ones after their own backoff; a sent row
is never sent again. The sweeper re-queues rows whose message was lost, in batches."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from itertools import groupby
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from common.outbox import publish_after_commit
from common.prepared import insert
from notifications import preferences, telegram
from notifications.email import (
    SendFailed,
    email_render,
    email_send,
    in_language,
    recipient_languages,
)
from notifications.models import OutboundMessage
from notifications.recipients import Recipient

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
    recipients: dict[int, Recipient] | None = None,
) -> list[OutboundMessage]:
    """Queue the email and Telegram messages these items call for, as each person chose (three
    queries whatever the number, one when the caller passes the `users` it has and their
    `languages` from recipient_languages, none when it also passes their `recipients` from
    notifications.recipients); nothing is sent here."""
    items = list(items)
    if not items:
        return []
    user_ids = {item.user_id for item in items}
    if users is None or not user_ids <= users.keys():
        users = get_user_model().objects.in_bulk(user_ids)
    chosen: dict[tuple[int, str], tuple[bool, bool]]
    chats: dict[int, int]
    if recipients is not None and user_ids <= recipients.keys():
        chosen = {
            (uid, category): choice
            for uid in user_ids
            for category, choice in recipients[uid].choices.items()
        }
        chats = {
            uid: chat
            for uid in user_ids
            if (chat := recipients[uid].telegram_chat) is not None and telegram.telegram_enabled()
        }
    else:
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
    """Write the rows and publish their ids (one message) once the caller's transaction commits."""
    if not rows:
        return
    now = timezone.now()
    for row in rows:
        row.next_attempt_at = now
    # No savepoint inside the caller's transaction: a failure here fails the whole of it (no
    # caller goes on without its rows); outside one, this is the transaction.
    with transaction.atomic(savepoint=False):
        insert(rows)  # common.prepared: bulk_create's INSERT, built once
        transaction.on_commit(partial(_enqueue_many, [row.pk for row in rows]))


def _enqueue_many(message_ids: list[int]) -> None:
    from notifications.tasks import send_outbound_many

    publish_after_commit(send_outbound_many, message_ids)


def backoff_delay(attempts: int) -> timedelta:
    """How long after the n-th failed attempt the next one is due: base * 2^n, capped."""
    base = float(settings.OUTBOUND_BACKOFF_BASE_SECONDS)
    return timedelta(seconds=min(base * 2**attempts, float(settings.OUTBOUND_BACKOFF_MAX_SECONDS)))


SENDERS = {Channel.EMAIL: email_send, Channel.TELEGRAM: telegram.telegram_send}


def outbound_deliver(*, message_id: int) -> OutboundMessage | None:
    """Make one due attempt at one row: claim it (no two workers send it at once), send, record
    it. None when there was nothing to do: not due, already sent or failed, or claimed."""
    delivered = outbound_deliver_many(message_ids=[message_id])
    return delivered[0] if delivered else None


def outbound_deliver_many(*, message_ids: list[int]) -> list[OutboundMessage]:
    """Make one due attempt at each of these rows: claim the due ones with one lease (a
    compare-and-set: no two workers send a row at once; a row not due, finished or claimed by
    another worker is skipped), send each (one failing doesn't stop the others), then record
    every outcome in one statement, each row with its own backoff. Returns the rows attempted,
    in id order, as recorded."""
    if not message_ids:
        return []
    now = timezone.now()
    lease_until = now + CLAIM_LEASE
    claimed = _claim(sorted(set(message_ids)), due_by=now + CLAIM_SLACK, lease_until=lease_until)
    if not claimed:
        return []
    messages = list(OutboundMessage.objects.filter(pk__in=claimed).order_by("pk"))
    attempted: list[OutboundMessage] = []
    for message in messages:
        retry_after: float | None = None
        try:
            SENDERS[Channel(message.channel)](message)
        except SendFailed as failed:
            message.last_error = failed.error
            permanent, retry_after = failed.permanent, failed.retry_after
        except Exception:
            # Not a failure of the message's own (a bug, a database error in the sender): the
            # row keeps its lease, unrecorded, and the sweeper takes it over after the lease.
            logger.exception("%s message %s: unexpected error", message.channel, message.pk)
            continue
        else:
            message.last_error = ""
            permanent = False
        _outcome(message, permanent=permanent, retry_after=retry_after)
        attempted.append(message)
    if attempted:
        _record(attempted, lease_until=lease_until)
    return attempted


# The outcomes of a batch in one plain statement: the ORM's bulk_update builds a CASE per
# column and row, which cost the worker more than the sending (bench/load.py, py-spy).
_RECORD_SQL = """
UPDATE notifications_outboundmessage AS m
SET status = v.status, attempts = v.attempts, last_error = v.last_error,
    next_attempt_at = v.next_attempt_at, sent_at = v.sent_at
FROM (VALUES {rows}) AS v(id, status, attempts, last_error, next_attempt_at, sent_at)
WHERE m.id = v.id AND m.status = %s AND m.next_attempt_at = %s
"""
_RECORD_ROW = "(%s::bigint, %s::varchar, %s::integer, %s::text, %s::timestamptz, %s::timestamptz)"


def _record(messages: list[OutboundMessage], *, lease_until: Any) -> None:
    """Write each attempted row's outcome, compare-and-set on our lease: only where nobody took
    the row over meanwhile (still pending, still leased until `lease_until`)."""
    adapt = connection.ops.adapt_datetimefield_value
    params: list[Any] = []
    for m in messages:
        params += [
            m.pk,
            m.status,
            m.attempts,
            m.last_error,
            adapt(m.next_attempt_at),
            adapt(m.sent_at),
        ]
    sql = _RECORD_SQL.format(rows=", ".join([_RECORD_ROW] * len(messages)))
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, Status.PENDING.value, adapt(lease_until)])


def _claim(message_ids: list[int], *, due_by: Any, lease_until: Any) -> list[int]:
    """Lease the due pending rows among these ids in one statement; the ids it leased. A row
    another worker updates meanwhile is re-checked after its commit (PostgreSQL), so each row
    is leased by one worker only."""
    table = OutboundMessage._meta.db_table
    marks = ", ".join(["%s"] * len(message_ids))
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET next_attempt_at = %s "  # noqa: S608 (the table name, placeholders)
            f"WHERE id IN ({marks}) AND status = %s AND next_attempt_at <= %s RETURNING id",
            [adapt(lease_until), *message_ids, Status.PENDING.value, adapt(due_by)],
        )
        return [row[0] for row in cursor.fetchall()]


def _outcome(message: OutboundMessage, *, permanent: bool, retry_after: float | None) -> None:
    """Set the row's fields after one attempt (message.last_error says how it went)."""
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


def outbound_retries(messages: list[OutboundMessage]) -> list[tuple[float, list[int]]]:
    """The rows among these that wait for another attempt, as (seconds from now, ids) groups:
    rows due within a tenth of a second of each other go out in one message, when the last of
    them is due."""
    now = timezone.now()
    waiting = sorted(
        (max(0.0, (m.next_attempt_at - now).total_seconds()), m.pk)
        for m in messages
        if m.status == Status.PENDING and m.next_attempt_at is not None
    )
    groups: list[tuple[float, list[int]]] = []
    for _, group in groupby(waiting, key=lambda pair: int(pair[0] * 10)):
        pairs = list(group)
        groups.append((pairs[-1][0], [pk for _, pk in pairs]))
    return groups


def outbound_requeue_due() -> int:
    """Re-queue pending rows whose attempt is overdue (a lost message or a dead worker), up to a
    thousand at a time: one statement takes them over (two sweepers racing queue each row once),
    and their ids go out in batches."""
    now = timezone.now()
    ids = list(
        OutboundMessage.objects.filter(
            status=Status.PENDING, next_attempt_at__lte=now - REQUEUE_GRACE
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:1000]
    )
    if not ids:
        return 0
    # The same overdue condition again, in the UPDATE: a row another sweeper (or a worker) has
    # taken meanwhile is no longer overdue, so it is not re-queued twice.
    requeued = _claim(sorted(ids), due_by=now - REQUEUE_GRACE, lease_until=now)
    for start in range(0, len(requeued), 500):
        _enqueue_many(requeued[start : start + 500])
    return len(requeued)
