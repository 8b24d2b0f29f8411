from __future__ import annotations

from typing import Any

from django.http import HttpRequest


def two_factor(request: HttpRequest) -> dict[str, Any]:
    """Whether forms that move money must ask for a 2FA code (lazy: one query when used)."""
    from django.utils.functional import SimpleLazyObject

    from accounts.services import has_two_factor

    return {
        "has_two_factor": SimpleLazyObject(lambda: has_two_factor(getattr(request, "user", None)))
    }
