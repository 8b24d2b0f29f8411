"""DRF glue: one place that turns domain and framework errors into the JSON error of docs/architecture.md."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import OperationalError
from django.http import Http404
from django.utils.translation import gettext, gettext_lazy
from drf_spectacular.utils import inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import get_authorization_header
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from common import hotcache
from common.errors import ApplicationError, RateLimited
from common.http import client_ip
from common.permissions import HasScope, throttle_ident

logger = logging.getLogger(__name__)


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
        answer = _error(exc.code, exc.message, exc.fields, exc.status)
        if isinstance(exc, RateLimited):
            answer["Retry-After"] = str(exc.retry_after)
        return answer
    if isinstance(exc, OperationalError):
        return _error(
            "unavailable", gettext("The service is briefly unavailable; retry shortly."), None, 503
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
        first = next(iter(fields.items()), ("", [gettext("Invalid input.")]))
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


# --- the base of every API view -----------------------------------------------------------------


class _HeaderThrottle(SimpleRateThrottle):
    """Rate from settings.API_RATE_LIMITS at call time; remembers what X-RateLimit-* report."""

    # Set by SimpleRateThrottle.__init__ (parse_rate); the stubs do not declare them.
    num_requests: int
    duration: int

    def get_rate(self) -> str | None:
        return settings.API_RATE_LIMITS.get(cast(str, self.scope))

    def get_ident(self, request: Any) -> str:
        # Not DRF's own, which believes any X-Forwarded-For: the address a trusted proxy saw.
        return client_ip(request)

    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            allowed = super().allow_request(request, view)
        except Exception:  # the cache (Redis) is down: trading must go on
            logger.warning("rate limiting skipped: the cache is unavailable", exc_info=True)
            return True
        if self.rate is not None and getattr(self, "key", None):
            remaining = max(0, self.num_requests - len(self.history))
            reset = (
                int(self.history[-1] + self.duration - self.now) if self.history else self.duration
            )
            current = getattr(request, "_ratelimit", None)
            # Report the tightest of the limits that apply.
            if current is None or remaining < current[1]:
                request._ratelimit = (self.num_requests, remaining, max(reset, 0))
        return allowed


class KeyRateThrottle(_HeaderThrottle):
    """Per API key (or per user for tokens and sessions)."""

    scope = "key"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        ident = throttle_ident(request.user, request.auth)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class IpRateThrottle(_HeaderThrottle):
    scope = "ip"

    def get_cache_key(self, request: Any, view: Any) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


# Both throttles in one round trip (issue 17): each limit is a sliding log in a sorted set (one
# member per request, scored by its time), as DRF's SimpleRateThrottle keeps it in a list, but
# checked and recorded for every key at once, atomically, by this script. A request is recorded
# only if every limit lets it through. Returns, per key, how many requests are in its window and
# the oldest one's time (for Retry-After and X-RateLimit-Reset), then 1 if allowed.
_THROTTLE_BODY = """
local now = tonumber(ARGV[1])
local allowed = 1
for i, key in ipairs(keys) do
  local limit = tonumber(ARGV[base + 2 * i])
  local duration = tonumber(ARGV[base + 2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - duration)
  local n = redis.call('ZCARD', key)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  out[#out + 1] = n
  out[#out + 1] = oldest[2] or ''
  if n >= limit then allowed = 0 end
end
if allowed == 1 then
  local member = ARGV[1] .. ':' .. ARGV[#ARGV]
  for i, key in ipairs(keys) do
    redis.call('ZADD', key, now, member)
    redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[base + 2 * i + 1])) + 1)
  end
end
out[#out + 1] = allowed
return out
"""
# KEYS: the limits' keys; ARGV: now, (limit, duration) per key, a unique member.
_THROTTLE_LUA = "local keys = KEYS\nlocal base = 0\nlocal out = {}\n" + _THROTTLE_BODY
# The credentials' look-up and both limits in one round trip (ApiView.initial): KEYS: the cached
# look-up of the token (Django's full key), the per-key limit's ident cached beside it, then the
# limits that need no user (per IP); ARGV: now, the per-key limit's key with `{ident}` in it (or
# ""), then as above. Returns {false} without touching a limit when either cached part is missing
# (the caller then goes the usual way: the look-up, then the limits), else the look-up and the
# limits' answer as _THROTTLE_LUA gives it.
_AUTH_THROTTLE_LUA = (
    """
local entry = redis.call('GET', KEYS[1])
local ident = redis.call('GET', KEYS[2])
if (not entry) or (not ident) then return {false} end
local keys = {}
for i = 3, #KEYS do keys[#keys + 1] = KEYS[i] end
if ARGV[2] ~= '' then keys[#keys + 1] = (string.gsub(ARGV[2], '{ident}', ident)) end
local base = 1
local out = {entry}
"""
    + _THROTTLE_BODY
)
_throttle_script: Any = None


def _throttle_in_one_trip(
    request: Any, view: Any, throttles: list[_HeaderThrottle]
) -> list[float] | None:
    """Check and record every limit in one Redis call; returns the waits of the limits that
    refuse (empty: allowed), or None when the cache is not Redis (the caller falls back to
    DRF's per-throttle path). Fails open: Redis down or slow lets the request through."""
    global _throttle_script
    client = hotcache.raw_client()
    if client is None:
        return None
    keyed = [(t, t.get_cache_key(request, view)) for t in throttles if t.rate is not None]
    keyed = [(t, k) for t, k in keyed if k]
    if not keyed or not hotcache.available():
        return []
    now = time.time()
    argv: list[Any] = [repr(now)]
    for t, _ in keyed:
        argv += [t.num_requests, t.duration]
    argv.append(uuid.uuid4().hex)  # a unique member for this request
    try:
        if _throttle_script is None:
            _throttle_script = client.register_script(_THROTTLE_LUA)
        reply = _throttle_script(keys=[k for _, k in keyed], args=argv, client=client)
    except Exception as exc:  # the cache (Redis) is down: trading must go on
        hotcache.mark_down(exc)
        logger.warning("rate limiting skipped: the cache is unavailable", exc_info=True)
        return []
    return _waits_of(request, keyed, reply, now)


def _waits_of(
    request: Any, keyed: list[tuple[_HeaderThrottle, Any]], reply: list[Any], now: float
) -> list[float]:
    """The limits script's answer: X-RateLimit-* of the tightest limit kept on the request, and
    the waits of the limits that refuse (empty: allowed)."""
    allowed = int(reply[-1]) == 1
    waits: list[float] = []
    for i, (t, _) in enumerate(keyed):
        count, oldest_raw = int(reply[2 * i]), reply[2 * i + 1]
        oldest = float(oldest_raw) if oldest_raw not in (b"", "", None) else now
        if allowed:
            count += 1
        remaining = max(0, t.num_requests - count)
        reset = int(oldest + t.duration - now) if count else t.duration
        current = getattr(request, "_ratelimit", None)
        if current is None or remaining < current[1]:  # report the tightest limit
            request._ratelimit = (t.num_requests, remaining, max(reset, 0))
        if not allowed and count >= t.num_requests:
            waits.append(max(0.0, oldest + t.duration - now))
    if not allowed and not waits:  # another limit refused: its wait is above
        waits.append(1.0)
    return waits


_auth_throttle_script: Any = None


def _authenticate_and_throttle(request: Any, view: APIView) -> None:
    """A token call's credentials and both its limits in one Redis round trip, instead of two
    (the look-up in the authenticator, then the limits script): when the token's look-up and
    the per-key limit's ident are both cached, the request's user is set from the look-up and
    the limits' answer kept for check_throttles. Anything else (no token, another
    authenticator first, other throttles, a cache miss, Redis not there) leaves the request to
    DRF's usual path, which then caches what this needs next time. One difference with that
    path: a token request later refused by a permission has been counted by the limits."""
    global _auth_throttle_script
    authenticator = request.authenticators[0] if request.authenticators else None
    cached_keys = getattr(authenticator, "cached_lookup_keys", None)
    if cached_keys is None or not hotcache.available():
        return
    header = get_authorization_header(request).split()
    if len(header) != 2 or header[0].lower() != b"token":
        return
    try:
        raw = header[1].decode()
    except UnicodeError:
        return
    client = hotcache.raw_client()
    throttles = [t for t in view.get_throttles() if getattr(t, "rate", None) is not None]
    if client is None or any(type(t) not in (IpRateThrottle, KeyRateThrottle) for t in throttles):
        return
    fixed = [(t, t.get_cache_key(request, view)) for t in throttles if type(t) is IpRateThrottle]
    per_key = [t for t in throttles if type(t) is KeyRateThrottle][:1]
    template = (
        per_key[0].cache_format % {"scope": per_key[0].scope, "ident": "{ident}"} if per_key else ""
    )
    keyed: list[tuple[Any, Any]] = [*fixed, *((t, template) for t in per_key)]
    now = time.time()
    argv: list[Any] = [repr(now), template]
    for t, _ in keyed:
        argv += [t.num_requests, t.duration]
    argv.append(uuid.uuid4().hex)
    try:
        if _auth_throttle_script is None:
            _auth_throttle_script = client.register_script(_AUTH_THROTTLE_LUA)
        reply = _auth_throttle_script(
            keys=[*cached_keys(raw), *(k for _, k in fixed)], args=argv, client=client
        )
    except Exception as exc:  # the cache (Redis) is down: the usual path fails open
        hotcache.mark_down(exc)
        return
    if not reply or reply[0] is None:
        return
    user, credential = authenticator.from_cached_lookup(reply[0])  # type: ignore[union-attr]
    request._authenticator = authenticator
    request.user, request.auth = user, credential
    request._lean_waits = _waits_of(request, keyed, reply[1:], now)


class CursorPage(CursorPagination):
    page_size = 50
    max_page_size = 200
    page_size_query_param = "limit"
    ordering = "-id"


class ApiView(APIView):
    # Auth, scopes, throttles and X-RateLimit-* headers shared by every endpoint. (A comment, not
    # a docstring: drf-spectacular would show a docstring as every endpoint's description.)

    permission_classes = [HasScope]
    throttle_classes = [IpRateThrottle, KeyRateThrottle]
    write_scope = "trade"

    def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        _authenticate_and_throttle(request, self)
        super().initial(request, *args, **kwargs)

    def check_throttles(self, request: Any) -> None:
        throttles = self.get_throttles()
        ours = [t for t in throttles if isinstance(t, _HeaderThrottle)]
        waits = getattr(request, "_lean_waits", None)  # answered with the credentials
        if waits is None:
            waits = _throttle_in_one_trip(request, self, ours) if ours else None
        if waits is None:  # not Redis: DRF's path, one throttle at a time
            super().check_throttles(request)
            return
        for other in throttles:
            if not isinstance(other, _HeaderThrottle) and not other.allow_request(request, self):
                waits.append(other.wait() or 0)
        if waits:
            self.throttled(request, max(waits))

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        limits = getattr(request, "_ratelimit", None)
        if limits:
            limit, remaining, reset = limits
            response["X-RateLimit-Limit"] = str(limit)
            response["X-RateLimit-Remaining"] = str(remaining)
            response["X-RateLimit-Reset"] = str(int(time.time()) + int(reset))
        return response

    def paginate(
        self, queryset: Any, serializer: type[serializers.Serializer[Any]], **context: Any
    ) -> Response:
        page = CursorPage()
        if hasattr(self, "ordering"):
            page.ordering = self.ordering
        rows = page.paginate_queryset(queryset, self.request, view=self)
        data = serializer(rows, many=True, context={"request": self.request, **context}).data
        return page.get_paginated_response(data)


class AmountInput(serializers.CharField):
    """Amounts arrive as decimal strings; JSON numbers are refused (they are floats)."""

    default_error_messages = {"not_string": 'Send amounts as decimal strings, e.g. "0.015".'}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("not_string")
        return super().to_internal_value(data)


class FundsConfirmInput(serializers.Serializer[dict[str, Any]]):
    """The fund password of a move of funds (a release, a withdrawal, an API key): the 2FA code
    once 2FA is on, else the account password (accounts.services.funds_confirm checks it)."""

    otp = serializers.CharField(
        max_length=10,
        required=False,
        help_text=gettext_lazy("The 2FA code, required once 2FA is on; or the X-OTP header."),
    )
    password = serializers.CharField(
        max_length=128,
        required=False,
        write_only=True,
        style={"input_type": "password"},
        help_text=gettext_lazy(
            "The account password, required while 2FA is off (the fund password)."
        ),
    )


class ErrorSerializer(serializers.Serializer):
    class Body(serializers.Serializer):
        code = serializers.CharField()
        message = serializers.CharField()
        fields = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))  # type: ignore[assignment]  # a field named `fields`

    error = Body()


# The error answers every endpoint may give, for the schema: one shape, the JSON error.
ERRORS = {
    400: ErrorSerializer,
    401: ErrorSerializer,
    403: ErrorSerializer,
    404: ErrorSerializer,
    409: ErrorSerializer,
    429: ErrorSerializer,
}


def paginated(serializer: type[serializers.Serializer]) -> serializers.Serializer:
    """The response schema of a cursor-paginated list of `serializer`."""
    name = serializer.__name__.removesuffix("Out")
    return inline_serializer(
        f"Paginated{name}List",
        {
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": serializer(many=True),
        },
    )


def otp_from(request: Any) -> str | None:
    """A 2FA code sent as the X-OTP header or an `otp` field of the body."""
    header = request.headers.get("X-OTP")
    if header:
        return header
    data: Any = getattr(request, "data", None)
    return data.get("otp") if hasattr(data, "get") else None
