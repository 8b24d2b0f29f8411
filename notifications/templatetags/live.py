"""{% live_socket %}: where a logged-in page opens its socket (static/js/live.js) and the last
event id the page already reflects, so the socket resumes from there (nothing between the render
and the connect is missed, nothing before it is replayed)."""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings
from django.urls import reverse
from django.utils.html import format_html

from notifications.live import events

register = template.Library()


@register.simple_tag(takes_context=True)
def live_socket(context: dict[str, Any]) -> str:
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return ""
    return format_html(
        '<meta name="live-socket" content="{}" data-last-id="{}" data-notifications-url="{}">',
        settings.LIVE_WS_URL or "/ws/v1/live/",
        events.last_id(user_id=user.pk),
        reverse("notifications"),
    )
