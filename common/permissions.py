from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

from accounts.authentication import scopes_of


class HasScope(BasePermission):
    """Reads need `read`; writes need the view's `write_scope` (`trade` or `withdraw`)."""

    message = "This API key lacks the scope this call needs."

    def has_permission(self, request: Any, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        needed = "read" if request.method in SAFE_METHODS else getattr(view, "write_scope", "trade")
        if needed not in scopes_of(request):
            self.message = f"This API key lacks the '{needed}' scope."
            return False
        return True
