"""A trader's public profile, counted from their trades, and replies to the feedback on it."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_GET, require_POST

from accounts import selectors as account_selectors
from accounts.forms import FeedbackReplyForm
from accounts.models import TraderRelation
from common.db import replica_reads
from common.errors import ApplicationError
from escrow import selectors as escrow_selectors
from escrow import services as escrow
from marketplace import selectors as market_selectors

FEEDBACK_PAGE = 20


# --- the public profile -----------------------------------------------------------------------


@require_GET
@replica_reads
def trader_profile(request: HttpRequest, username: str) -> HttpResponse:
    """A trader's public face: tier badge, record computed from trades, feedback with replies,
    open offers. Documents and limits are never shown here."""
    trader = get_object_or_404(get_user_model(), username=username, is_active=True)
    viewer = request.user
    is_me = viewer.is_authenticated and viewer.pk == trader.pk
    offers = list(market_selectors.offer_book(maker_username=trader.username, viewer=viewer)[:50])
    feedback = Paginator(escrow_selectors.feedback_received(user=trader), FEEDBACK_PAGE).get_page(
        request.GET.get("page")
    )
    relation = None
    if viewer.is_authenticated and not is_me:
        relation = TraderRelation.objects.filter(owner=viewer, other=trader).first()
    context = {
        "trader": trader,
        "tier": account_selectors.profile_for(trader).kyc_tier,
        "stats": (stats := escrow_selectors.trader_stats(user=trader)),
        "online": stats.is_online(),
        "summary": escrow_selectors.feedback_summary(user=trader),
        "feedback": feedback,
        "page": feedback,
        "offers": offers,
        "is_me": is_me,
        "relation": relation,
        "reply_form": FeedbackReplyForm() if is_me else None,
    }
    return render(request, "accounts/profile.html", context)


@login_required
@require_POST
def feedback_reply(request: HttpRequest, feedback_id: int) -> HttpResponse:
    form = FeedbackReplyForm(request.POST)
    target = reverse("profile", args=[request.user.username])
    if not form.is_valid():
        messages.error(request, gettext("Write a reply of up to 500 characters."))
        return redirect(target)
    try:
        escrow.feedback_reply(
            feedback_id=feedback_id, actor=request.user, text=form.cleaned_data["text"]
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, gettext("Your reply is published."))
    return redirect(f"{target}#feedback-{feedback_id}")
