"""The WebSocket routes (config/asgi.py serves them; plain HTTP stays on gunicorn).

- /ws/v1/live/    browsers: the session cookie (AuthMiddlewareStack); the Origin header must be
                  one of ALLOWED_HOSTS, so another site's page can't open it with the visitor's
                  cookie (cross-site WebSocket hijacking).
- /ws/v1/stream/  bots: `Authorization: Token <account token or API key>`, checked by accounts'
                  own authentication (TokenOrApiKeyAuthentication); a browser can't set that
                  header on a WebSocket, and a socket that does send an Origin must still come
                  from an allowed host."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import (
    AllowedHostsOriginValidator,
    OriginValidator,
)
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.urls import path

from notifications.live.consumers import BotStreamConsumer, LiveConsumer


class _BotOriginValidator(OriginValidator):
    """ALLOWED_HOSTS like the browser route, but a client with no Origin (a bot) may connect."""

    def valid_origin(self, parsed_origin: Any) -> bool:
        return parsed_origin is None or super().valid_origin(parsed_origin)


def _bot_origin_validator(application: Any) -> Any:
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    return _BotOriginValidator(application, allowed)


@database_sync_to_async
def _token_user(key: str) -> Any:
    """The account token or an API key through accounts' authentication (the same checks, the
    same last-used stamp as the REST API); a key without the `read` scope can't read events."""
    from rest_framework.exceptions import AuthenticationFailed

    from accounts.authentication import TokenOrApiKeyAuthentication
    from common.permissions import ALL_SCOPES

    try:
        user, auth = TokenOrApiKeyAuthentication().authenticate_credentials(key)
    except AuthenticationFailed:
        return AnonymousUser()
    scopes = getattr(auth, "scopes", None)
    if "read" not in (ALL_SCOPES if scopes is None else frozenset(scopes)):
        return AnonymousUser()
    return user


class TokenAuthMiddleware:
    """scope["user"] from `Authorization: Token <key>` (never from the query string, which
    ends up in access logs)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        word, _, key = header.partition(" ")
        user: Any = AnonymousUser()
        credential_hash = None
        if word.lower() == "token" and key.strip():
            user = await _token_user(key.strip())
            if user.is_authenticated:
                from accounts.services.keys import hash_key

                # Names the group that closes this socket when the credential is revoked.
                credential_hash = hash_key(key.strip())
        return await self.app(
            {**scope, "user": user, "credential_hash": credential_hash}, receive, send
        )


websocket_urlpatterns = [
    path(
        "ws/v1/live/",
        AllowedHostsOriginValidator(AuthMiddlewareStack(LiveConsumer.as_asgi())),
    ),
    path(
        "ws/v1/stream/",
        _bot_origin_validator(TokenAuthMiddleware(BotStreamConsumer.as_asgi())),
    ),
]


def origin_of(url: str) -> str:
    """ws://host:port/path -> ws://host:port (what CSP's connect-src names)."""
    parts = urlparse(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
