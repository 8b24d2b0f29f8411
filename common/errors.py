"""The one domain error family. The API turns it into the JSON error of docs/architecture.md, the browser
views into form errors; services raise nothing else for a broken rule."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    status = 400
    code = "invalid"

    def __init__(
        self, message: str, *, fields: dict[str, Any] | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        if code:
            self.code = code


class ValidationFailed(ApplicationError):
    """Bad input: names the field or the rule; nothing was changed."""

    status = 400
    code = "invalid"

    @classmethod
    def for_field(cls, field: str, message: str, code: str | None = None) -> ValidationFailed:
        """The usual shape: "field: message", and the message under that field."""
        return cls(f"{field}: {message}", fields={field: [message]}, code=code)


class NotFound(ApplicationError):
    status = 404
    code = "not_found"


class PermissionDenied(ApplicationError):
    status = 403
    code = "forbidden"


class Conflict(ApplicationError):
    """The thing moved on (a race was lost, or stock ran out): retrying as-is won't help."""

    status = 409
    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class InsufficientFunds(Conflict):
    code = "insufficient_funds"


class RateLimited(ApplicationError):
    """Too much too fast: the same call may succeed once the window has moved on. The same code
    as the API's own throttles (docs/architecture.md §7), so a client handles one 429."""

    status = 429
    code = "throttled"
    # Seconds until the window has moved on: sent as the Retry-After header.
    retry_after: int = 60
