from __future__ import annotations

from django.conf import settings
from django.db import models


class Profile(models.Model):
    """A trader's public face: KYC tier (shown as a badge only), last seen."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    kyc_tier = models.PositiveSmallIntegerField(default=0)
    last_seen = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Profile of {self.user}"
