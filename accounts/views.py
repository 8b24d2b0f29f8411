"""Sign-up and the user's settings (verification, API keys, trusted and blocked lists); the public
trader profile, which counts trades, is escrow's. Thin: each view parses a form and calls one
service or selector."""

from __future__ import annotations

import base64
import contextlib
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext, ngettext
from django.views import i18n as i18n_views
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import selectors, services
from accounts.forms import (
    ApiKeyForm,
    KycUploadForm,
    RelationForm,
    SignupForm,
)
from accounts.models import ApiKey, KycDocument, TraderRelation
from common.countries import country_names
from common.errors import ApplicationError, NotFound
from common.files import private_file_response
from common.forms import add_application_error
from common.http import client_ip

FEEDBACK_PAGE = 20


def _safe_next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("home")
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = ""
    form = SignupForm(request.POST or None)
    if request.method == "POST" and not services.signup_allowed(address=client_ip(request)):
        form.add_error(
            None, gettext("Too many new accounts from your network; try again in an hour.")
        )
        context = {"form": form, "next": next_url}
        return render(request, "registration/signup.html", context, status=429)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        selectors.profile_for(user)  # every new account starts at tier 0 with a profile
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(
            request,
            gettext("Welcome, {username}! Your account is ready.").format(username=user.username),
        )
        return redirect(next_url or "home")
    status = 400 if request.method == "POST" else 200
    return render(
        request, "registration/signup.html", {"form": form, "next": next_url}, status=status
    )


# --- settings ---------------------------------------------------------------------------------


def _settings_page(
    request: HttpRequest,
    *,
    status: int = 200,
    kyc_form: KycUploadForm | None = None,
    key_form: ApiKeyForm | None = None,
    relation_form: RelationForm | None = None,
    new_key: tuple[ApiKey, str] | None = None,
    new_token: str | None = None,
) -> HttpResponse:
    user = cast(User, request.user)  # login_required
    profile = selectors.profile_for(user)
    relations = list(selectors.relation_list_for_user(user=user))
    context: dict[str, Any] = {
        "profile": profile,
        "restriction": selectors.trading_block_reason(profile),
        "limits": selectors.limits_status(user=user),
        "documents": selectors.kyc_document_list_for_user(user=user),
        "has_pending": KycDocument.objects.filter(
            user=user, status=KycDocument.Status.PENDING
        ).exists(),
        "kyc_form": kyc_form or KycUploadForm(initial={"requested_tier": profile.kyc_tier + 1}),
        "keys": ApiKey.objects.filter(user=user),
        "key_form": key_form or ApiKeyForm(),
        "new_key": new_key,
        "new_token": new_token,
        "trusted": [r for r in relations if r.kind == TraderRelation.Kind.TRUSTED],
        "blocked": [r for r in relations if r.kind == TraderRelation.Kind.BLOCKED],
        "relation_form": relation_form or RelationForm(),
        "sessions": selectors.browser_session_list_for_user(user=user),
        "current_session_key": request.session.session_key,
        "time_zone": profile.time_zone or "UTC",
        "countries": sorted(country_names().items(), key=lambda item: item[1]),
    }
    return render(request, "accounts/settings.html", context, status=status)


@login_required
@require_GET
def settings_page(request: HttpRequest) -> HttpResponse:
    return _settings_page(request)


@login_required
@require_POST
def kyc_upload(request: HttpRequest) -> HttpResponse:
    form = KycUploadForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            services.kyc_document_submit(
                user=request.user,
                kind=form.cleaned_data["kind"],
                requested_tier=form.cleaned_data["requested_tier"],
                file=form.cleaned_data["file"],
            )
        except ApplicationError as exc:
            add_application_error(form, exc)
            return _settings_page(request, status=exc.status, kyc_form=form)
        messages.success(request, gettext("Document received. We review documents within a day."))
        return redirect(reverse("settings") + "#verification")
    return _settings_page(request, status=400, kyc_form=form)


@login_required
@require_POST
def kyc_delete(request: HttpRequest, document_id: int) -> HttpResponse:
    try:
        services.kyc_document_delete(document_id=document_id, actor=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, gettext("Document deleted."))
    return redirect(reverse("settings") + "#verification")


@require_GET
def kyc_file(request: HttpRequest, document_id: int) -> FileResponse:
    """KYC files go out only through this check (owner or reviewer); everyone else, logged in
    or not, gets 404 and no hint the document exists."""
    try:
        document = selectors.kyc_document_for_download(document_id=document_id, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    services.kyc_file_read(document=document, reader=request.user)
    return private_file_response(
        document.file,
        content_type=document.content_type,
        name=document.file_name or f"document-{document.pk}",
    )


@login_required
@require_POST
def api_key_create(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(request.POST)
    if form.is_valid():
        try:
            services.funds_confirm(
                user=request.user,
                otp=form.cleaned_data["otp"],
                password=form.cleaned_data["password"],
            )
            key, raw = services.api_key_create(
                user=request.user,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
            )
        except ApplicationError as exc:
            add_application_error(form, exc)
            return _settings_page(request, status=exc.status, key_form=form)
        # Rendered, not redirected: the raw key is shown this once and stored nowhere.
        return _settings_page(request, new_key=(key, raw))
    return _settings_page(request, status=400, key_form=form)


@login_required
@require_POST
def api_key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    try:
        key = services.api_key_revoke(user=request.user, key_id=key_id)
    except NotFound as exc:
        raise Http404(exc.message) from None
    messages.success(
        request, gettext("Key “{name}” revoked; requests with it now fail.").format(name=key.name)
    )
    return redirect(reverse("settings") + "#api-keys")


@login_required
@require_POST
def token_rotate(request: HttpRequest) -> HttpResponse:
    token = services.token_rotate(user=request.user)
    return _settings_page(request, new_token=token.key)


@login_required
@require_POST
def relation_add(request: HttpRequest) -> HttpResponse:
    form = RelationForm(request.POST)
    back = _safe_next(request, reverse("settings") + "#relations")
    if form.is_valid():
        try:
            relation = services.trader_relation_add(
                actor=request.user,
                username=form.cleaned_data["username"],
                kind=form.cleaned_data["kind"],
            )
        except ApplicationError as exc:
            if request.POST.get("next"):
                messages.error(request, exc.message)
                return redirect(back)
            add_application_error(form, exc)
            return _settings_page(request, status=exc.status, relation_form=form)
        verb = "trust" if relation.kind == TraderRelation.Kind.TRUSTED else "blocked"
        messages.success(
            request,
            gettext("You now trust {username}.").format(username=relation.other.username)
            if verb == "trust"
            else gettext("You blocked {username}: neither of you sees the other's offers.").format(
                username=relation.other.username
            ),
        )
        return redirect(back)
    return _settings_page(request, status=400, relation_form=form)


@login_required
@require_POST
def relation_remove(request: HttpRequest, relation_id: int) -> HttpResponse:
    try:
        services.trader_relation_remove(actor=request.user, relation_id=relation_id)
    except NotFound as exc:
        raise Http404(exc.message) from None
    messages.success(request, gettext("Removed from your list."))
    return redirect(_safe_next(request, reverse("settings") + "#relations"))


@login_required
@require_POST
def sessions_end_others(request: HttpRequest) -> HttpResponse:
    ended = services.sessions_end_others(
        user=request.user, keep_session_key=request.session.session_key
    )
    messages.success(
        request,
        ngettext("Ended {ended} other session.", "Ended {ended} other sessions.", ended).format(
            ended=ended
        ),
    )
    return redirect(reverse("settings") + "#sessions")


@login_required
@require_POST
def session_revoke(request: HttpRequest, session_id: int) -> HttpResponse:
    try:
        services.browser_session_revoke(
            user=request.user,
            session_id=session_id,
            current_session_key=request.session.session_key,
        )
    except NotFound as exc:
        raise Http404(exc.message) from None
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, gettext("That browser is logged out."))
    return redirect(reverse("settings") + "#sessions")


@login_required
@require_POST
def time_zone_set(request: HttpRequest) -> HttpResponse:
    """The browser's zone, posted once by static/js/local-time.js (204), or chosen on the
    settings page (back to it)."""
    from_script = request.headers.get("X-Requested-With") == "fetch"
    try:
        profile = services.profile_time_zone_set(
            user=request.user, time_zone=request.POST.get("time_zone", "")
        )
    except ApplicationError as exc:
        if from_script:
            return HttpResponse(exc.message, status=exc.status, content_type="text/plain")
        messages.error(request, exc.message)
    else:
        if from_script:
            return HttpResponse(status=204)
        messages.success(
            request,
            gettext("Times are now shown in {time_zone}.").format(time_zone=profile.time_zone),
        )
    return redirect(reverse("settings") + "#sessions")


@login_required
@require_POST
def country_set(request: HttpRequest) -> HttpResponse:
    """The trader's country, chosen on the settings page (issue 20's region restrictions)."""
    try:
        profile = services.profile_country_set(
            user=request.user, country=request.POST.get("country", "")
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        name = country_names().get(profile.country)
        messages.success(
            request, f"Your country is {name}." if name else "Your country is not set."
        )
    return redirect(reverse("settings") + "#country")


@require_POST
def language_set(request: HttpRequest) -> HttpResponse:
    """The language selector of every page's header: Django's set_language (the cookie, back to
    the page it was posted from), and for a logged-in user the choice kept on their profile."""
    response = i18n_views.set_language(request)
    if request.user.is_authenticated:
        with contextlib.suppress(ApplicationError):  # an unknown code changes nothing
            services.profile_language_set(
                user=request.user, language=request.POST.get("language", "")
            )
    return response


# --- passwords --------------------------------------------------------------------------------


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's, then: a new account token, the other sessions ended, withdrawals paused."""

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)  # keeps this session (a new key) logged in
        services.credentials_after_password_change(
            user=form.user, keep_session_key=self.request.session.session_key
        )
        return response


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    """Django's, then the same as a change, with no session kept: whoever knew the old
    password is logged out everywhere."""

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        services.credentials_after_password_change(user=form.user, keep_session_key=None)
        return response


# --- two-factor authentication ----------------------------------------------------------------


def _totp_setup_page(
    request: HttpRequest, device: Any, *, error: str = "", status: int = 200
) -> HttpResponse:
    import segno

    qr_svg = segno.make(device.config_url, micro=False).svg_inline(scale=4, dark="#1e2329")
    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    context = {"qr_svg": qr_svg, "secret": secret, "error": error}
    return render(request, "accounts/totp_setup.html", context, status=status)


@login_required
@require_POST
def totp_start(request: HttpRequest) -> HttpResponse:
    """The setup page; a setup already started shows its same secret (new_secret=1 replaces it)."""
    try:
        device, _ = services.totp_setup_start(
            user=request.user, new_secret=request.POST.get("new_secret") == "1"
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("settings")
    return _totp_setup_page(request, device)


@login_required
@require_POST
def totp_confirm(request: HttpRequest) -> HttpResponse:
    try:
        services.totp_setup_confirm(user=request.user, token=request.POST.get("otp", ""))
    except ApplicationError as exc:
        device = services.totp_device(request.user, confirmed=False)
        if device is None:  # no setup under way (or 2FA already on)
            messages.error(request, exc.message)
            return redirect("settings")
        # The same secret again: the QR code already scanned stays good.
        return _totp_setup_page(request, device, error=exc.message, status=exc.status)
    messages.success(
        request,
        gettext(
            "Two-factor authentication is on: releases, withdrawals and new API keys now ask for a code."
        ),
    )
    return redirect("settings")


@login_required
@require_POST
def totp_disable(request: HttpRequest) -> HttpResponse:
    try:
        services.totp_disable(user=request.user, token=request.POST.get("otp", ""))
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("settings")
    messages.success(request, gettext("Two-factor authentication is off."))
    return redirect("settings")
