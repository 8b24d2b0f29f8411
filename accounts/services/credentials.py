"""What a password change or reset does to the account's other credentials, the user's
sessions, and the withdrawal lock that follows."""

from __future__ import annotations

import logging
from datetime import UTC, timedelta
from typing import Any

from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from accounts.models import BrowserSession, Profile, ProfileEvent
from accounts.selectors import session_list_for_user
from accounts.services._common import _locked_profile
from accounts.services.keys import token_rotate
from accounts.services.revocation import sessions_ended
from common.errors import PermissionDenied

logger = logging.getLogger(__name__)

DEFAULT_LOCK_HOURS = 24


def credentials_after_password_change(*, user: Any, keep_session_key: str | None) -> Profile:
    """After a new password: the account token is replaced, every other session ends, and
    withdrawals (by any credential, scoped keys too) wait PASSWORD_CHANGE_WITHDRAW_LOCK_HOURS;
    the owner is told by email. API keys stay: the settings page lists them to revoke."""
    hours = getattr(settings, "PASSWORD_CHANGE_WITHDRAW_LOCK_HOURS", DEFAULT_LOCK_HOURS)
    until = timezone.now() + timedelta(hours=hours)
    with transaction.atomic():
        profile = _locked_profile(user)
        if profile.withdrawals_locked_until is None or profile.withdrawals_locked_until < until:
            profile.withdrawals_locked_until = until
            profile.save(update_fields=["withdrawals_locked_until"])
        token_rotate(user=user)
        ended = sessions_end_others(user=user, keep_session_key=keep_session_key)
        ProfileEvent.objects.create(
            user_id=user.pk,
            actor=user,
            action=ProfileEvent.Action.PASSWORD_CHANGED,
            detail=f"token rotated, {ended} other sessions ended, withdrawals locked until "
            f"{_utc(until)}",
        )
    _tell_owner(user=user, until=until)
    return profile


def sessions_end_others(*, user: Any, keep_session_key: str | None) -> int:
    """Log the user out everywhere but in the session keep_session_key (None: everywhere);
    returns how many sessions ended."""
    keys = [s.session_key for s in session_list_for_user(user=user)]
    others = [k for k in keys if k != keep_session_key]
    BrowserSession.objects.filter(user_id=user.pk).exclude(session_key=keep_session_key).delete()
    sessions_ended(others)
    return Session.objects.filter(session_key__in=others).delete()[0] if others else 0


def ensure_withdrawals_unlocked(*, user: Any) -> None:
    """A withdrawal guard (ledger.services.funds.withdrawal_guards): none leaves while the lock
    of a recent password change runs."""
    until = (
        Profile.objects.filter(user_id=user.pk)
        .values_list("withdrawals_locked_until", flat=True)
        .first()
    )
    if until is not None and until > timezone.now():
        raise PermissionDenied(
            gettext(
                "Your password was changed recently: withdrawals are paused until {v1}."
            ).format(v1=_utc(until)),
            code="withdrawals_locked",
        )


def _utc(moment: Any) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _tell_owner(*, user: Any, until: Any) -> None:
    if not user.email:
        return
    try:
        send_mail(
            subject="Your password was changed",
            message=(
                f"Hello {user.username},\n\n"
                "The password of your account was just changed. Your account token was replaced "
                "and every other session was logged out. Withdrawals are paused until "
                f"{_utc(until)}.\n\n"
                "If this was not you, contact support at once and revoke your API keys on the "
                "settings page."
            ),
            from_email=None,
            recipient_list=[user.email],
        )
    except Exception:  # the change happened; a mail server that is down must not undo it
        logger.exception("password change notice to user %s not sent", user.pk)
