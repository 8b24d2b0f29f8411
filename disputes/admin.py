"""The moderator console: a dispute queue and one page per dispute with everything needed to
decide (timeline, chat, evidence, both parties' history) and the actions, which call services."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy

from accounts.selectors import is_moderator
from common.admin import ReadOnlyAdmin
from common.errors import ApplicationError
from disputes import selectors, services
from disputes.models import Dispute, Evidence, ModeratorAction
from escrow import selectors as escrow_selectors
from escrow.selectors import trader_stats


class AssignedToMeFilter(admin.SimpleListFilter):
    title = "assigned"
    parameter_name = "assigned"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("me", "Assigned to me"), ("nobody", "Unassigned")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() == "me":
            return queryset.filter(assigned_to=request.user)
        if self.value() == "nobody":
            return queryset.filter(assigned_to__isnull=True)
        return queryset


class PastSlaFilter(admin.SimpleListFilter):
    title = "SLA"
    parameter_name = "sla"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("past", "Past SLA")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() == "past":
            from django.conf import settings

            cutoff = timezone.now() - timedelta(hours=settings.DISPUTE_SLA_HOURS)
            return queryset.exclude(status=Dispute.Status.DECIDED).filter(created_at__lt=cutoff)
        return queryset


class DecisionForm(forms.Form):
    outcome = forms.ChoiceField(choices=Dispute.Outcome.choices, widget=forms.RadioSelect)
    buyer_amount = forms.CharField(
        required=False, help_text=gettext_lazy("For a split: the buyer's share, in the asset.")
    )
    reason = forms.CharField(
        widget=forms.Textarea({"rows": 3}), help_text=gettext_lazy("Both parties read this.")
    )
    penalize_loser = forms.BooleanField(
        required=False, label=gettext_lazy("Give the losing party a strike")
    )
    suspend_days = forms.IntegerField(required=False, min_value=0, max_value=365, initial=0)
    confirm = forms.BooleanField(
        label=gettext_lazy("I have read the timeline, chat and evidence; this decision is final.")
    )


class EvidenceRequestForm(forms.Form):
    party = forms.ChoiceField(choices=[("buyer", "Buyer"), ("seller", "Seller"), ("both", "Both")])
    note = forms.CharField(max_length=500)
    hours = forms.IntegerField(min_value=1, max_value=168, initial=24)


class MessageForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea({"rows": 2}), max_length=2000)


@admin.register(Dispute)
class DisputeAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "trade_link",
        "status",
        "category",
        "amount",
        "opened",
        "age_text",
        "assigned_to",
        "sla",
    )
    list_filter = ("status", AssignedToMeFilter, PastSlaFilter, "trade__asset", "category")
    search_fields = ("trade__id", "trade__buyer__username", "trade__seller__username")
    list_select_related = ("trade__asset", "trade__fiat", "assigned_to")
    ordering = ("created_at",)
    change_form_template = "admin/disputes/dispute/change_form.html"

    def get_queryset(self, request: HttpRequest) -> Any:
        # A moderator never handles (nor reads as moderator) a dispute about their own trade.
        user = request.user
        return (
            super()
            .get_queryset(request)
            .exclude(Q(trade__buyer_id=user.pk) | Q(trade__seller_id=user.pk))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Dispute._meta.fields]

    @admin.display(description="trade")
    def trade_link(self, obj: Dispute) -> str:
        return format_html("#{}", obj.trade_id)

    @admin.display(description="amount")
    def amount(self, obj: Dispute) -> str:
        return f"{obj.trade.fiat_amount} {obj.trade.fiat.code} ({obj.trade.asset.code})"

    @admin.display(description="opened", ordering="created_at")
    def opened(self, obj: Dispute) -> str:
        return obj.created_at.strftime("%Y-%m-%d %H:%M")

    @admin.display(description="age")
    def age_text(self, obj: Dispute) -> str:
        minutes = int(obj.age.total_seconds() // 60)
        return f"{minutes // 60}h {minutes % 60}m"

    @admin.display(description="SLA", boolean=False)
    def sla(self, obj: Dispute) -> str:
        if obj.status == Dispute.Status.DECIDED:
            return "decided"
        return (
            format_html('<strong style="color:{}">PAST SLA</strong>', "#c12840")
            if obj.is_past_sla
            else "ok"
        )

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<int:dispute_id>/assign/", wrap(self.assign_view), name="disputes_dispute_assign"
            ),
            path(
                "<int:dispute_id>/message/",
                wrap(self.message_view),
                name="disputes_dispute_message",
            ),
            path(
                "<int:dispute_id>/request-evidence/",
                wrap(self.evidence_view),
                name="disputes_dispute_evidence",
            ),
            path(
                "<int:dispute_id>/decide/", wrap(self.decide_view), name="disputes_dispute_decide"
            ),
            path(
                "<int:dispute_id>/approve/",
                wrap(self.approve_view),
                name="disputes_dispute_approve",
            ),
            path(
                "<int:dispute_id>/send-back/",
                wrap(self.send_back_view),
                name="disputes_dispute_send_back",
            ),
            *super().get_urls(),
        ]

    def _back(self, dispute_id: int) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:disputes_dispute_change", args=[dispute_id]))

    def _run(
        self, request: HttpRequest, dispute_id: int, call: Any, done: str
    ) -> HttpResponseRedirect:
        try:
            call()
            self.message_user(request, done, messages.SUCCESS)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        return self._back(dispute_id)

    def assign_view(self, request: HttpRequest, dispute_id: int) -> HttpResponse:
        if request.method != "POST":
            return self._back(dispute_id)
        return self._run(
            request,
            dispute_id,
            lambda: services.dispute_assign(dispute_id=dispute_id, actor=request.user),
            "You took this dispute.",
        )

    def message_view(self, request: HttpRequest, dispute_id: int) -> HttpResponse:
        form = MessageForm(request.POST or None)
        if request.method != "POST" or not form.is_valid():
            self.message_user(request, "Write a message.", messages.ERROR)
            return self._back(dispute_id)
        return self._run(
            request,
            dispute_id,
            lambda: services.dispute_moderator_message(
                dispute_id=dispute_id, actor=request.user, text=form.cleaned_data["text"]
            ),
            "Message sent to both parties.",
        )

    def evidence_view(self, request: HttpRequest, dispute_id: int) -> HttpResponse:
        form = EvidenceRequestForm(request.POST or None)
        if request.method != "POST" or not form.is_valid():
            self.message_user(request, "Choose who, what and by when.", messages.ERROR)
            return self._back(dispute_id)
        return self._run(
            request,
            dispute_id,
            lambda: services.dispute_request_evidence(
                dispute_id=dispute_id, actor=request.user, **form.cleaned_data
            ),
            "Evidence requested.",
        )

    def decide_view(self, request: HttpRequest, dispute_id: int) -> HttpResponse:
        form = DecisionForm(request.POST or None)
        if request.method != "POST" or not form.is_valid():
            errors = (
                # (an ErrorList iterates as str; the stubs say ValidationError | str)
                "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())  # type: ignore[arg-type]
                or "Fill in the decision."
            )
            self.message_user(request, errors, messages.ERROR)
            return self._back(dispute_id)
        data = form.cleaned_data
        return self._run(
            request,
            dispute_id,
            lambda: services.dispute_decide(
                dispute_id=dispute_id,
                actor=request.user,
                outcome=data["outcome"],
                reason=data["reason"],
                buyer_amount=data["buyer_amount"] or None,
                penalize_loser=data["penalize_loser"],
                suspend_days=data["suspend_days"] or 0,
            ),
            "Decision recorded: it settles now, or once a second moderator approves it (four eyes).",
        )

    def approve_view(self, request: HttpRequest, dispute_id: int) -> HttpResponse:
        if request.method != "POST":
            return self._back(dispute_id)
        return self._run(
            request,
            dispute_id,
            lambda: services.dispute_approve(dispute_id=dispute_id, actor=request.user),
            "Decision approved; the settlement is queued.",
        )

    def send_back_view(self, request: HttpRequest, dispute_id: int) -> HttpResponse:
        if request.method != "POST":
            return self._back(dispute_id)
        return self._run(
            request,
            dispute_id,
            lambda: services.dispute_send_back(
                dispute_id=dispute_id,
                actor=request.user,
                reason=str(request.POST.get("reason", ""))[:500],
            ),
            "Sent back to review.",
        )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> Any:
        dispute = get_object_or_404(
            self.get_queryset(request).select_related(
                "trade__asset", "trade__fiat", "trade__buyer", "trade__seller"
            ),
            pk=object_id,
        )
        trade = dispute.trade

        def history(user: Any) -> dict[str, Any]:
            others = Dispute.objects.filter(Q(trade__buyer=user) | Q(trade__seller=user)).exclude(
                pk=dispute.pk
            )
            return {
                "user": user,
                "stats": trader_stats(user=user),
                "member_since": user.date_joined,
                "disputes": others.count(),
                "disputes_lost": others.filter(
                    Q(outcome="release", trade__seller=user)
                    | Q(outcome="refund", trade__buyer=user)
                ).count(),
            }

        context = {
            **(extra_context or {}),
            "dispute": dispute,
            "trade": trade,
            "events": trade.events.select_related("actor"),
            # The chat is read by the moderator assigned to the dispute only.
            "chat": escrow_selectors.trade_messages(trade=trade)
            if dispute.assigned_to_id == request.user.pk
            else None,
            "evidence": selectors.evidence_list(dispute=dispute),
            "buyer": history(trade.buyer),
            "seller": history(trade.seller),
            "actions_log": dispute.actions.select_related("actor")[:50],
            "decision_form": DecisionForm(),
            "evidence_form": EvidenceRequestForm(),
            "message_form": MessageForm(),
            "can_decide": is_moderator(request.user) and dispute.status != Dispute.Status.DECIDED,
        }
        response = super().change_view(request, object_id, form_url, extra_context=context)
        if request.method == "GET" and response.status_code == 200:
            # The file (chat, evidence, both traders' records) was shown: the append-only audit.
            services.dispute_file_read(dispute_id=dispute.pk, actor=request.user)
        return response


@admin.register(Evidence)
class EvidenceAdmin(admin.ModelAdmin):
    list_display = ("id", "dispute", "uploaded_by", "content_type", "created_at")
    readonly_fields = [f.name for f in Evidence._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ModeratorAction)
class ModeratorActionAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "action", "target", "reason")
    list_filter = ("action", "actor")
    search_fields = ("target", "reason", "actor__username")
