"""Credentials for bots: scoped API keys (stored hashed) and the account token."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext
from rest_framework.authtoken.models import Token

from accounts.models import ApiKey
from accounts.services.revocation import credentials_revoked
from common import hotcache
from common.errors import (
    NotFound,
    ValidationFailed,
)

KEY_PREFIX = "mk_"


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def auth_cache_key(raw: str) -> str:
    """Where accounts.authentication keeps a credential's look-up: the key's SHA-256 (an API
    key's is its stored key_hash), never the key."""
    return f"auth:{hash_key(raw)}"


def auth_cache_forget(*, user_id: int) -> None:
    """Drop the cached look-ups of every credential of the user (their token and API keys),
    once the change that revokes them commits: the very next request with one is checked
    against the database again."""
    hashes = [
        hash_key(k) for k in Token.objects.filter(user_id=user_id).values_list("key", flat=True)
    ]
    hashes += list(ApiKey.objects.filter(user_id=user_id).values_list("key_hash", flat=True))
    _forget_on_commit([f"auth:{h}" for h in hashes])


def _forget_on_commit(keys: list[str]) -> None:
    # Now, and again once the change commits: a request that read the old row meanwhile (the
    # revocation not yet committed) may have cached it again.
    hotcache.delete_many(keys)
    transaction.on_commit(lambda: hotcache.delete_many(keys))


def api_key_create(*, user: Any, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Create a scoped key; the raw key is returned once and never stored. (The person asking
    confirms with accounts.services.funds_confirm first: the form and the API call it.)"""
    name = (name or "").strip()
    if not name or len(name) > 64:
        raise ValidationFailed(
            gettext("name: give the key a name of 1-64 characters."),
            fields={"name": [gettext("1-64 characters.")]},
        )
    scopes = list(dict.fromkeys(scopes or []))
    unknown = [s for s in scopes if s not in ApiKey.Scope.values]
    if not scopes or unknown:
        raise ValidationFailed(
            gettext("scopes: choose from {v1}.").format(v1=", ".join(ApiKey.Scope.values)),
            fields={
                "scopes": [
                    gettext("Unknown scope {v1!r}.").format(v1=unknown[0])
                    if unknown
                    else gettext("Choose at least one scope.")
                ]
            },
        )
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        key = ApiKey.objects.create(
            user=user, name=name, prefix=raw[:10], key_hash=hash_key(raw), scopes=scopes
        )
    return key, raw


def api_key_revoke(*, user: Any, key_id: int) -> ApiKey:
    """Revoke one of the user's keys; requests with it fail from now on."""
    key = ApiKey.objects.filter(pk=key_id, user=user).first()
    if key is None:
        raise NotFound(gettext("API key #{key_id} not found.").format(key_id=key_id))
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    _forget_on_commit([f"auth:{key.key_hash}"])
    credentials_revoked([key.key_hash])
    return key


def token_rotate(*, user: Any) -> Token:
    """Replace the user's session-independent token (the old one stops working)."""
    with transaction.atomic():
        old = list(Token.objects.filter(user=user).values_list("key", flat=True))
        Token.objects.filter(user=user).delete()
        _forget_on_commit([auth_cache_key(k) for k in old])
        credentials_revoked(hash_key(k) for k in old)
        return Token.objects.create(user=user)
