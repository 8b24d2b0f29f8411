"""DRF glue: one place that turns domain and framework errors into DESIGN.md's JSON error."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from common.errors import ApplicationError


def _error(code: str, message: str, fields: dict[str, Any] | None, http_status: int) -> Response:
    return Response(
        {"error": {"code": code, "message": message, "fields": fields or {}}}, status=http_status
    )


def _flatten(detail: Any) -> dict[str, Any]:
    if isinstance(detail, dict):
        return {
            k: [str(x) for x in v] if isinstance(v, list) else [str(v)] for k, v in detail.items()
        }
    return {"non_field_errors": [str(x) for x in detail]} if isinstance(detail, list) else {}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        return _error(exc.code, exc.message, exc.fields, exc.status)
    if isinstance(exc, OperationalError):
        return _error(
            "unavailable", "The service is briefly unavailable; retry shortly.", None, 503
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten(exc.detail)
        first = next(iter(fields.items()), ("", ["Invalid input."]))
        message = f"{first[0]}: {first[1][0]}" if first[0] else first[1][0]
        return _error("invalid", message, fields, status.HTTP_400_BAD_REQUEST)
    assert isinstance(exc, exceptions.APIException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    code = exc.get_codes() if isinstance(exc.get_codes(), str) else "error"
    out = _error(str(code), str(detail), None, response.status_code)
    for header in ("Retry-After", "WWW-Authenticate"):
        if header in response:
            out[header] = response[header]
    return out
