"""What the news of a trade move needs to know about each person it goes to, read from Redis
(issue 17: a lean trade path): their active webhook endpoints and the events each wants, their
choices of channels (NotificationPreference), their linked Telegram chat, and their language.
These change rarely and are read on every move: from the cache it is one Redis round trip for
both parties instead of four queries.

Freshness. Every writer of these rows (the services, the admin through the models' signals, a
cascade from a deleted user) calls `recipients_forget`, which gives the person a new generation
token in Redis at once and again once the transaction commits. An entry is used only if it
carries the token that is current, so an entry a concurrent reader built from rows read before
the change committed is never used after it. The entry's TTL is the safety net for a forget
that could not reach Redis. Whatever the cache says, nothing is ever sent where it must not go:
the webhook worker skips an endpoint that is no longer active, the Telegram sender a chat that is
no longer linked, and a delivery for an endpoint deleted meanwhile fails its foreign key, after
which the caller forgets the entries and writes the news again from the database
(notifications.services.notify_trade_events).

The language is the one accounts.middleware caches (accounts.services.language_cache_key, which
profile_language_set forgets): one entry per person for the pages and the news alike.

Redis down: everything is read from PostgreSQL, as before (fail open)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from notifications.models import NotificationPreference, TelegramLink, WebhookEndpoint

logger = logging.getLogger(__name__)

ENTRY_SECONDS = 120
# Longer than any entry lives: an entry written with an older token expires before the token.
TOKEN_SECONDS = 20 * ENTRY_SECONDS


@dataclass(frozen=True)
class Recipient:
    """One person's settings for the news (as rows of the database, or the defaults)."""

    # (endpoint id, the events it wants: empty for all) of each active endpoint, by id.
    endpoints: tuple[tuple[int, tuple[str, ...]], ...] = ()
    # category -> (email, telegram), for the categories the person chose (preferences.DEFAULTS
    # for the others).
    choices: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    telegram_chat: int | None = None
    language: str = ""  # Profile.language: "" for the site's


def _entry_key(user_id: int) -> str:
    return f"notif-recipient:{user_id}"


def _token_key(user_id: int) -> str:
    return f"notif-recipient-gen:{user_id}"


def recipients_of(
    user_ids: Iterable[int], *, fresh: bool = False
) -> tuple[dict[int, Recipient], bool]:
    """Each person's Recipient (everyone asked for gets one), and whether any came from the
    cache. One Redis round trip when all are cached; otherwise up to four queries for the others
    (`fresh`: all from the database)."""
    from accounts.middleware import LANGUAGE_CACHE_SECONDS
    from accounts.services import language_cache_key

    ids = sorted(set(user_ids))
    if not ids:
        return {}, False
    found: dict[int, Recipient] = {}
    languages: dict[int, str] = {}
    tokens: dict[int, Any] = {}
    cache_up = not fresh
    if not fresh:
        keys = [
            k for uid in ids for k in (_entry_key(uid), _token_key(uid), language_cache_key(uid))
        ]
        try:
            got = cache.get_many(keys)
        except Exception:
            logger.warning("the recipients' cache is not answering; reading PostgreSQL")
            got, cache_up = {}, False
        for uid in ids:
            token = tokens[uid] = got.get(_token_key(uid))
            entry = got.get(_entry_key(uid))
            if isinstance(entry, tuple) and len(entry) == 4 and entry[0] == token:
                _, endpoints, choices, chat = entry
                found[uid] = Recipient(endpoints=endpoints, choices=choices, telegram_chat=chat)
            language = got.get(language_cache_key(uid))
            if isinstance(language, str):
                languages[uid] = language
    from_cache = bool(found)
    missing = [uid for uid in ids if uid not in found]
    if missing:
        found.update(_from_database(missing))
    lacking = [uid for uid in ids if uid not in languages]
    if lacking:
        from accounts.selectors import languages_of

        chosen = languages_of(user_ids=lacking)
        for uid in lacking:
            languages[uid] = chosen.get(uid, "")
    if cache_up and (missing or lacking):
        writes: dict[str, Any] = {}
        for uid in missing:
            r = found[uid]
            writes[_entry_key(uid)] = (tokens.get(uid), r.endpoints, r.choices, r.telegram_chat)
        try:
            cache.set_many(writes, ENTRY_SECONDS)
            cache.set_many(
                {language_cache_key(uid): languages[uid] for uid in lacking},
                LANGUAGE_CACHE_SECONDS,
            )
        except Exception:
            logger.warning("could not cache the recipients' settings", exc_info=True)
    result = {
        uid: Recipient(
            endpoints=found[uid].endpoints,
            choices=found[uid].choices,
            telegram_chat=found[uid].telegram_chat,
            language=languages[uid],
        )
        for uid in ids
    }
    return result, from_cache


def _from_database(user_ids: list[int]) -> dict[int, Recipient]:
    endpoints: dict[int, list[tuple[int, tuple[str, ...]]]] = {}
    for pk, user_id, events in (
        WebhookEndpoint.objects.filter(user_id__in=user_ids, is_active=True)
        .order_by("pk")
        .values_list("pk", "user_id", "events")
    ):
        endpoints.setdefault(user_id, []).append((pk, tuple(events or ())))
    choices: dict[int, dict[str, tuple[bool, bool]]] = {}
    for user_id, category, email, telegram in NotificationPreference.objects.filter(
        user_id__in=user_ids
    ).values_list("user_id", "category", "email", "telegram"):
        choices.setdefault(user_id, {})[category] = (email, telegram)
    chats = dict(
        TelegramLink.objects.filter(user_id__in=user_ids, chat_id__isnull=False).values_list(
            "user_id", "chat_id"
        )
    )
    return {
        uid: Recipient(
            endpoints=tuple(endpoints.get(uid, ())),
            choices=choices.get(uid, {}),
            telegram_chat=chats.get(uid) or None,
        )
        for uid in user_ids
    }


def recipients_forget(user_ids: Iterable[int]) -> None:
    """These people's settings changed (or are about to, in the current transaction): no entry
    cached before is used again, now and once the transaction commits."""
    ids = sorted({int(uid) for uid in user_ids if uid is not None})
    if not ids:
        return
    _new_tokens(ids)
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: _new_tokens(ids), robust=True)


def _new_tokens(user_ids: list[int]) -> None:
    try:
        cache.set_many({_token_key(uid): secrets.token_hex(8) for uid in user_ids}, TOKEN_SECONDS)
    except Exception:
        # The entries expire by themselves (ENTRY_SECONDS); nothing is sent where it must not
        # go meanwhile (see the module's docstring).
        logger.warning("could not forget the cached settings of users %s", user_ids, exc_info=True)


def _on_row_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    recipients_forget([instance.user_id])


for _model in (WebhookEndpoint, NotificationPreference, TelegramLink):
    post_save.connect(_on_row_changed, sender=_model, dispatch_uid=f"recipients-{_model.__name__}")
    post_delete.connect(
        _on_row_changed, sender=_model, dispatch_uid=f"recipients-del-{_model.__name__}"
    )
