"""The verified name: the name on an approved identity document, set by a KYC reviewer. Saved
payment accounts must be in this name (marketplace.services.payment_accounts)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils.translation import gettext

from accounts.models import ProfileEvent
from accounts.services._common import _locked_profile
from common.errors import PermissionDenied, ValidationFailed


def profile_verified_name_set(*, user: Any, name: str, actor: Any) -> str:
    """A KYC reviewer (`accounts.review_kyc`, not the user) records the name on the user's
    approved identity document; audited in the user's history."""
    if actor is None or not actor.has_perm("accounts.review_kyc"):
        raise PermissionDenied(gettext("Only a KYC reviewer can set a verified name."))
    if actor.pk == user.pk:
        raise PermissionDenied(gettext("You can't verify your own name."))
    text = " ".join(str(name or "").split())
    if not 2 <= len(text) <= 100:
        raise ValidationFailed.for_field("name", gettext("The full name, 2-100 characters."))
    with transaction.atomic():
        profile = _locked_profile(user)
        profile.verified_name = text
        profile.save(update_fields=["verified_name"])
        ProfileEvent.objects.create(
            user_id=user.pk,
            actor=actor,
            action=ProfileEvent.Action.KYC_APPROVED,
            detail=f"verified name: {text}"[:200],
        )
    return text
