"""`Authorization: Token <key>` for both kinds of credentials: the account token (all scopes)
and scoped API keys (`mk_...`)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from accounts.models import ApiKey
from accounts.services import KEY_PREFIX, hash_key
from common.permissions import ALL_SCOPES, scopes_of

__all__ = ["ALL_SCOPES", "TokenOrApiKeyAuthentication", "scopes_of"]

# An API key's scopes are the API's scope vocabulary (common.permissions), no more, no less.
assert frozenset(ApiKey.Scope.values) == ALL_SCOPES, ApiKey.Scope.values


class TokenOrApiKeyAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        if not key.startswith(KEY_PREFIX):
            return super().authenticate_credentials(key)
        api_key = ApiKey.objects.select_related("user").filter(key_hash=hash_key(key)).first()
        if api_key is None or not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if api_key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key was revoked.")
        now = timezone.now()
        if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        return api_key.user, api_key
