"""The trade room (the browser UI): steps, the actions each party may take now, the chat. Panels
and actions of higher layers (disputes) join it through room_panels and room_actions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext, gettext_lazy, gettext_noop
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.middleware import HtmxDetails

from accounts.services import funds_confirm
from common.db import replica_reads
from common.errors import ApplicationError, NotFound
from common.files import private_file_response
from escrow import selectors as escrow_selectors
from escrow import services as escrow
from escrow import services as escrow_services
from escrow.models import CancelReason, Trade
from escrow.selectors import trader_stats
from escrow.selectors.payment import trade_payment_account_for
from escrow.selectors.trades import SETTLING_STATES

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

S = Trade.State


class HtmxHttpRequest(HttpRequest):
    """What django_htmx's middleware makes of a request (its documented way to type it)."""

    htmx: HtmxDetails


STATE_LABELS: dict[str, StrOrPromise] = {
    S.FUNDED: gettext_lazy("Awaiting payment"),
    S.PAID: gettext_lazy("Paid · awaiting release"),
    S.RELEASING: gettext_lazy("Settling…"),
    S.COMPLETED: gettext_lazy("Completed"),
    S.CANCELLED: gettext_lazy("Cancelled"),
    S.EXPIRED: gettext_lazy("Expired"),
    S.DISPUTED: gettext_lazy("In dispute"),
    S.REFUNDING: gettext_lazy("Settling…"),
    S.REFUNDED: gettext_lazy("Refunded"),
    S.SPLITTING: gettext_lazy("Settling…"),
    S.SPLIT: gettext_lazy("Split by moderator"),
}
EVENT_LABELS: dict[str, StrOrPromise] = {
    S.FUNDED: gettext_lazy("Trade opened · crypto locked in escrow"),
    S.PAID: gettext_lazy("Marked as paid by the buyer"),
    S.RELEASING: gettext_lazy("Released · settlement queued"),
    S.COMPLETED: gettext_lazy("Completed · crypto delivered to the buyer"),
    S.CANCELLED: gettext_lazy("Cancelled · crypto returned to the seller"),
    S.EXPIRED: gettext_lazy("Expired · payment window ended"),
    S.DISPUTED: gettext_lazy("Dispute opened"),
    S.REFUNDING: gettext_lazy("Moderator decided: refund the seller"),
    S.REFUNDED: gettext_lazy("Refunded to the seller"),
    S.SPLITTING: gettext_lazy("Moderator decided: split"),
    S.SPLIT: gettext_lazy("Split settled"),
}
# EscrowEvent.actor_role as stored; the room translates it when it shows the event.
ACTOR_ROLES = (
    gettext_noop("buyer"),
    gettext_noop("seller"),
    gettext_noop("moderator"),
    gettext_noop("system"),
)
FINAL_STATES = escrow.FINAL_STATES
TRADES_PAGE = 50
FEEDBACK_PAGE = 20


# --- what higher layers add to the room ---------------------------------------------------------
# disputes registers its panel (the dispute, its evidence) and the "dispute" action (its form and
# service) in DisputesConfig.ready(): escrow, a layer below, never imports them.


@dataclass(frozen=True)
class RoomAction:
    form: type[forms.Form]
    run: Callable[..., Any]  # run(trade=, actor=, data=) with the form's cleaned data


room_panels: list[Callable[[Trade, Any], dict[str, Any]]] = []
room_actions: dict[str, RoomAction] = {}
# A panel's context may carry this key: what, when it changes, must redraw the room (a dispute
# assigned, evidence added). It joins the room's version, so the live poll swaps every panel.
PANEL_VERSION = "panel_version"


def _room_form(slug: str, data: Any = None) -> forms.Form | None:
    action = room_actions.get(slug)
    return action.form(data) if action else None


# --- helpers ----------------------------------------------------------------------------------


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def _trade_or_404(trade_id: int, user: Any) -> Trade:
    try:
        return escrow_selectors.trade_get_for_user(trade_id=trade_id, user=user)
    except NotFound as exc:
        raise Http404(exc.message) from None


# --- trades -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TradeAction:
    """A button of the trade room: the target state, who presses it and the service it calls."""

    slug: str
    to: str
    label: StrOrPromise
    style: str
    confirm_style: str


ACTIONS = {
    "mark-paid": TradeAction(
        "mark-paid", S.PAID, gettext_lazy("I have paid"), "primary", "primary"
    ),
    "release": TradeAction("release", S.RELEASING, gettext_lazy("Release crypto"), "buy", "buy"),
    "cancel": TradeAction("cancel", S.CANCELLED, gettext_lazy("Cancel trade"), "ghost", "danger"),
    "dispute": TradeAction(
        "dispute", S.DISPUTED, gettext_lazy("Open a dispute"), "danger-ghost", "danger"
    ),
}
ACTION_FOR_STATE: dict[str, TradeAction] = {a.to: a for a in ACTIONS.values()}


def _run_action(
    action: TradeAction, *, trade: Trade, user: Any, reason: str, factors: dict[str, Any]
) -> Trade:
    if action.slug == "mark-paid":
        return escrow.trade_mark_paid(trade_id=trade.pk, actor=user)
    if action.slug == "release":
        # The fund password: the 2FA code, or the account password without 2FA.
        funds_confirm(user=user, otp=factors.get("otp"), password=factors.get("password"))
        return escrow.escrow_release(trade_id=trade.pk, actor=user)
    if action.slug == "cancel":
        return escrow.trade_cancel(
            trade_id=trade.pk, actor=user, cancel_reason=factors.get("cancel_reason") or ""
        )
    raise ValueError(f"unknown action {action.slug}")


class FeedbackForm(forms.Form):
    """The room's feedback form; the rules (once, which states, the length) are the service's."""

    rating = forms.ChoiceField(
        label=gettext_lazy("Your rating"),
        choices=[
            ("positive", gettext_lazy("👍 Positive")),
            ("negative", gettext_lazy("👎 Negative")),
        ],
        widget=forms.RadioSelect,
    )
    comment = forms.CharField(
        label=gettext_lazy("Comment (optional, public on their profile)"),
        required=False,
        max_length=escrow.MAX_FEEDBACK_LENGTH,
        widget=forms.Textarea({"rows": 2}),
    )


def _feedback_context(
    trade: Trade, user: Any, *, role: str | None, form: forms.Form | None = None
) -> dict[str, Any]:
    """The room's feedback panel: open to both parties once the trade is completed or resolved
    (escrow.services.FEEDBACK_STATES), each may rate the other once."""
    if role is None or trade.state not in escrow.FEEDBACK_STATES:
        return {"feedback_open": False}
    given = escrow_selectors.feedback_on_trade(trade_id=trade.pk)
    mine = next((f for f in given if f.author_id == user.pk), None)
    theirs = next((f for f in given if f.author_id != user.pk), None)
    return {
        "feedback_open": True,
        "my_feedback": mine,
        "their_feedback": theirs,
        "feedback_form": None if mine else (form or FeedbackForm()),
    }


DONE_MESSAGES = {
    "mark-paid": gettext_lazy("Marked as paid. The seller has been asked to confirm and release."),
    "release": gettext_lazy("Released. The crypto is being settled to the buyer."),
    "cancel": gettext_lazy("Trade cancelled. The crypto went back to the seller."),
    "dispute": gettext_lazy(
        "Dispute opened. A moderator will review the trade; the escrow stays locked."
    ),
}


def _trade_room(trade: Trade, user: Any) -> dict[str, Any]:
    """Everything the trade room shows, computed once for the page and for its live partial."""
    state = escrow_selectors.trade_room_state(trade=trade, user=user)
    role, deadline_passed, dispute_opens_at = (
        state.role,
        state.deadline_passed,
        state.dispute_opens_at,
    )
    actions = [ACTION_FOR_STATE[to] for to in state.moves if to in ACTION_FOR_STATE]
    events = [
        {"event": e, "label": EVENT_LABELS.get(e.new_state, e.new_state)}
        for e in trade.events.select_related("actor")
    ]
    # A settlement that failed waits for a moderator: the room says so instead of "settling".
    settlement_delayed = state.settlement_delayed
    counterparty = state.counterparty
    version = ":".join(
        str(x)
        for x in (
            trade.state,
            len(events),
            bool(dispute_opens_at),
            deadline_passed,
            bool(role),
            settlement_delayed,
        )
    )
    return {
        "trade": trade,
        "role": role,
        "counterparty": counterparty,
        "actions": actions,
        "events": events,
        "state_label": gettext("Settlement delayed")
        if settlement_delayed
        else STATE_LABELS.get(trade.state, trade.state),
        "is_final": trade.state in FINAL_STATES,
        "is_settling": trade.state in SETTLING_STATES,
        "settlement_delayed": settlement_delayed,
        "deadline_passed": deadline_passed,
        "dispute_opens_at": dispute_opens_at,
        "dispute_form": _room_form("dispute"),
        "payment_account": trade_payment_account_for(trade=trade, user=user),
        "version": version,
        "steps": _steps(trade, events),
        # issue 20: the cancel form's reasons and the daily cancellation limit it explains
        "cancel_reasons": CancelReason.choices,
        "cancel_limit": settings.CANCEL_LIMIT_PER_DAY,
    }


def _steps(trade: Trade, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The progress bar: the happy path, or the path this trade really took."""
    reached = {e["event"].new_state for e in events} | {trade.state}
    path: list[str]
    if reached & {S.CANCELLED, S.EXPIRED}:
        path = [S.FUNDED, S.CANCELLED if S.CANCELLED in reached else S.EXPIRED]
    elif S.DISPUTED in reached:
        end: dict[str, str] = {S.REFUNDING: S.REFUNDED, S.SPLITTING: S.SPLIT}
        settle = next((s for s in (S.RELEASING, S.REFUNDING, S.SPLITTING) if s in reached), None)
        path = [S.FUNDED]
        if S.PAID in reached:
            path.append(S.PAID)
        path.append(S.DISPUTED)
        if settle:
            path += [settle, end.get(settle, S.COMPLETED)]
        else:
            path.append("decision")
    else:
        path = [S.FUNDED, S.PAID, S.RELEASING, S.COMPLETED]
    names = {
        S.FUNDED: gettext_lazy("In escrow"),
        S.PAID: gettext_lazy("Buyer paid"),
        S.RELEASING: gettext_lazy("Released"),
        S.COMPLETED: gettext_lazy("Completed"),
        S.CANCELLED: gettext_lazy("Cancelled"),
        S.EXPIRED: gettext_lazy("Expired"),
        S.DISPUTED: gettext_lazy("Dispute"),
        S.REFUNDING: gettext_lazy("Refund"),
        S.REFUNDED: gettext_lazy("Refunded"),
        S.SPLITTING: gettext_lazy("Split"),
        S.SPLIT: gettext_lazy("Settled"),
        "decision": gettext_lazy("Moderator decides"),
    }
    current = path.index(trade.state) if trade.state in path else len(path) - 1
    return [
        {
            "name": names[s],
            "status": "done" if i < current else ("current" if i == current else "todo"),
        }
        for i, s in enumerate(path)
    ]


def _room_context(trade: Trade, user: Any) -> dict[str, Any]:
    """The whole room, from one read of the trade: the live part, the chat, the feedback and the
    higher layers' panels, with one version over all of them. The page and its live poll both
    render from this, so no panel can show another state than the status card."""
    context = _trade_room(trade, user)
    context.update(_chat_context(trade, user))
    context.update(_feedback_context(trade, user, role=context["role"]))
    parts = [context["version"]]
    for panel in room_panels:
        extra = dict(panel(trade, user))
        parts.append(str(extra.pop(PANEL_VERSION, "")))
        context.update(extra)
    context["version"] = ":".join(parts)
    return context


def _render_trade_room(
    request: HttpRequest,
    trade: Trade,
    *,
    status: int = 200,
    error: str = "",
    changed: bool = False,
) -> HttpResponse:
    context = _room_context(trade, request.user)
    context["error"] = error
    context["changed"] = changed
    if context["counterparty"] is not None:
        context["counterparty_stats"] = trader_stats(user=context["counterparty"])
    return render(request, "marketplace/trade_detail.html", context, status=status)


@login_required
@require_GET
def trade_detail(request: HttpRequest, trade_id: int) -> HttpResponse:
    return _render_trade_room(request, _trade_or_404(trade_id, request.user))


@login_required
@require_GET
def trade_status(request: HttpRequest, trade_id: int) -> HttpResponse:
    """The live room that htmx polls every 3s: the status card and timeline, and out of band the
    dispute panel, the chat box, the feedback panel, the alerts and the tab title, all from the
    same read. Nothing changed since the version the page shows: 204, so htmx leaves an open
    dialog and a half-typed message alone."""
    trade = _trade_or_404(trade_id, request.user)
    context = _room_context(trade, request.user)
    if request.GET.get("v") == context["version"]:
        return HttpResponse(status=204)
    return render(request, "marketplace/_trade_status.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def trade_action(request: HttpRequest, trade_id: int, action: str) -> HttpResponse:
    """Mark paid, release, cancel or dispute. A POST carries the state the page showed; if the
    trade moved on meanwhile nothing is done. Without confirm=1 it shows the confirmation page
    (what the <details> dialog of the trade room says, for browsers without it)."""
    spec = ACTIONS.get(action)
    if spec is None:
        raise Http404("No such action.")
    trade = _trade_or_404(trade_id, request.user)
    expected = request.POST.get("expected_state") if request.method == "POST" else None
    if expected is not None and expected != trade.state:
        return _render_trade_room(request, trade, status=409, changed=True)
    if request.method != "POST" or expected is None or request.POST.get("confirm") != "1":
        room = _trade_room(trade, request.user)
        if spec not in room["actions"]:
            messages.info(request, gettext("That step isn't available on this trade right now."))
            return redirect("trade_detail", trade_id=trade.pk)
        form = _room_form(spec.slug, request.POST or None)
        return render(
            request, "marketplace/trade_confirm.html", {**room, "action": spec, "form": form}
        )
    try:
        if spec.slug in room_actions:
            form = _room_form(spec.slug, request.POST)
            assert form is not None
            if not form.is_valid():
                room = _trade_room(trade, request.user)
                context = {**room, "action": spec, "form": form}
                return render(request, "marketplace/trade_confirm.html", context, status=400)
            room_actions[spec.slug].run(trade=trade, actor=request.user, data=form.cleaned_data)
        else:
            factors = {k: request.POST.get(k) for k in ("otp", "password", "cancel_reason")}
            _run_action(spec, trade=trade, user=request.user, reason="", factors=factors)
    except ApplicationError as exc:
        fresh = _trade_or_404(trade_id, request.user)
        return _render_trade_room(request, fresh, status=exc.status, error=exc.message)
    messages.success(request, DONE_MESSAGES[spec.slug])
    return redirect("trade_detail", trade_id=trade.pk)


@login_required
@require_POST
def trade_feedback(request: HttpRequest, trade_id: int) -> HttpResponse:
    """Rate the other party from the room, through the same service as the API."""
    trade = _trade_or_404(trade_id, request.user)
    form = FeedbackForm(request.POST)
    error, status = "", 400
    if form.is_valid():
        try:
            escrow_services.feedback_leave(
                trade_id=trade.pk,
                actor=request.user,
                rating=form.cleaned_data["rating"],
                comment=form.cleaned_data["comment"],
            )
        except ApplicationError as exc:
            error, status = exc.message, exc.status
        else:
            messages.success(request, gettext("Thank you: your feedback is on their profile."))
            return redirect(f"{reverse('trade_detail', args=[trade.pk])}#feedback")
    context = _room_context(trade, request.user)
    context.update(_feedback_context(trade, request.user, role=context["role"], form=form))
    context.update(feedback_error=error, error="", changed=False)
    if context["counterparty"] is not None:
        context["counterparty_stats"] = trader_stats(user=context["counterparty"])
    return render(request, "marketplace/trade_detail.html", context, status=status)


TRADE_FILTERS = {
    "all": gettext_lazy("All"),
    "active": gettext_lazy("Active"),
    "finished": gettext_lazy("Finished"),
}


@login_required
@require_GET
@replica_reads
def my_trades(request: HttpRequest) -> HttpResponse:
    show = request.GET.get("show", "all")
    if show not in TRADE_FILTERS:
        show = "all"
    trades = escrow_selectors.trade_list_for_user(user=request.user)
    if show == "active":
        trades = trades.exclude(state__in=FINAL_STATES)
    elif show == "finished":
        trades = trades.filter(state__in=FINAL_STATES)
    page = Paginator(trades, TRADES_PAGE).get_page(request.GET.get("page"))
    rows = [
        {
            "trade": t,
            "role": t.role_of(request.user),
            "counterparty": t.seller if t.buyer_id == request.user.pk else t.buyer,
            "label": STATE_LABELS.get(t.state, t.state),
        }
        for t in page
    ]
    context = {"page": page, "rows": rows, "show": show, "filters": TRADE_FILTERS}
    return render(request, "marketplace/my_trades.html", context)


# --- the trade room's chat ----------------------------------------------------------------------


def _chat_context(trade: Trade, user: Any) -> dict[str, Any]:
    chat = list(escrow_selectors.trade_messages(trade=trade))
    return {
        "trade": trade,
        "chat": chat,
        "chat_version": f"{len(chat)}:{chat[-1].pk if chat else 0}",
        "chat_live": trade.state not in FINAL_STATES,
        "me": user,
    }


@login_required
@require_GET
def trade_chat(request: HttpRequest, trade_id: int) -> HttpResponse:
    """The chat list that htmx polls; 204 when nothing new, so a half-typed message stays put."""
    trade = _trade_or_404(trade_id, request.user)
    context = _chat_context(trade, request.user)
    if request.GET.get("v") == context["chat_version"]:
        return HttpResponse(status=204)
    return render(request, "marketplace/_trade_chat_list.html", context)


@login_required
@require_POST
def trade_chat_send(request: HtmxHttpRequest, trade_id: int) -> HttpResponse:
    trade = _trade_or_404(trade_id, request.user)
    error = ""
    try:
        escrow_services.trade_message_send(
            trade_id=trade.pk,
            actor=request.user,
            text=request.POST.get("text", ""),
            attachment=request.FILES.get("attachment"),
        )
    except ApplicationError as exc:
        error = exc.message
    if request.htmx:
        context = _chat_context(trade, request.user)
        context["chat_error"] = error
        context["chat_text"] = request.POST.get("text", "") if error else ""
        # The answer to a send replaces the compose box (a live-poll swap keeps what is typed).
        context["compose_fresh"] = True
        return render(
            request, "marketplace/_trade_chat.html", context, status=400 if error else 200
        )
    if error:
        messages.error(request, error)
    return redirect(f"{reverse('trade_detail', args=[trade.pk])}#chat")


@login_required
@require_GET
def trade_chat_attachment(request: HttpRequest, trade_id: int, message_id: int) -> FileResponse:
    """Attachments go out only through this permission check, never from a public URL."""
    try:
        message = escrow_selectors.trade_message_attachment(
            trade_id=trade_id, message_id=message_id, user=request.user
        )
    except NotFound as exc:
        raise Http404(exc.message) from None
    return private_file_response(
        message.attachment, content_type=message.attachment_type, name=message.attachment_name
    )
