"""Error pages: JSON under /api/ (docs/architecture.md's error format), HTML elsewhere."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext
from django.views.csrf import csrf_failure as html_csrf_failure
from django.views.decorators.csrf import csrf_exempt


def _json(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "fields": {}}}, status=status)


@csrf_exempt
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    return _json("not_found", gettext("No API endpoint at {path}.").format(path=request.path), 404)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return api_not_found(request)
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return _json(
            "server_error", gettext("Something went wrong on our side; nothing was changed."), 500
        )
    return render(request, "500.html", status=500)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    if request.path.startswith("/api/"):
        return _json(
            "csrf_failed",
            gettext("CSRF check failed ({reason}); bots should use a token.").format(reason=reason),
            403,
        )
    return html_csrf_failure(request, reason=reason)


def lockout(
    request: HttpRequest, credentials: Any = None, *args: Any, **kwargs: Any
) -> HttpResponse:
    """django-axes' answer to a locked-out login: JSON under /api/, a page elsewhere."""
    message = gettext(
        "Too many failed logins: this account is locked for a while from here. Try later or "
        "reset your password."
    )
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = _json("locked_out", message, 429)
    else:
        response = HttpResponse(
            f"<!doctype html><title>Locked out</title><h1>Locked out</h1><p>{message}</p>"
            '<p><a href="/accounts/password/reset/">Reset your password</a></p>',
            status=429,
        )
    response["Retry-After"] = "3600"
    return response
