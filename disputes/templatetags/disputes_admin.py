"""The admin index's dispute counts (templates/admin/index.html)."""

from __future__ import annotations

from typing import Any

from django import template

from disputes import selectors

register = template.Library()


@register.simple_tag(takes_context=True)
def dispute_queue_counts(context: dict[str, Any]) -> dict[str, int] | None:
    """Open disputes and those past their SLA, for those who may see disputes (None otherwise)."""
    user = getattr(context.get("request"), "user", None)
    if user is None or not user.has_perm("disputes.view_dispute"):
        return None
    return selectors.dispute_queue_counts()
