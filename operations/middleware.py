"""Three middlewares: the probes (first of all, before host checks and the HTTPS redirect, so
an orchestrator's plain-http probe to 127.0.0.1 gets an answer), the request id with the user
and trade it concerns, and the request metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from operations import context

Handler = Callable[[HttpRequest], HttpResponse]
access_log = logging.getLogger("operations.request")


class ProbeMiddleware:
    """Answers /healthz, /readyz and /metrics before any other middleware: they are for the
    orchestrator and Prometheus on the internal network, which reach the container by address
    (not a name in ALLOWED_HOSTS) over plain http (TLS ends at the proxy). /metrics wants its
    bearer token; the probes tell nothing secret."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from operations import views

        probe = views.PROBES.get(request.path)
        if probe is not None:
            return probe(request)
        return self.get_response(request)


class RequestContextMiddleware:
    """A request id for every request (the client's X-Request-ID if it is plain, else a new
    one), echoed in the response; the user id once authenticated and the trade id from the URL,
    for every log line written while serving it and every task it queues."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = context.new_request_id(request.headers.get("X-Request-ID"))
        tokens = context.bind(request_id=request_id, user_id=None, trade_id=None)
        request_token = context.http_request.set(request)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            # One line per request (gunicorn's access log is off): the path without its query
            # string, which may hold what a client should have sent in a header.
            access_log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        finally:
            context.http_request.reset(request_token)
            context.unbind(tokens)
        response["X-Request-ID"] = request_id
        return response

    def process_view(
        self, request: HttpRequest, view: Any, args: Any, kwargs: dict[str, Any]
    ) -> None:
        # The user is read from the request when a line is written (context.current): token
        # users are known only once DRF has authenticated them inside the view.
        if isinstance(kwargs.get("trade_id"), int):
            context.trade_id.set(kwargs["trade_id"])


class RequestMetricsMiddleware:
    """Counts requests by view (the URL pattern's name) and status, and times them."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        from operations.metrics import request_seconds, requests_total

        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        view = (match.view_name or match._func_path) if match else "<unmatched>"
        requests_total.labels(view, request.method or "", str(response.status_code)).inc()
        request_seconds.labels(view).observe(time.perf_counter() - started)
        return response
