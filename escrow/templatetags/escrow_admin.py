"""The admin index's count of failed settlements (templates/admin/index.html)."""

from __future__ import annotations

from typing import Any

from django import template

from escrow import selectors

register = template.Library()


@register.simple_tag(takes_context=True)
def failed_settlement_count(context: dict[str, Any]) -> int:
    """Failed settlements, for those who may see them (0 for other staff: no count to leak)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not (
        user.has_perm("escrow.view_settlement") or user.has_perm("escrow.decide_trade")
    ):
        return 0
    return selectors.settlement_failed_count()
