"""Two-factor authentication (TOTP through django-otp) and the second factor money needs."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils.translation import gettext

from common.errors import (
    InvalidTransition,
    PermissionDenied,
    ValidationFailed,
)
from common.prepared import PreparedRead

# --- two-factor authentication (TOTP, django-otp) ------------------------------------------------


def _confirmed_device(user_id: int) -> Any:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    return TOTPDevice.objects.filter(user_id=user_id, confirmed=True).order_by("-id")


# Read by every move of money (the second factor it needs), built once (common.prepared).
_CONFIRMED_DEVICE = PreparedRead(_confirmed_device)


def totp_device(user: Any, *, confirmed: bool | None = True) -> Any:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    if confirmed is True:
        return _CONFIRMED_DEVICE.first(user.pk)
    qs = TOTPDevice.objects.filter(user=user)
    if confirmed is not None:
        qs = qs.filter(confirmed=confirmed)
    return qs.order_by("-id").first()


def has_two_factor(user: Any) -> bool:
    return bool(user and user.is_authenticated and totp_device(user) is not None)


def totp_setup_start(*, user: Any, new_secret: bool = False) -> tuple[Any, str]:
    """Start enrolling an authenticator app: an unconfirmed device and its otpauth:// URL. A
    setup already started keeps its secret (the QR code the user may have scanned stays good,
    e.g. after a wrong code); new_secret=True replaces it."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    if has_two_factor(user):
        raise InvalidTransition(
            gettext("Two-factor authentication is already on."), code="otp_exists"
        )
    with transaction.atomic():
        pending = TOTPDevice.objects.select_for_update().filter(user=user, confirmed=False)
        device = None if new_secret else pending.order_by("-id").first()
        if device is None:
            pending.delete()
            device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)
    return device, device.config_url


def totp_setup_confirm(*, user: Any, token: str) -> Any:
    """The first code from the app proves it was set up: 2FA is on from now on. A wrong code
    changes nothing: the same secret waits for a right one."""
    device = totp_device(user, confirmed=False)
    if device is None:
        raise InvalidTransition(gettext("Start the setup first."), code="otp_not_started")
    if not device.verify_token(str(token or "").strip()):
        raise ValidationFailed(
            gettext("otp: that code is not right; check your phone's clock."),
            fields={"otp": [gettext("Wrong code.")]},
        )
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    return device


def totp_disable(*, user: Any, token: str) -> None:
    """Turning 2FA off needs a current code too."""
    require_second_factor(user=user, otp=token)
    from django_otp.plugins.otp_totp.models import TOTPDevice

    TOTPDevice.objects.filter(user=user).delete()


def require_second_factor(*, user: Any, otp: str | None) -> None:
    """Once a user turned 2FA on, turning it off needs a current code from their authenticator;
    without 2FA nothing is asked. (Moving funds asks through accounts.services.funds_confirm.)"""
    device = totp_device(user)
    if device is None:
        return
    token = str(otp or "").strip()
    if not token:
        raise PermissionDenied(
            gettext("otp: enter the 6-digit code from your authenticator app."),
            fields={"otp": [gettext("Required: two-factor authentication is on.")]},
            code="otp_required",
        )
    if not device.verify_token(token):
        raise PermissionDenied(
            gettext("otp: that code is wrong or was already used."),
            fields={"otp": [gettext("Wrong code.")]},
            code="otp_invalid",
        )
