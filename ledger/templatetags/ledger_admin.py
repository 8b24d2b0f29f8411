"""The admin index's count of queued withdrawals (templates/admin/index.html)."""

from __future__ import annotations

from typing import Any

from django import template

from ledger import selectors

register = template.Library()


@register.simple_tag(takes_context=True)
def queued_withdrawal_count(context: dict[str, Any]) -> int | None:
    """Withdrawals not yet final, for those who may see them (None otherwise)."""
    user = getattr(context.get("request"), "user", None)
    if user is None or not user.has_perm("ledger.view_withdrawal"):
        return None
    return selectors.withdrawal_queued_count()
