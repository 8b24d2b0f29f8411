"""Moderators' switches of lending: pausing liquidations while a price feed is broken. The switch
is one row (LendingControl, pk 1); every change is audited in LendingControlChange."""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from django.utils.translation import gettext

from accounts.selectors import is_moderator
from common.errors import PermissionDenied
from common.transactions import durable_atomic
from lending.models import LendingControl, LendingControlChange


def liquidations_paused() -> LendingControl | None:
    """The switch when liquidations are paused (its reason for the record), else None."""
    return LendingControl.objects.filter(pk=1, liquidations_paused=True).first()


def liquidations_set_paused(*, paused: bool, actor: Any, reason: str = "") -> LendingControl:
    """A moderator pauses or resumes every liquidation; the change is audited either way."""
    if not is_moderator(actor):
        raise PermissionDenied(gettext("Only a moderator can pause or resume liquidations."))
    reason = (reason or "").strip()[:300]
    with durable_atomic():
        LendingControl.objects.get_or_create(pk=1)
        control = LendingControl.objects.select_for_update().get(pk=1)
        control.liquidations_paused = paused
        control.reason = reason
        control.changed_by = actor
        control.changed_at = timezone.now()
        control.save()
        LendingControlChange.objects.create(liquidations_paused=paused, reason=reason, actor=actor)
    return control
