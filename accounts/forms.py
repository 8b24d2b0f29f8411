from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm
from django.utils.translation import gettext, gettext_lazy

from accounts.models import ApiKey, KycDocument


class SignupForm(UserCreationForm):
    email = forms.EmailField(
        label=gettext_lazy("Email"),
        help_text=gettext_lazy(
            "For password resets and trade notifications. Never shown to other traders."
        ),
        widget=forms.EmailInput({"autocomplete": "email"}),
    )

    class Meta(UserCreationForm.Meta):  # type: ignore[name-defined]  # the stubs lack Meta
        model = get_user_model()
        fields = ("username", "email")

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip()
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError(gettext("An account with this email already exists."))
        return email


class KycUploadForm(forms.Form):
    """A document towards a higher tier; the service checks the file's real type and size."""

    kind = forms.ChoiceField(label=gettext_lazy("Document"), choices=KycDocument.Kind.choices)
    requested_tier = forms.TypedChoiceField(
        label=gettext_lazy("For"),
        choices=[
            (1, gettext_lazy("Tier 1: identity (passport, ID card or driving licence)")),
            (2, gettext_lazy("Tier 2: proof of address (after tier 1)")),
        ],
        coerce=int,
    )
    file = forms.FileField(
        label=gettext_lazy("Scan or photo"),
        help_text=gettext_lazy("PNG, JPEG, WebP or PDF. Only you and our reviewers can see it."),
        widget=forms.ClearableFileInput({"accept": "image/png,image/jpeg,image/webp,.pdf"}),
    )


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label=gettext_lazy("Name"),
        max_length=64,
        widget=forms.TextInput({"placeholder": gettext_lazy("E.g. grid bot")}),
    )
    scopes = forms.MultipleChoiceField(
        label=gettext_lazy("Scopes"),
        choices=ApiKey.Scope.choices,
        initial=["read"],
        widget=forms.CheckboxSelectMultiple,
        help_text=gettext_lazy(
            "read: see offers, trades and wallets; trade: post offers and trade; "
            "withdraw: request withdrawals."
        ),
    )
    # The fund password: the page shows one of the two (the code with 2FA on, else the password).
    otp = forms.CharField(
        label=gettext_lazy("2FA code"),
        max_length=10,
        required=False,
        widget=forms.TextInput({"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )
    password = forms.CharField(
        label=gettext_lazy("Your password"),
        max_length=128,
        required=False,
        strip=False,
        help_text=gettext_lazy("A key acts for you: confirm that it's you."),
        widget=forms.PasswordInput({"autocomplete": "current-password"}),
    )


class RelationForm(forms.Form):
    username = forms.CharField(
        label=gettext_lazy("Trader"),
        max_length=150,
        widget=forms.TextInput({"placeholder": gettext_lazy("username"), "autocomplete": "off"}),
    )
    kind = forms.ChoiceField(
        label=gettext_lazy("List"),
        choices=[("trusted", gettext_lazy("Trusted")), ("blocked", gettext_lazy("Blocked"))],
        widget=forms.RadioSelect,
        initial="trusted",
    )


class FeedbackReplyForm(forms.Form):
    text = forms.CharField(
        label=gettext_lazy("Your reply"),
        max_length=500,
        widget=forms.Textarea({"rows": 2, "placeholder": gettext_lazy("Reply once, publicly.")}),
    )
