"""Moderator screens of accounts: the KYC review queue and account freezing. Every action calls
a service (which checks the permission and writes the audit trail); nothing is edited in place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy

from accounts import selectors, services
from accounts.models import KycDocument, Profile, ProfileEvent, TraderRelation
from accounts.services.verified_name import profile_verified_name_set
from common.admin import ReadOnlyAdmin
from common.errors import ApplicationError


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea({"rows": 3, "cols": 60}),
        help_text=gettext_lazy("The user sees this reason."),
    )


class VerifiedNameForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text=gettext_lazy(
            "Exactly as on the approved identity document. Payment accounts must bear it."
        ),
    )


def _apply_each(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    apply: Callable[[Any], object],
    done_text: str,
) -> None:
    done = 0
    for obj in queryset:
        try:
            apply(obj)
        except ApplicationError as exc:
            modeladmin.message_user(request, f"{obj}: {exc.message}", messages.ERROR)
        else:
            done += 1
    if done:
        modeladmin.message_user(request, f"{done} {done_text}.", messages.SUCCESS)


def _with_reason(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    *,
    title: str,
    button: str,
    apply: Callable[[Any, str], object],
    done_text: str,
) -> HttpResponse | None:
    """An action that asks for a reason on an intermediate page, then applies it to each row."""
    form = ReasonForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        reason = form.cleaned_data["reason"]
        _apply_each(modeladmin, request, queryset, lambda obj: apply(obj, reason), done_text)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "button": button,
        "objects": queryset,
        "form": form,
        "action": request.POST.get("action", ""),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "opts": modeladmin.model._meta,
    }
    return TemplateResponse(request, "accounts/admin/action_reason.html", context)


def _document_link(document: KycDocument) -> str:
    return format_html(
        '<a href="{}" target="_blank" rel="noopener">Open file</a>',
        reverse("kyc_file", args=[document.pk]),
    )


@admin.register(KycDocument)
class KycDocumentAdmin(ReadOnlyAdmin):
    """The KYC review queue: pending first, oldest first. Only reviewers (`review_kyc`) see it."""

    list_display = (
        "id",
        "user",
        "kind",
        "requested_tier",
        "current_tier",
        "status",
        "created_at",
        "reviewed_by",
        "file_link",
    )
    list_filter = ("status", "kind", "requested_tier")
    search_fields = ("user__username", "user__email")
    list_select_related = ("user", "reviewed_by", "user__profile")
    actions = ["approve", "reject"]
    readonly_fields = (
        "user",
        "kind",
        "requested_tier",
        "current_tier",
        "file_link",
        "file_name",
        "content_type",
        "status",
        "reviewed_by",
        "review_reason",
        "created_at",
        "reviewed_at",
    )
    fields = readonly_fields

    def get_ordering(self, request: HttpRequest) -> list[Any]:
        # The queue: pending first, oldest first.
        pending_first = Case(
            When(status=KycDocument.Status.PENDING, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        )
        return [pending_first.asc(), "created_at"]

    @admin.display(description="Tier now")
    def current_tier(self, document: KycDocument) -> int:
        profile = getattr(document.user, "profile", None)
        return profile.kyc_tier if profile else 0

    @admin.display(description="File")
    def file_link(self, document: KycDocument) -> str:
        return _document_link(document)

    def has_review_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.review_kyc")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Identity documents are for reviewers only, whatever model permissions staff hold.
        return self.has_review_permission(request)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_review_permission(request) or super().has_module_permission(request)

    @admin.action(description="Approve: raise to the requested tier", permissions=["review"])
    def approve(self, request: HttpRequest, queryset: QuerySet[KycDocument]) -> None:
        _apply_each(
            self,
            request,
            queryset,
            lambda d: services.kyc_document_review(
                document_id=d.pk, actor=request.user, approve=True, reason="Documents verified."
            ),
            "document(s) approved",
        )

    @admin.action(description="Reject with a reason…", permissions=["review"])
    def reject(self, request: HttpRequest, queryset: QuerySet[KycDocument]) -> HttpResponse | None:
        return _with_reason(
            self,
            request,
            queryset,
            title="Reject KYC documents",
            button="Reject",
            apply=lambda d, reason: services.kyc_document_review(
                document_id=d.pk, actor=request.user, approve=False, reason=reason
            ),
            done_text="document(s) rejected",
        )


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    """Accounts: tier, freezes, strikes. Changed only through the actions (and the services)."""

    list_display = (
        "user",
        "kyc_tier",
        "is_frozen",
        "strikes",
        "suspended_until",
        "buying_suspended_until",
        "country",
        "last_seen",
        "created_at",
    )
    list_filter = ("kyc_tier", "is_frozen")
    search_fields = ("user__username", "user__email")
    list_select_related = ("user",)
    actions = ["freeze", "unfreeze", "set_verified_name"]
    readonly_fields = (
        "user",
        "kyc_tier",
        "verified_name",
        "is_frozen",
        "frozen_reason",
        "strikes",
        "suspended_until",
        "buying_suspended_until",
        "country",
        "last_seen",
        "created_at",
        "linked_accounts",
        "history",
    )
    fields = readonly_fields

    @admin.display(description="Linked accounts")
    def linked_accounts(self, profile: Profile) -> str:
        # Sock puppets: accounts seen on this one's device or at its (not too busy) address.
        # They can't trade with it and don't count toward its figures.
        links = selectors.linked_accounts_for_moderators(user=profile.user)
        if not links:
            return "—"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>{} · {}</li>",
                ((name, ", ".join(kinds)) for name, kinds in links),
            ),
        )

    @admin.display(description="History")
    def history(self, profile: Profile) -> str:
        events = ProfileEvent.objects.filter(user_id=profile.user_id).select_related("actor")[:20]
        if not events:
            return "—"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>{} · {} by {}{}{}</li>",
                (
                    (
                        e.created_at.strftime("%Y-%m-%d %H:%M"),
                        e.get_action_display(),
                        e.actor or "system",
                        f" · {e.detail}" if e.detail else "",
                        f" · “{e.reason}”" if e.reason else "",
                    )
                    for e in events
                ),
            ),
        )

    def has_freeze_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.freeze_account")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Freeze: no new offers or trades…", permissions=["freeze"])
    def freeze(self, request: HttpRequest, queryset: QuerySet[Profile]) -> HttpResponse | None:
        return _with_reason(
            self,
            request,
            queryset.select_related("user"),
            title="Freeze accounts",
            button="Freeze",
            apply=lambda p, reason: services.profile_freeze(
                user=p.user, actor=request.user, reason=reason
            ),
            done_text="account(s) frozen; their open trades go on",
        )

    def has_review_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("accounts.review_kyc")

    @admin.action(
        description="Set the verified name (from an approved ID)…", permissions=["review"]
    )
    def set_verified_name(
        self, request: HttpRequest, queryset: QuerySet[Profile]
    ) -> HttpResponse | None:
        """The name on the identity document a reviewer approved: saved payment accounts must
        bear it (marketplace.services.payment_accounts). One profile at a time."""
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one profile.", messages.ERROR)
            return None
        profile = queryset.select_related("user").get()
        form = VerifiedNameForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            _apply_each(
                self,
                request,
                queryset.select_related("user"),
                lambda p: profile_verified_name_set(
                    user=p.user, name=form.cleaned_data["name"], actor=request.user
                ),
                "verified name set",
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Set the verified name of {profile.user}",
            "button": "Set name",
            "objects": [profile],
            "form": form,
            "action": request.POST.get("action", ""),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "accounts/admin/action_reason.html", context)

    @admin.action(description="Unfreeze", permissions=["freeze"])
    def unfreeze(self, request: HttpRequest, queryset: QuerySet[Profile]) -> None:
        _apply_each(
            self,
            request,
            queryset.select_related("user"),
            lambda p: services.profile_unfreeze(user=p.user, actor=request.user),
            "account(s) unfrozen",
        )


@admin.register(ProfileEvent)
class ProfileEventAdmin(ReadOnlyAdmin):
    """The audit trail of profile changes: append-only, read-only."""

    list_display = ("created_at", "user", "action", "actor", "detail", "reason")
    list_filter = ("action",)
    search_fields = ("user__username", "actor__username", "reason")
    list_select_related = ("user", "actor")


@admin.register(TraderRelation)
class TraderRelationAdmin(admin.ModelAdmin):
    list_display = ("owner", "kind", "other", "created_at")
    list_filter = ("kind",)
    search_fields = ("owner__username", "other__username")
    list_select_related = ("owner", "other")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
