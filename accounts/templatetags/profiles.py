"""Template filters of profiles: tier badges and human durations."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()

TIER_LABELS = {0: "Unverified", 1: "Verified · tier 1", 2: "Verified · tier 2"}


@register.filter
def tier_label(tier: Any) -> str:
    try:
        return TIER_LABELS.get(int(tier), f"Tier {tier}")
    except (TypeError, ValueError):
        return ""


@register.filter
def duration(seconds: Any) -> str:
    """4 min, 1 h 5 min, 45 s; an em dash when there is nothing to average."""
    if seconds is None or seconds == "":
        return "—"
    total = int(seconds)
    if total < 60:
        return f"{total} s"
    minutes, _ = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


@register.filter
def eur(value: Any) -> str:
    """A EUR amount of a limit: 1,000 or 1,250.50."""
    if value is None:
        return "—"
    text = f"{value:,.2f}"
    return text.removesuffix(".00")
