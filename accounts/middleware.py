"""Profile.last_seen for the order book's "last seen": written at most every few minutes per
user (a cache key remembers the last write), never on every request."""

from __future__ import annotations

from collections.abc import Callable

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

EVERY_SECONDS = 300


class LastSeenMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            key = f"last-seen:{user.pk}"
            try:
                fresh = cache.add(key, 1, EVERY_SECONDS)
            except Exception:  # the cache is down: skip, it's only a hint
                fresh = False
            if fresh:
                from accounts.models import Profile

                Profile.objects.filter(user_id=user.pk).update(last_seen=timezone.now())
        return response
