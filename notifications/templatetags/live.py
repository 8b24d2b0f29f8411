"""{% live_socket %}: for a logged-in page (LIVE_ENABLED), where it opens its socket and the
last event id the page already reflects, so the socket resumes from there (nothing between the
render and the connect is missed, nothing before it is replayed); and static/js/live.js with its
indicator's CSS. Nothing at all when live push is off: the page polls as before."""

from __future__ import annotations

import functools
import json
from typing import Any

from django import template
from django.conf import settings
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import get_language, gettext, ngettext, override

from notifications.live import events

register = template.Library()

BADGE_CAP = 99  # past it the badge says "99+" (notifications.selectors.UNREAD_BADGE_CAP)


@functools.lru_cache(maxsize=16)
def unread_labels(language: str) -> tuple[str, str, str]:
    """The live badge's spoken label in this language, as the page header's: the distinct
    forms of "N unread" (JSON), which of them each count from 1 to 99 takes (one digit a count:
    the language's own plural rule, applied here by gettext), and the label past 99."""
    with override(language):
        forms: list[str] = []
        index = []
        for n in range(1, BADGE_CAP + 1):
            text = ngettext("%(counter)s unread", "%(counter)s unread", n)
            if text not in forms:
                forms.append(text)
            index.append(str(forms.index(text)))
        many = gettext("More than 99 unread")
    return json.dumps(forms, ensure_ascii=False), "".join(index), many


@register.simple_tag(takes_context=True)
def live_socket(context: dict[str, Any]) -> str:
    request = context.get("request")
    user = getattr(request, "user", None)
    if not settings.LIVE_ENABLED or user is None or not user.is_authenticated:
        return ""
    # The indicator's and the badge's texts in the reader's language, for static/js/live.js.
    forms, plural, many = unread_labels(get_language() or settings.LANGUAGE_CODE)
    return format_html(
        '<meta name="live-socket" content="{}" data-last-id="{}" data-notifications-url="{}"'
        ' data-text-connecting="{}" data-text-live="{}" data-text-reconnecting="{}"'
        ' data-title-live="{}" data-title-reconnecting="{}"'
        ' data-unread-forms="{}" data-unread-plural="{}" data-text-unread-many="{}">'
        '<link rel="stylesheet" href="{}"><script src="{}" defer></script>',
        settings.LIVE_WS_URL or "/ws/v1/live/",
        events.last_id(user_id=user.pk),
        reverse("notifications"),
        gettext("Connecting…"),
        gettext("Live"),
        gettext("Reconnecting…"),
        gettext("Updates arrive as they happen"),
        gettext("Updates every few seconds until the live connection is back"),
        forms,
        plural,
        many,
        static("css/live.css"),
        static("js/live.js"),
    )
