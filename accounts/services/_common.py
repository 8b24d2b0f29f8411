"""Helpers the account services share."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext

from accounts.models import Profile
from accounts.selectors import profile_for
from common.errors import (
    ValidationFailed,
)


def _reason(reason: Any, *, required: bool = False) -> str:
    text = " ".join(str(reason or "").split())
    if required and not text:
        raise ValidationFailed.for_field("reason", gettext("Give a reason; the user sees it."))
    if len(text) > 500:
        raise ValidationFailed.for_field("reason", gettext("At most 500 characters."))
    return text


def _locked_profile(user: Any) -> Profile:
    profile_for(user)  # make sure the row exists before locking it
    return Profile.objects.select_for_update().get(user_id=user.pk)
