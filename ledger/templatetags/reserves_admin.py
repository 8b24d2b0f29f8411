"""The admin index's line about reserves (templates/admin/index.html): a link to the hot wallet
page and any asset whose latest reconciliation found a shortfall."""

from __future__ import annotations

from typing import Any

from django import template

from ledger.evm import reserves
from ledger.evm.models import ReserveReconciliation

register = template.Library()


@register.simple_tag(takes_context=True)
def reserve_shortfalls(context: dict[str, Any]) -> list[ReserveReconciliation] | None:
    """The latest shortfalls, for those who may see reconciliations (None otherwise)."""
    user = getattr(context.get("request"), "user", None)
    if user is None or not user.has_perm("ledger.view_reservereconciliation"):
        return None
    return reserves.reserve_shortfalls()
