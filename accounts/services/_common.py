"""Helpers the account services share."""

from __future__ import annotations

from typing import Any

from accounts.models import Profile
from accounts.selectors import profile_for
from common.errors import (
    ValidationFailed,
)


def _invalid(field: str, message: str, code: str | None = None) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", fields={field: [message]}, code=code)


def _reason(reason: Any, *, required: bool = False) -> str:
    text = " ".join(str(reason or "").split())
    if required and not text:
        raise _invalid("reason", "Give a reason; the user sees it.")
    if len(text) > 500:
        raise _invalid("reason", "At most 500 characters.")
    return text


def _locked_profile(user: Any) -> Profile:
    profile_for(user)  # make sure the row exists before locking it
    return Profile.objects.select_for_update().get(user_id=user.pk)
