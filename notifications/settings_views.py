"""The settings page's Notifications section (templates/notifications/_preferences.html):
save the channels, make a Telegram link code, unlink. Thin: each calls one service."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_POST

from common.errors import ApplicationError
from notifications import preferences, telegram
from notifications.models import NotificationPreference


def _section() -> str:
    return reverse("settings") + "#notifications"


@login_required
@require_POST
def preferences_save(request: HttpRequest) -> HttpResponse:
    # A checkbox left unticked is not sent: every category is set from what was ticked.
    by_email = set(request.POST.getlist("email"))
    by_telegram = set(request.POST.getlist("telegram"))
    keep_telegram = not telegram.telegram_enabled()  # the column isn't shown: leave it as it was
    changes: list[dict[str, object]] = []
    for category in NotificationPreference.Category.values:
        change: dict[str, object] = {"category": category, "email": category in by_email}
        if not keep_telegram:
            change["telegram"] = category in by_telegram
        changes.append(change)
    try:
        preferences.preferences_set(user=request.user, changes=changes)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, gettext("Notification settings saved."))
    return redirect(_section())


@login_required
@require_POST
def telegram_link(request: HttpRequest) -> HttpResponse:
    if not telegram.telegram_enabled():
        messages.error(request, gettext("Telegram is not set up on this site."))
        return redirect(_section())
    code, expires_at = telegram.telegram_link_code_create(user=request.user)
    context = {
        "code": code,
        "expires_at": expires_at,
        "minutes": settings.TELEGRAM_LINK_CODE_MINUTES,
        "bot_name": settings.TELEGRAM_BOT_NAME,
    }
    response = render(request, "notifications/telegram_link.html", context)
    response["Cache-Control"] = "no-store"  # the code is shown once
    return response


@login_required
@require_POST
def telegram_unlink(request: HttpRequest) -> HttpResponse:
    telegram.telegram_unlink(user=request.user)
    messages.success(request, gettext("Telegram unlinked: no more news goes there."))
    return redirect(_section())
