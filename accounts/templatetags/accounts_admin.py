"""The admin index's count of KYC documents to review (templates/admin/index.html)."""

from __future__ import annotations

from typing import Any

from django import template

from accounts import selectors

register = template.Library()


@register.simple_tag(takes_context=True)
def pending_kyc_count(context: dict[str, Any]) -> int | None:
    """Pending KYC documents, for reviewers only (None for other staff: no count to leak)."""
    user = getattr(context.get("request"), "user", None)
    if user is None or not user.has_perm("accounts.review_kyc"):
        return None
    return selectors.kyc_pending_count()
