from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm

from accounts.models import ApiKey, KycDocument


class SignupForm(UserCreationForm):
    email = forms.EmailField(
        label="Email",
        help_text="For password resets and trade notifications. Never shown to other traders.",
        widget=forms.EmailInput({"autocomplete": "email"}),
    )

    class Meta(UserCreationForm.Meta):  # type: ignore[name-defined]  # the stubs lack Meta
        model = get_user_model()
        fields = ("username", "email")

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip()
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email already exists.")
        return email


class KycUploadForm(forms.Form):
    """A document towards a higher tier; the service checks the file's real type and size."""

    kind = forms.ChoiceField(label="Document", choices=KycDocument.Kind.choices)
    requested_tier = forms.TypedChoiceField(
        label="For",
        choices=[
            (1, "Tier 1: identity (passport, ID card or driving licence)"),
            (2, "Tier 2: proof of address (after tier 1)"),
        ],
        coerce=int,
    )
    file = forms.FileField(
        label="Scan or photo",
        help_text="PNG, JPEG, WebP or PDF. Only you and our reviewers can see it.",
        widget=forms.ClearableFileInput({"accept": "image/png,image/jpeg,image/webp,.pdf"}),
    )


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label="Name", max_length=64, widget=forms.TextInput({"placeholder": "E.g. grid bot"})
    )
    scopes = forms.MultipleChoiceField(
        label="Scopes",
        choices=ApiKey.Scope.choices,
        initial=["read"],
        widget=forms.CheckboxSelectMultiple,
        help_text="read: see offers, trades and wallets; trade: post offers and trade; "
        "withdraw: request withdrawals.",
    )
    # The fund password: the page shows one of the two (the code with 2FA on, else the password).
    otp = forms.CharField(
        label="2FA code",
        max_length=10,
        required=False,
        widget=forms.TextInput({"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )
    password = forms.CharField(
        label="Your password",
        max_length=128,
        required=False,
        strip=False,
        help_text="A key acts for you: confirm that it's you.",
        widget=forms.PasswordInput({"autocomplete": "current-password"}),
    )


class RelationForm(forms.Form):
    username = forms.CharField(
        label="Trader",
        max_length=150,
        widget=forms.TextInput({"placeholder": "username", "autocomplete": "off"}),
    )
    kind = forms.ChoiceField(
        label="List",
        choices=[("trusted", "Trusted"), ("blocked", "Blocked")],
        widget=forms.RadioSelect,
        initial="trusted",
    )


class FeedbackReplyForm(forms.Form):
    text = forms.CharField(
        label="Your reply",
        max_length=500,
        widget=forms.Textarea({"rows": 2, "placeholder": "Reply once, publicly."}),
    )
