"""{% live_socket %}: for a logged-in page (LIVE_ENABLED), where it opens its socket and the
last event id the page already reflects, so the socket resumes from there (nothing between the
render and the connect is missed, nothing before it is replayed); and static/js/live.js with its
indicator's CSS. Nothing at all when live push is off: the page polls as before."""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext

from notifications.live import events

register = template.Library()


@register.simple_tag(takes_context=True)
def live_socket(context: dict[str, Any]) -> str:
    request = context.get("request")
    user = getattr(request, "user", None)
    if not settings.LIVE_ENABLED or user is None or not user.is_authenticated:
        return ""
    # The indicator's texts in the reader's language, for static/js/live.js to show.
    return format_html(
        '<meta name="live-socket" content="{}" data-last-id="{}" data-notifications-url="{}"'
        ' data-text-connecting="{}" data-text-live="{}" data-text-reconnecting="{}"'
        ' data-title-live="{}" data-title-reconnecting="{}">'
        '<link rel="stylesheet" href="{}"><script src="{}" defer></script>',
        settings.LIVE_WS_URL or "/ws/v1/live/",
        events.last_id(user_id=user.pk),
        reverse("notifications"),
        gettext("Connecting…"),
        gettext("Live"),
        gettext("Reconnecting…"),
        gettext("Updates arrive as they happen"),
        gettext("Updates every few seconds until the live connection is back"),
        static("css/live.css"),
        static("js/live.js"),
    )
