"""The API's scopes: what a credential may do. The vocabulary lives here, beneath every app; the
credentials themselves (accounts' API keys) carry a subset in their `scopes`."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

# read: look; trade: offers, takes, releases, chat; withdraw: move money out.
ALL_SCOPES = frozenset({"read", "trade", "withdraw"})


def scopes_of(request: Any) -> frozenset[str]:
    """What this request may do: a scoped credential's scopes, else everything (the account's
    token or a browser session)."""
    scopes = getattr(getattr(request, "auth", None), "scopes", None)
    return ALL_SCOPES if scopes is None else frozenset(scopes)


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


class AccountCredentialForWrites(BasePermission):
    """Managing credentials (API keys, webhooks) takes the account's own credential, the account
    token or a browser session: a scoped API key may list them, never create, revoke or delete
    one, so a leaked trade key cannot mint a stronger key or lock its owner out."""

    message = (
        "API keys can't manage API keys or webhooks; use your account token (POST "
        "/api/v1/auth/token/) or the settings page."
    )
    code = "account_credential_required"

    def has_permission(self, request: Any, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return getattr(getattr(request, "auth", None), "scopes", None) is None


def throttle_ident(user: Any, credential: Any) -> str:
    """Whom the per-key rate limit counts (common.api.KeyRateThrottle): the API key (one with
    scopes), or the user (the account token, a session)."""
    if credential is not None and hasattr(credential, "scopes"):
        return f"key{credential.pk}"
    return f"user{user.pk}"
