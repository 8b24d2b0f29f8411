"""Middleware the API does not need, skipped for it (issue 17: a lean API path).

`not_for_api(dotted_path)` wraps a middleware so that requests to /api/v1/ pass it by; every
other request goes through it as before. What is skipped for the API, and why that is safe:

- CSRF (CsrfViewMiddleware): every /api/v1/ view is a DRF view, which Django's check exempts
  anyway (APIView.as_view is csrf_exempt); DRF's SessionAuthentication runs the same CSRF check
  itself for a browser's session-authenticated call (unsafe methods need the token, as before),
  and token or API-key calls carry no cookie to forge. Nothing here sets the CSRF cookie;
- X-Frame-Options and the Content-Security-Policy: headers for HTML documents, not JSON;
- the time zone (TimeZoneMiddleware): the API's times carry their offset, it already used UTC;
- the device cookie (DeviceCookieMiddleware): bots keep no cookies, so it minted and set a new
  random cookie on every API response; browsers already have theirs from the pages, and logins
  (which read it) are pages;
- htmx (HtmxMiddleware): no htmx request goes to the API.

Kept for the API: messages (the admin's system check wants that exact middleware; lazy, it
costs nothing until a view adds one), the probes, request id and metrics, security headers, sessions and
authentication (the browser's session-authenticated calls), django-otp (a session's verified
second factor), last seen, and django-axes (lockouts of POST /api/v1/auth/token/)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

API_PREFIX = "/api/v1/"


def _for_api(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PREFIX)


class _NotForApi:
    wrapped = ""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.inner = import_string(self.wrapped)(get_response)
        # The hooks Django looks for when it loads the middleware, guarded the same way.
        for hook in ("process_view", "process_exception", "process_template_response"):
            method = getattr(self.inner, hook, None)
            if method is not None:
                setattr(self, hook, self._guarded(method))

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _for_api(request):
            return self.get_response(request)
        response: HttpResponse = self.inner(request)
        return response

    @staticmethod
    def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
        def hook(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            return None if _for_api(request) else method(request, *args, **kwargs)

        return hook


def not_for_api(dotted_path: str) -> type[_NotForApi]:
    name = dotted_path.rsplit(".", 1)[-1] + "NotForApi"
    return type(name, (_NotForApi,), {"wrapped": dotted_path})


CsrfNotForApi = not_for_api("django.middleware.csrf.CsrfViewMiddleware")
XFrameNotForApi = not_for_api("django.middleware.clickjacking.XFrameOptionsMiddleware")
TimeZoneNotForApi = not_for_api("accounts.middleware.TimeZoneMiddleware")
DeviceCookieNotForApi = not_for_api("accounts.middleware.DeviceCookieMiddleware")
HtmxNotForApi = not_for_api("django_htmx.middleware.HtmxMiddleware")
CspNotForApi = not_for_api("csp.middleware.CSPMiddleware")
