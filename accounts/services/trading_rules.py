"""Issue 20's facts on a trader's profile: their country (offers may be open to some countries
only) and the pause of their buying that escrow's daily cancellation limit sets."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from accounts.models import Profile
from accounts.selectors import profile_for
from common.countries import country_code
from common.errors import ValidationFailed


def profile_country_set(*, user: Any, country: str) -> Profile:
    """Where the trader lives: an ISO 3166-1 alpha-2 code (any case), or blank to say nothing
    (offers open to some countries only are then closed to them)."""
    raw = str(country or "").strip()
    code = country_code(raw) if raw else ""
    if code is None:
        raise ValidationFailed.for_field(
            "country", f"Unknown country {raw[:8]!r}: use a two-letter ISO code such as DE or BR."
        )
    profile = profile_for(user)
    if profile.country != code:
        Profile.objects.filter(pk=profile.pk).update(country=code)
        profile.country = code
    return profile


def profile_buying_suspension_set(*, profile: Profile, until: datetime | None) -> None:
    """Pause (or resume) the trader's buying until `until`; called by escrow's cancellation
    limit with the profile row locked."""
    Profile.objects.filter(pk=profile.pk).update(buying_suspended_until=until)
    profile.buying_suspended_until = until
