"""Browser sessions the owner sees and revokes on the settings page, and the time zone pages
show times in (both read by accounts.middleware)."""

from __future__ import annotations

import contextlib
import zoneinfo
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext as _

from accounts.models import BrowserSession, Profile
from accounts.selectors import profile_for
from accounts.services.revocation import sessions_ended
from common.errors import Conflict, NotFound, ValidationFailed

USER_AGENT_MAX = 300


def browser_session_touch(*, user: Any, session_key: str, user_agent: str = "") -> None:
    """Record that this session of the user was just used: created at its first use (a login),
    its last_seen moved on after."""
    now = timezone.now()
    mine = BrowserSession.objects.filter(session_key=session_key, user_id=user.pk)
    if mine.update(last_seen=now):
        if user_agent:  # a login made without one (e.g. from a script) learns it on first use
            mine.filter(user_agent="").update(user_agent=user_agent[:USER_AGENT_MAX])
        return
    try:
        with transaction.atomic():
            # A key seen under another user (a session that changed hands at login) is replaced;
            # rows of this user's sessions that ended (logout, expiry) go now, at a login.
            BrowserSession.objects.filter(session_key=session_key).delete()
            live = Session.objects.filter(session_key=OuterRef("session_key"), expire_date__gt=now)
            BrowserSession.objects.filter(user_id=user.pk).exclude(Exists(live)).delete()
            BrowserSession.objects.create(
                user_id=user.pk,
                session_key=session_key,
                user_agent=(user_agent or "")[:USER_AGENT_MAX],
                created_at=now,
                last_seen=now,
            )
    except IntegrityError:  # a concurrent request of the same session created it meanwhile
        pass


def browser_session_revoke(*, user: Any, session_id: int, current_session_key: str | None) -> None:
    """Log one of the user's other browsers out now: its session row is deleted server-side."""
    record = BrowserSession.objects.filter(pk=session_id, user_id=user.pk).first()
    if record is None:
        raise NotFound(gettext("Session #{session_id} not found.").format(session_id=session_id))
    if current_session_key and record.session_key == current_session_key:
        raise Conflict(
            gettext("That is the browser you are using: log out instead."), code="current_session"
        )
    with transaction.atomic():
        Session.objects.filter(session_key=record.session_key).delete()
        record.delete()
        sessions_ended([record.session_key])


# --- time zone --------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def time_zone_cache_key(user_id: int) -> str:
    return f"user-tz:{user_id}"


def profile_time_zone_set(*, user: Any, time_zone: str) -> Profile:
    """Show this user's times in an IANA zone (as the browser reports it, e.g. Europe/Berlin);
    anything zoneinfo doesn't know is refused."""
    name = str(time_zone or "").strip()
    if name not in _zones():
        raise ValidationFailed.for_field(
            "time_zone",
            gettext("Unknown time zone {v1!r}: use an IANA name like Europe/Berlin.").format(
                v1=name[:64]
            ),
        )
    profile = profile_for(user)
    if profile.time_zone != name:
        Profile.objects.filter(pk=profile.pk).update(time_zone=name)
        profile.time_zone = name
    # A cache that is down has nothing to forget; the middleware then reads the profile.
    with contextlib.suppress(Exception):
        cache.delete(time_zone_cache_key(user.pk))
    return profile


# --- language -----------------------------------------------------------------------------------


def language_cache_key(user_id: int) -> str:
    return f"user-lang:{user_id}"


def profile_language_set(*, user: Any, language: str) -> Profile:
    """Show this user's pages, notifications and emails in one of the site's languages
    (settings.LANGUAGES); anything else is refused."""
    code = str(language or "").strip().lower()
    if code not in {c for c, _ in settings.LANGUAGES}:
        raise ValidationFailed.for_field(
            "language", _("Unknown language %(code)r.") % {"code": code[:16]}
        )
    profile = profile_for(user)
    if profile.language != code:
        Profile.objects.filter(pk=profile.pk).update(language=code)
        profile.language = code
    with contextlib.suppress(Exception):
        cache.delete(language_cache_key(user.pk))
    return profile
