"""Hooks told, once the change commits, that sessions ended or credentials stopped working:
a higher layer (notifications.live) closes the sockets opened with them. Accounts knows nothing
of sockets; it only says which session keys ended and which credentials (each as the SHA-256 of
the raw token or key, keys.hash_key: an API key's stored key_hash) were revoked. A listener's
failure is logged, never raised into the service that revoked."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from django.db import transaction

logger = logging.getLogger(__name__)

session_end_listeners: list[Callable[[list[str]], None]] = []
credential_revoke_listeners: list[Callable[[list[str]], None]] = []


def sessions_ended(session_keys: Iterable[str]) -> None:
    _after_commit(session_end_listeners, [k for k in session_keys if k])


def credentials_revoked(hashes: Iterable[str]) -> None:
    _after_commit(credential_revoke_listeners, [h for h in hashes if h])


def _after_commit(listeners: list[Callable[[list[str]], None]], values: list[str]) -> None:
    if not values:
        return

    def tell() -> None:
        for listener in list(listeners):
            try:
                listener(values)
            except Exception:
                logger.exception("revocation listener %r failed", listener)

    transaction.on_commit(tell)
