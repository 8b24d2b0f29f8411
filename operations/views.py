"""/healthz (the process answers), /readyz (it can serve: PostgreSQL, Redis, the checkpoint lag)
and /metrics (Prometheus text, behind METRICS_TOKEN). Reached through ProbeMiddleware."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from operations import metrics, selectors


def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. It reads nothing, so a database outage does not get every
    web container restarted (readiness takes it out of the load balancer instead)."""
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> HttpResponse:
    checks = selectors.readiness()
    ready = all(check.ok for check in checks.values())
    body = {
        "status": "ready" if ready else "not ready",
        "checks": {name: {"ok": check.ok, **check.detail} for name, check in checks.items()},
    }
    return JsonResponse(body, status=200 if ready else 503)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text for a scraper that sends `Authorization: Bearer <METRICS_TOKEN>`; without
    a configured token the endpoint is off (404), with a wrong or missing one 401."""
    token = getattr(settings, "METRICS_TOKEN", "")
    if not token:
        return JsonResponse({"error": "metrics are off: set METRICS_TOKEN"}, status=404)
    sent = request.headers.get("Authorization", "")
    scheme, _, credential = sent.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(credential.encode(), token.encode()):
        response = JsonResponse({"error": "a bearer token is required"}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)


PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/healthz": healthz,
    "/readyz": readyz,
    "/metrics": metrics_view,
}
