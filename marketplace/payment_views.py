"""Saved payment accounts in the browser, under Settings: add (choose the method, then its
fields), edit and delete. Thin: each view parses the form and calls one service; the list is
on the settings page (templates/marketplace/_payment_accounts_settings.html)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.http import require_http_methods, require_POST

from common.errors import ApplicationError, NotFound
from common.forms import add_application_error
from marketplace import selectors
from marketplace.models import PaymentAccount, PaymentMethod
from marketplace.payment_forms import PaymentAccountForm
from marketplace.services import payment_accounts as services


def _settings_section() -> str:
    return reverse("settings") + "#payment-accounts"


def _own_or_404(account_id: int, request: HttpRequest) -> PaymentAccount:
    try:
        return selectors.payment_account_get_for_user(account_id=account_id, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None


def _page(
    request: HttpRequest,
    form: PaymentAccountForm,
    *,
    account: PaymentAccount | None,
    status: int = 200,
) -> HttpResponse:
    context = {"form": form, "account": account, "method": form.method}
    return render(request, "marketplace/payment_account_form.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def payment_account_new(request: HttpRequest) -> HttpResponse:
    code = request.POST.get("method") or request.GET.get("method") or ""
    method = PaymentMethod.objects.filter(code=code, is_active=True).first()
    if method is None:
        messages.error(request, gettext("Choose a payment method for the new account."))
        return redirect(_settings_section())
    if request.method != "POST":
        return _page(request, PaymentAccountForm(method=method), account=None)
    form = PaymentAccountForm(request.POST, method=method)
    status = 400
    if form.is_valid():
        try:
            services.payment_account_create(
                user=request.user,
                method=method.code,
                details=form.details(),
                label=form.cleaned_data["label"],
            )
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            messages.success(request, gettext("{name} account saved.").format(name=method.name))
            return redirect(_settings_section())
    return _page(request, form, account=None, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def payment_account_edit(request: HttpRequest, account_id: int) -> HttpResponse:
    account = _own_or_404(account_id, request)
    if request.method != "POST":
        form = PaymentAccountForm(
            initial=PaymentAccountForm.initial_for(account), method=account.method
        )
        return _page(request, form, account=account)
    form = PaymentAccountForm(request.POST, method=account.method)
    status = 400
    if form.is_valid():
        try:
            services.payment_account_update(
                account_id=account.pk,
                actor=request.user,
                details=form.details(),
                label=form.cleaned_data["label"],
            )
        except ApplicationError as exc:
            add_application_error(form, exc)
            status = exc.status
        else:
            messages.success(
                request,
                gettext("{name} account updated. Open trades keep the old one.").format(
                    name=account.method.name
                ),
            )
            return redirect(_settings_section())
    return _page(request, form, account=account, status=status)


@login_required
@require_POST
def payment_account_delete(request: HttpRequest, account_id: int) -> HttpResponse:
    try:
        services.payment_account_delete(account_id=account_id, actor=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    messages.success(
        request, gettext("Payment account deleted. Open trades keep the copy they made.")
    )
    return redirect(_settings_section())
