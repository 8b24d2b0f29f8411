"""`Authorization: Token <key>` for both kinds of credentials: the account token (all scopes)
and scoped API keys (`mk_...`).

A credential's look-up (the token or key with its user) is kept in the cache for
AUTH_CACHE_SECONDS under the SHA-256 of the raw key (never the key itself), so a request costs
one cache read instead of a query. Revocation is immediate: the services that revoke, rotate or
deactivate delete the entry when they commit (accounts.services.keys.auth_cache_forget); the
TTL only bounds what an unannounced change (a row edited in the database by hand) can leave."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from accounts.models import ApiKey
from accounts.services import KEY_PREFIX, auth_cache_key, hash_key
from common import hotcache
from common.permissions import ALL_SCOPES, scopes_of, throttle_ident

__all__ = ["ALL_SCOPES", "TokenOrApiKeyAuthentication", "scopes_of"]

# An API key's scopes are the API's scope vocabulary (common.permissions), no more, no less.
assert frozenset(ApiKey.Scope.values) == ALL_SCOPES, ApiKey.Scope.values

# ApiKey.last_used_at: written at most once a minute per key and process (the cached key's
# own last_used_at is as old as the cache entry, so this process remembers its own writes).
LAST_USED_EVERY_SECONDS = 60
_last_used_written: dict[int, float] = {}


class TokenOrApiKeyAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        cache_key = auth_cache_key(key)
        found = hotcache.get(cache_key)
        if found is None:
            found = self._look_up(key)
            seconds = getattr(settings, "AUTH_CACHE_SECONDS", 30)
            hotcache.set(cache_key, found, seconds)
            # Beside it, whom the per-key limit counts, as a plain string: the script that
            # reads the look-up and checks the limits in one round trip needs it (common.api).
            hotcache.set_plain(_ident_key(key), throttle_ident(*found), seconds)
        user, credential = found
        if isinstance(credential, ApiKey):
            self._touch(credential)
        return user, credential

    # The hooks of common.api's one-round-trip path (ApiView.initial).
    def cached_lookup_keys(self, key: str) -> list[str]:
        """Redis keys of a token's cached look-up and of its limit's ident."""
        return [hotcache.full_key(auth_cache_key(key)), hotcache.full_key(_ident_key(key))]

    def from_cached_lookup(self, raw: bytes) -> tuple[Any, Any]:
        """The cached look-up as read by that script: (user, credential), as
        authenticate_credentials gives it from the cache."""
        user, credential = hotcache.loads(raw)
        if isinstance(credential, ApiKey):
            self._touch(credential)
        return user, credential

    def _look_up(self, key: str) -> tuple[Any, Any]:
        if not key.startswith(KEY_PREFIX):
            return super().authenticate_credentials(key)
        api_key = ApiKey.objects.select_related("user").filter(key_hash=hash_key(key)).first()
        if api_key is None or not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if api_key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key was revoked.")
        return api_key.user, api_key

    @staticmethod
    def _touch(api_key: ApiKey) -> None:
        clock = time.monotonic()
        if clock - _last_used_written.get(api_key.pk, -1e9) < LAST_USED_EVERY_SECONDS:
            return
        _last_used_written[api_key.pk] = clock
        now = timezone.now()
        if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)


def _ident_key(key: str) -> str:
    # Never deleted on revocation: the look-up is (auth_cache_forget), and without it the
    # one-round-trip path is not taken; a credential's ident never changes.
    return auth_cache_key(key).replace("auth:", "authid:", 1)
