"""Sign-up and the public trader profile; login, logout and passwords use django.contrib.auth."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods

from accounts.forms import SignupForm
from accounts.selectors import trader_stats
from marketplace.selectors import offer_book


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
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.username}! Your account is ready.")
        return redirect(next_url or "home")
    status = 400 if request.method == "POST" else 200
    return render(
        request, "registration/signup.html", {"form": form, "next": next_url}, status=status
    )


@require_GET
def profile(request: HttpRequest, username: str) -> HttpResponse:
    """A trader's public face: completed trades, completion rate, member since, open offers."""
    trader = get_object_or_404(get_user_model(), username=username, is_active=True)
    offers = list(offer_book(maker_username=trader.username)[:50])
    context = {
        "trader": trader,
        "stats": trader_stats(user=trader),
        "offers": offers,
        "is_me": request.user.is_authenticated and request.user.pk == trader.pk,
    }
    return render(request, "accounts/profile.html", context)
