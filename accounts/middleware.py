"""Profile.last_seen for the order book's "last seen": written at most every few minutes per
user (a cache key remembers the last write), never on every request. The device cookie and the
addresses that link accounts (accounts.selectors, account links)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from common.http import client_ip

EVERY_SECONDS = 300


class LastSeenMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            key = f"last-seen:{user.pk}"
            try:
                fresh = cache.add(key, 1, EVERY_SECONDS)
            except Exception:  # the cache is down: skip, it's only a hint
                fresh = False
            if fresh:
                from accounts.models import Profile

                Profile.objects.filter(user_id=user.pk).update(last_seen=timezone.now())
        return response


# --- the device cookie and login links ------------------------------------------------------

DEVICE_COOKIE = "did"
DEVICE_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600
_DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{32,64}")


class DeviceCookieMiddleware:
    """A long-lived random cookie that tells one browser apart (request.device_id), set when
    missing: two accounts logging in on one device are linked (accounts.selectors). Not secret
    nor proof of anything: clearing it only makes a new device; it's one signal of several."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        device = request.COOKIES.get(DEVICE_COOKIE, "")
        fresh = not _DEVICE_ID.fullmatch(device)
        if fresh:
            device = secrets.token_urlsafe(32)
        # Read by the login receiver below, also on the very request that set it (a signup).
        request.device_id = device  # type: ignore[attr-defined]
        response = self.get_response(request)
        if fresh:
            response.set_cookie(
                DEVICE_COOKIE,
                device,
                max_age=DEVICE_COOKIE_MAX_AGE,
                httponly=True,
                samesite="Lax",
                secure=settings.SESSION_COOKIE_SECURE,  # True in production
            )
        return response


def record_login_links(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """user_logged_in (logins and signups, which log the new account in): remember the client's
    address and device, hashed. Connected in AccountsConfig.ready()."""
    if request is None:
        return
    from accounts.services import account_links_record

    account_links_record(
        user=user, ip=client_ip(request), device=getattr(request, "device_id", None)
    )
