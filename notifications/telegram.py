"""Telegram through the platform's bot (the Bot API over HTTPS, TELEGRAM_API_URL).

Linking: the settings page makes a one-time code (short-lived, single use, kept as an HMAC
under SECRET_KEY); the person sends `/start CODE` to the bot; a beat task polls `getUpdates`
with an offset kept in PostgreSQL, so each update is handled once, and links the chat. News then
goes out as `sendMessage` calls from the outbox (notifications.outbound).

TELEGRAM_API_URL is an operator's setting, not user input, so the webhook egress policy
(notifications/egress.py) does not apply; what is taken from it: timeouts on every call, no
redirects, and nothing of an error's text kept (the bot token is part of every URL)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy

from notifications.email import SendFailed, in_language, recipient_languages
from notifications.models import OutboundMessage, TelegramBotState, TelegramLink

logger = logging.getLogger(__name__)
E = OutboundMessage.Error

# Easy to read and type: no 0/O, 1/I/L. 10 characters: 50 bits.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 10
MAX_UPDATES = 100

# The bot's replies (lazy): the linked person's in their language, the others in the site's.
LINKED_TEXT = gettext_lazy(
    "Linked to {username}. You'll get your important trade news here; choose which in Settings "
    "→ Notifications. Send /stop to unlink."
)
REFUSED_TEXT = gettext_lazy(
    "That code is not valid: it may be mistyped, already used or expired. Press “Link "
    "Telegram” in Settings → Notifications on the site for a new one."
)
HELP_TEXT = gettext_lazy(
    "To get your trade news here, press “Link Telegram” in Settings → Notifications on the "
    "site and send me the code: /start CODE"
)
UNLINKED_TEXT = gettext_lazy(
    "Unlinked: no more news comes here. Link again from the site's settings."
)


class BotApiError(Exception):
    """A Bot API call failed: `error` is an OutboundMessage.Error."""

    def __init__(self, error: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(error)
        self.error = error
        self.permanent = permanent
        self.retry_after = retry_after


def telegram_enabled() -> bool:
    return bool(settings.TELEGRAM_BOT_TOKEN)


def bot_call(method: str, payload: dict[str, Any]) -> Any:
    """POST one Bot API method; its `result`, or BotApiError (retry_after from a 429)."""
    url = f"{settings.TELEGRAM_API_URL.rstrip('/')}/bot{settings.TELEGRAM_BOT_TOKEN}/{method}"
    timeout = float(settings.TELEGRAM_TIMEOUT_SECONDS)
    try:
        response = requests.post(
            url, json=payload, timeout=(timeout, timeout), allow_redirects=False
        )
    except requests.Timeout:
        raise BotApiError(E.TIMEOUT) from None
    except requests.RequestException:
        raise BotApiError(E.CONNECTION_ERROR) from None
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if response.status_code == 200 and isinstance(answer, dict) and answer.get("ok"):
        return answer.get("result")
    parameters = answer.get("parameters") if isinstance(answer, dict) else None
    retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
    if response.status_code == 429 or response.status_code >= 500:
        raise BotApiError(
            E.TEMPORARY, retry_after=float(retry_after) if retry_after is not None else None
        )
    # 400 (chat not found), 401 (bad token), 403 (the person blocked the bot): not by retrying.
    raise BotApiError(E.REFUSED, permanent=True)


# --- linking --------------------------------------------------------------------------------


def _code_hash(code: str) -> str:
    normalized = code.strip().upper()
    return hmac.new(
        settings.SECRET_KEY.encode(), b"telegram-link:" + normalized.encode(), hashlib.sha256
    ).hexdigest()


def telegram_link_code_create(*, user: Any) -> tuple[str, datetime]:
    """A new one-time code for linking (any earlier one stops working); shown once, stored as an
    HMAC. Returns the code and when it expires."""
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    expires_at = timezone.now() + timedelta(minutes=settings.TELEGRAM_LINK_CODE_MINUTES)
    TelegramLink.objects.update_or_create(
        user=user, defaults={"code_hash": _code_hash(code), "code_expires_at": expires_at}
    )
    return code, expires_at


def telegram_unlink(*, user: Any) -> bool:
    """Forget the person's chat (and any code not yet used); True if a chat was linked."""
    deleted = TelegramLink.objects.filter(user=user).delete()[0]
    return bool(deleted)


def telegram_chat_of(*, user: Any) -> int | None:
    return TelegramLink.objects.filter(user=user).values_list("chat_id", flat=True).first()


def telegram_chats(*, user_ids: set[int]) -> dict[int, int]:
    """The linked chat of each of these people who has one: one query."""
    rows = TelegramLink.objects.filter(user_id__in=user_ids, chat_id__isnull=False)
    return {user_id: chat for user_id, chat in rows.values_list("user_id", "chat_id") if chat}


def _link(code: str, chat_id: int) -> str:
    """`/start CODE` from a private chat: the answer to send back. Inside the poll's
    transaction; the code is spent on success, so a second use finds nothing."""
    found = (
        TelegramLink.objects.select_for_update()
        .select_related("user")
        .filter(code_hash=_code_hash(code), code_expires_at__gt=timezone.now())
        .exclude(code_hash="")
        .first()
        if code
        else None
    )
    if found is None:
        return str(REFUSED_TEXT)
    # The chat proved it can read this account's code: it leaves any other account it was on.
    others = TelegramLink.objects.filter(chat_id=chat_id).exclude(pk=found.pk)
    _forget_chat_owners(others)
    others.update(chat_id=None, linked_at=None)
    found.chat_id = chat_id
    found.linked_at = timezone.now()
    found.code_hash = ""
    found.code_expires_at = None
    found.save(update_fields=["chat_id", "linked_at", "code_hash", "code_expires_at"])
    languages = recipient_languages([found.user_id])
    return in_language(languages, found.user_id, LINKED_TEXT).format(username=found.user.username)


def _forget_chat_owners(links: Any) -> None:
    """An UPDATE sends no signal: the cached chats of these links' owners are forgotten
    (notifications.recipients), now and on commit."""
    from notifications.recipients import recipients_forget

    recipients_forget(links.values_list("user_id", flat=True))


def _answer(update: dict[str, Any]) -> tuple[int, str] | None:
    """(chat id, answer) for a message the bot answers; None for anything else."""
    message = update.get("message")
    if not isinstance(message, dict):
        return None
    chat = message.get("chat") or {}
    chat_id, text = chat.get("id"), message.get("text")
    if not isinstance(chat_id, int) or not isinstance(text, str):
        return None
    if chat.get("type") != "private":
        return None  # linking is between a person and the bot, never a group
    command, _, argument = text.strip().partition(" ")
    command = command.split("@", 1)[0].lower()  # "/start@PlatformBot" in some clients
    if command == "/start":
        return chat_id, (_link(argument.strip(), chat_id) if argument.strip() else str(HELP_TEXT))
    if command == "/stop":
        linked = TelegramLink.objects.filter(chat_id=chat_id)
        _forget_chat_owners(linked)
        unlinked = linked.update(chat_id=None, linked_at=None)
        return chat_id, str(UNLINKED_TEXT if unlinked else HELP_TEXT)
    if command == "/help":
        return chat_id, str(HELP_TEXT)
    return None


def telegram_updates_poll() -> int:
    """Fetch the bot's new updates and handle each once: the offset and every link they make
    commit together, so a crash re-reads them and a second poller at the same time skips.
    Returns how many updates were handled."""
    if not telegram_enabled():
        return 0
    # get_or_create survives a second poller creating it first (it reads it again).
    TelegramBotState.objects.get_or_create(pk=1)
    with transaction.atomic():
        state = TelegramBotState.objects.select_for_update(skip_locked=True).filter(pk=1).first()
        if state is None:
            return 0  # another poll is running
        updates = bot_call(
            "getUpdates",
            {
                "offset": state.last_update_id + 1,
                "limit": MAX_UPDATES,
                "timeout": 0,
                "allowed_updates": ["message"],
            },
        )
        handled = 0
        answers: list[OutboundMessage] = []
        for update in sorted(updates or [], key=lambda u: u.get("update_id", 0)):
            update_id = update.get("update_id")
            if not isinstance(update_id, int) or update_id <= state.last_update_id:
                continue
            answer = _answer(update)
            if answer is not None:
                chat_id, text = answer
                answers.append(
                    OutboundMessage(
                        channel=OutboundMessage.Channel.TELEGRAM, address=str(chat_id), body=text
                    )
                )
            state.last_update_id = update_id
            handled += 1
        state.save(update_fields=["last_update_id"])
        from notifications.outbound import outbound_messages_queue  # it sends through this module

        outbound_messages_queue(answers)
    return handled


# --- sending --------------------------------------------------------------------------------


def telegram_send(message: OutboundMessage) -> None:
    """One sendMessage for one outbox row; raises SendFailed with the error's class. News for a
    person goes only to the chat still linked to them."""
    if not telegram_enabled():
        raise SendFailed(E.NOT_CONFIGURED, permanent=True)
    if (
        message.user_id is not None
        and not TelegramLink.objects.filter(
            user_id=message.user_id, chat_id=int(message.address)
        ).exists()
    ):
        raise SendFailed(E.UNLINKED, permanent=True)
    try:
        bot_call(
            "sendMessage",
            {
                "chat_id": int(message.address),
                "text": message.body,
                "disable_web_page_preview": True,
            },
        )
    except BotApiError as failed:
        raise SendFailed(
            failed.error, permanent=failed.permanent, retry_after=failed.retry_after
        ) from None
