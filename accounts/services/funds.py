"""The fund password: what a person proves before crypto leaves their control.

Releasing a trade's escrow, withdrawing and creating an API key ask for the current code of the
user's authenticator app when they turned two-factor authentication on, and for their account
password when they did not (Binance calls the latter the fund password). The check belongs to
the request a person (or their bot) makes, like an API key's scopes: the trade room and the
release API, the wallet form and the withdrawal API (through ledger's withdrawal_confirmers,
ledger being below accounts), the API-key form and API call `funds_confirm` before the service
that moves or exposes funds. Moderators, sweeps, tests and the bench call those services
directly (docs/architecture.md §1).

Wrong answers are counted per user (a cache counter, like the API throttles) with django-axes'
numbers for logins: after AXES_FAILURE_LIMIT wrong codes or passwords, every try is refused for
AXES_COOLOFF_TIME hours, whichever device or address they come from (whoever guesses already
holds a session or a key of the account). A right answer clears the count.

A right password is remembered for FUNDS_PASSWORD_MEMO_SECONDS (5 minutes by default; 0 turns it
off), like sudo's timestamp: the next confirmation with the same password skips Argon2 (about
200 ms of CPU here) and costs one cache read. The password is still asked for and compared on
every confirmation: the memo is keyed by an HMAC (SECRET_KEY) of the user, their stored password
hash and the password given, so only the same right password hits it, and a changed password
(a new hash) misses it. Wrong answers are never remembered: each one is hashed and counted.
docs/security.md weighs it."""

from __future__ import annotations

import logging
import math
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext

from accounts.models import ProfileEvent
from accounts.services.two_factor import totp_device
from common.errors import PermissionDenied, RateLimited

logger = logging.getLogger(__name__)

DEFAULT_MAX_FAILURES = 5
DEFAULT_COOLOFF_HOURS = 1.0


def _max_failures() -> int:
    return int(getattr(settings, "AXES_FAILURE_LIMIT", DEFAULT_MAX_FAILURES))


def _cooloff_seconds() -> int:
    hours = getattr(settings, "AXES_COOLOFF_TIME", DEFAULT_COOLOFF_HOURS)
    seconds = hours.total_seconds() if hasattr(hours, "total_seconds") else float(hours) * 3600
    return max(60, int(seconds))


def _failures_key(user: Any) -> str:
    # date_joined too: a database restored or recreated under the same Redis reuses ids.
    joined = int(user.date_joined.timestamp()) if getattr(user, "date_joined", None) else 0
    return f"funds-confirm-failures:{user.pk}:{joined}"


def _memo_seconds() -> int:
    return max(0, int(getattr(settings, "FUNDS_PASSWORD_MEMO_SECONDS", 300)))


def _password_memo_key(user: Any, password: str) -> str:
    digest = salted_hmac(
        "accounts.funds.password-memo",
        f"{user.pk}\0{user.password}\0{password}",
        algorithm="sha256",
    ).hexdigest()
    return f"funds-password-ok:{user.pk}:{digest}"


def _password_remembered(user: Any, password: str) -> bool:
    if not _memo_seconds() or not user.has_usable_password():
        return False
    try:
        return bool(cache.get(_password_memo_key(user, password)))
    except Exception:  # the cache is down: hash it
        return False


def _remember_password(user: Any, password: str) -> None:
    seconds = _memo_seconds()
    if not seconds:
        return
    try:
        cache.set(_password_memo_key(user, password), 1, seconds)
    except Exception:
        logger.warning("fund password of user %s not remembered", user.pk)


def funds_confirm_failures(*, user: Any) -> int:
    """Wrong codes or passwords counted against the user in the current window."""
    try:
        return int(cache.get(_failures_key(user)) or 0)
    except Exception:  # the cache is down: the check itself still runs
        return 0


def funds_confirm_factor(user: Any) -> str:
    """The field this user confirms with: "otp" with 2FA on, else "password"."""
    return "otp" if totp_device(user) is not None else "password"


def funds_confirm(*, user: Any, otp: str | None = None, password: str | None = None) -> str:
    """The person asking to move funds is the account's owner: the current 2FA code with 2FA on,
    else the account password; a missing or wrong one is refused naming its field, and too many
    wrong ones lock the check for a while. Returns the factor that was checked."""
    if user is None or not user.is_authenticated:
        raise PermissionDenied(gettext("Log in first."), code="not_authenticated")
    failures = funds_confirm_failures(user=user)
    if failures >= _max_failures():
        raise _locked()
    device = totp_device(user)
    if device is not None:
        token = str(otp or "").strip()
        if not token:
            raise PermissionDenied(
                gettext("otp: enter the 6-digit code from your authenticator app."),
                fields={"otp": [gettext("Required: two-factor authentication is on.")]},
                code="otp_required",
            )
        if not device.verify_token(token):
            _failed(user, field="otp")
            raise PermissionDenied(
                gettext("otp: that code is wrong or was already used."),
                fields={"otp": [gettext("Wrong code.")]},
                code="otp_invalid",
            )
        if failures:
            _clear(user)
        return "otp"
    if not password:
        raise PermissionDenied(
            gettext("password: enter your account password to confirm."),
            fields={"password": [gettext("Required: confirm with your account password.")]},
            code="password_required",
        )
    if not _password_remembered(user, password):
        if not user.has_usable_password() or not user.check_password(password):
            _failed(user, field="password")
            raise PermissionDenied(
                gettext("password: that is not your account password."),
                fields={"password": [gettext("Wrong password.")]},
                code="password_invalid",
            )
        _remember_password(user, password)  # after check_password, which may rehash it
    if failures:
        _clear(user)
    return "password"


def _locked() -> RateLimited:
    error = RateLimited(
        gettext(
            "Too many wrong codes or passwords: confirming funds is locked for {v1} minutes. Nothing was changed."
        ).format(v1=math.ceil(_cooloff_seconds() / 60)),
        code="funds_locked",
    )
    error.retry_after = _cooloff_seconds()
    return error


def _failed(user: Any, *, field: str) -> None:
    key, cooloff = _failures_key(user), _cooloff_seconds()
    try:
        cache.add(key, 0, cooloff)
        count = int(cache.incr(key))
    except Exception:  # the cache is down: the answer is still refused, just not counted
        logger.warning("funds confirmation failure of user %s not counted", user.pk)
        return
    if count == _max_failures():
        cache.touch(key, cooloff)  # the lock lasts a whole cool-off from the last failure
        ProfileEvent.objects.create(
            user_id=user.pk,
            actor=user,
            action=ProfileEvent.Action.FUNDS_LOCKED,
            detail=f"{count} wrong {field} answers; locked for {cooloff // 60} min",
        )


def _clear(user: Any) -> None:
    try:
        cache.delete(_failures_key(user))
    except Exception:
        logger.warning("funds confirmation count of user %s not cleared", user.pk)
