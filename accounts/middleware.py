"""Profile.last_seen for the order book's "last seen": written at most once a minute per
user (a cache key remembers the last write), never on every request; a browser session's last
use likewise. The user's time zone and language for the pages. The device cookie and the
addresses that link accounts (accounts.selectors, account links)."""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.utils import timezone, translation

from common import hotcache
from common.http import client_ip

# Profile.last_seen is written at most once a minute per user: a cache key (cache.add, which
# only one process wins) guards the write, and each process remembers the users it has checked
# in the last minute, so most requests cost neither a write nor a cache round trip.
EVERY_SECONDS = 60
_checked: dict[int, float] = {}


SESSION_EVERY_SECONDS = 60


class LastSeenMiddleware:
    """Also the browser session's last use (accounts.models.BrowserSession), at most once a
    minute per session, before the view: the settings page lists the session it is read in."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        _touch_session(request)
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            last_seen_touch(user_id=user.pk)
        return response


def last_seen_touch(*, user_id: int) -> bool:
    """Record that the user was active now, at most once every EVERY_SECONDS; True if this
    call wrote Profile.last_seen. Skipped while the cache is down (it is only a hint)."""
    clock = time.monotonic()
    if clock - _checked.get(user_id, -1e9) < EVERY_SECONDS:
        return False
    if len(_checked) > 100_000:  # a long-lived process: forget, don't grow without end
        _checked.clear()
    _checked[user_id] = clock
    if not hotcache.add(f"last-seen:{user_id}", 1, EVERY_SECONDS):
        return False
    from accounts.models import Profile

    Profile.objects.filter(user_id=user_id).update(last_seen=timezone.now())
    return True


def _touch_session(request: HttpRequest) -> None:
    user = getattr(request, "user", None)
    session = getattr(request, "session", None)
    key = session.session_key if session is not None else None
    if user is None or not user.is_authenticated or not key:
        return
    # hotcache.add: None while the cache is down (skip: the list shows an older time)
    if hotcache.add(f"session-seen:{key}", 1, SESSION_EVERY_SECONDS):
        from accounts.services import browser_session_touch

        browser_session_touch(
            user=user, session_key=key, user_agent=request.headers.get("User-Agent", "")
        )


def record_login_session(
    sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any
) -> None:
    """user_logged_in: the new session is listed at once, with the browser it logged in from.
    Connected in AccountsConfig.ready()."""
    session = getattr(request, "session", None) if request is not None else None
    if session is None or not session.session_key:
        return
    from accounts.services import browser_session_touch

    assert request is not None
    browser_session_touch(
        user=user, session_key=session.session_key, user_agent=request.headers.get("User-Agent", "")
    )


# --- the user's time zone -------------------------------------------------------------------

TIME_ZONE_CACHE_SECONDS = 300


class TimeZoneMiddleware:
    """Pages show times in the logged-in user's zone (Profile.time_zone, which static/js/
    local-time.js reports from the browser); UTC for everyone else, for the API (its times carry
    their offset) and for the admin, whose screens say UTC."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        name = _time_zone_of(request)
        zone = None
        if name:
            try:
                zone = ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):  # tzdata changed since it was stored
                zone = None
        if zone is not None:
            timezone.activate(zone)
        else:
            timezone.deactivate()
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()


def _time_zone_of(request: HttpRequest) -> str:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return ""
    if request.path.startswith(("/admin/", "/api/")):
        return ""
    from accounts.models import Profile
    from accounts.services import time_zone_cache_key

    key = time_zone_cache_key(user.pk)
    try:
        cached = cache.get(key)
    except Exception:
        cached = None
    if cached is not None:
        return str(cached)
    name = Profile.objects.filter(user_id=user.pk).values_list("time_zone", flat=True).first() or ""
    with contextlib.suppress(Exception):  # the cache is down: read the profile next time too
        cache.set(key, name, TIME_ZONE_CACHE_SECONDS)
    return name


# --- the user's language ----------------------------------------------------------------------

LANGUAGE_CACHE_SECONDS = 300


class UserLanguageMiddleware:
    """After LocaleMiddleware (which read the language selector's cookie or Accept-Language): a
    logged-in user's pages are in the language stored on their profile, whatever browser they
    use. The API keeps Accept-Language: a bot asks for the language of its `message` texts."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        language = _language_of(request)
        if language and language != translation.get_language():
            translation.activate(language)
            request.LANGUAGE_CODE = language
        response = self.get_response(request)
        cookie = settings.LANGUAGE_COOKIE_NAME
        if language and request.COOKIES.get(cookie) != language:
            # The browser keeps the language after logging out too.
            response.set_cookie(
                cookie,
                language,
                max_age=settings.LANGUAGE_COOKIE_AGE,
                samesite="Lax",
            )
        return response


def _language_of(request: HttpRequest) -> str:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or request.path.startswith("/api/"):
        return ""
    from accounts.services import language_cache_key

    key = language_cache_key(user.pk)
    try:
        cached = cache.get(key)
    except Exception:
        cached = None
    if cached is not None:
        return str(cached)
    name = _profile_language(user.pk)
    with contextlib.suppress(Exception):  # the cache is down: read the profile next time too
        cache.set(key, name, LANGUAGE_CACHE_SECONDS)
    return name


def _profile_language(user_id: int) -> str:
    from accounts.models import Profile

    return Profile.objects.filter(user_id=user_id).values_list("language", flat=True).first() or ""


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
