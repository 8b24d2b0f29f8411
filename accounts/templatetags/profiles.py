"""Template filters of profiles: tier badges and human durations."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from common.l10n import format_decimal

register = template.Library()

TIER_LABELS = {
    0: gettext_lazy("Unverified"),
    1: gettext_lazy("Verified · tier 1"),
    2: gettext_lazy("Verified · tier 2"),
}


@register.filter
def tier_label(tier: Any) -> str:
    try:
        return str(TIER_LABELS.get(int(tier), _("Tier %(tier)s") % {"tier": tier}))
    except (TypeError, ValueError):
        return ""


@register.filter
def duration(seconds: Any) -> str:
    """4 min, 1 h 5 min, 45 s; an em dash when there is nothing to average."""
    if seconds is None or seconds == "":
        return "—"
    total = int(seconds)
    if total < 60:
        return _("%(n)s s") % {"n": total}
    minutes = total // 60
    if minutes < 60:
        return _("%(n)s min") % {"n": minutes}
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        if minutes:
            return _("%(h)s h %(m)s min") % {"h": hours, "m": minutes}
        return _("%(h)s h") % {"h": hours}
    return _("%(n)s days") % {"n": hours // 24}


@register.filter
def eur(value: Any) -> str:
    """A EUR amount of a limit: 1,000 or 1,250.50."""
    if value is None:
        return "—"
    text = format_decimal(Decimal(str(value)), 2)
    return text[:-3] if text[-3:-2] in ".," and text.endswith("00") else text
