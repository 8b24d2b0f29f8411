"""The in-app notification list (the header shows the unread count)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from common.errors import ApplicationError
from notifications import selectors, services
from notifications.models import Notification


@login_required
@require_GET
def notification_list(request: HttpRequest) -> HttpResponse:
    page = Paginator(selectors.notification_list_for_user(user=request.user), 50).get_page(
        request.GET.get("page")
    )
    return render(request, "notifications/list.html", {"page": page})


@login_required
@require_POST
def notification_read(request: HttpRequest, notification_id: int) -> HttpResponse:
    try:
        notification = services.notification_mark_read(
            notification_id=notification_id, user=request.user
        )
    except ApplicationError:
        return redirect("notifications")
    if notification.trade_id:
        room = reverse("trade_detail", args=[notification.trade_id])
        if notification.kind == Notification.Kind.FEEDBACK:
            return redirect(f"{room}#feedback")
        return redirect(room)
    if notification.loan_id:
        return redirect("lending:loan_detail", notification.loan_id)
    if notification.offer_id:
        return redirect("offer_edit", notification.offer_id)
    return redirect("notifications")
