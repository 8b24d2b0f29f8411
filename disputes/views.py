"""The parties' side of a dispute in the browser: the trade room's dispute panel and "open a
dispute" action (joined to escrow's room in DisputesConfig.ready()), adding evidence, and evidence
files served only through the permission check (never from a public URL)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from common.errors import ApplicationError, NotFound
from common.files import private_file_response
from disputes import selectors, services
from disputes.forms import DisputeForm
from escrow.models import Trade
from escrow.views import PANEL_VERSION, RoomAction


def trade_room_panel(trade: Trade, user: Any) -> dict[str, Any]:
    """The trade room's dispute panel: the dispute, its evidence and the moderators' SLA."""
    dispute = selectors.dispute_for_trade(trade_id=trade.pk)
    context: dict[str, Any] = {"dispute": dispute, PANEL_VERSION: ""}
    if dispute is not None:
        evidence = list(selectors.evidence_list(dispute=dispute))
        context["evidence"] = evidence
        context["sla_hours"] = settings.DISPUTE_SLA_HOURS
        # Redraw the room when the moderator takes it, asks for evidence or decides, or when
        # either party adds evidence.
        context[PANEL_VERSION] = (
            f"{dispute.pk}-{dispute.status}-{dispute.assigned_to_id}-{len(evidence)}"
        )
    return context


def _open_from_room(*, trade: Trade, actor: Any, data: dict[str, Any]) -> None:
    services.dispute_open(
        trade_id=trade.pk, actor=actor, category=data["category"], text=data["reason"]
    )


OPEN_DISPUTE = RoomAction(form=DisputeForm, run=_open_from_room)


@login_required
@require_POST
def evidence_add(request: HttpRequest, dispute_id: int) -> HttpResponse:
    try:
        dispute = selectors.dispute_get_for_user(dispute_id=dispute_id, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    try:
        services.evidence_submit(
            dispute_id=dispute.pk,
            actor=request.user,
            statement=request.POST.get("statement", ""),
            file=request.FILES.get("file"),
        )
        messages.success(request, gettext("Evidence added. The moderator sees it now."))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect(f"{reverse('trade_detail', args=[dispute.trade_id])}#dispute")


@login_required
@require_GET
def evidence_file(request: HttpRequest, evidence_id: int) -> FileResponse:
    try:
        evidence = selectors.evidence_file_for_user(evidence_id=evidence_id, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    if evidence.dispute.trade.role_of(request.user) is None:
        # Read by a moderator, not a party: written to the moderators' audit.
        services.dispute_file_read(dispute_id=evidence.dispute_id, actor=request.user)
    return private_file_response(
        evidence.file, content_type=evidence.content_type, name=evidence.file_name
    )
