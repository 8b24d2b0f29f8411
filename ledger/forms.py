"""The wallet's forms."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.utils.translation import gettext_lazy

from common.forms import AmountField, AmountInput
from ledger.models import Asset


def _asset_choices() -> list[tuple[str, str]]:
    return [(a.code, a.code) for a in Asset.objects.filter(is_active=True).order_by("code")]


class WithdrawalForm(forms.Form):
    asset = forms.ChoiceField(label=gettext_lazy("Asset"))
    amount = AmountField(max_length=48, label=gettext_lazy("Amount"), widget=AmountInput())
    address = forms.CharField(
        max_length=128,
        label=gettext_lazy("Destination address"),
        widget=forms.TextInput({"autocomplete": "off", "spellcheck": "false"}),
    )
    # The network fee the page showed for the chosen asset (static/js/app.js fills it in): a
    # higher one at request time is refused, so nobody pays a fee they did not see.
    max_fee = forms.CharField(max_length=48, required=False, widget=forms.HiddenInput())
    # The fund password: the page shows one of the two (the code with 2FA on, else the password).
    otp = forms.CharField(
        max_length=10,
        required=False,
        label=gettext_lazy("2FA code"),
        help_text=gettext_lazy("From your authenticator app."),
        widget=forms.TextInput({"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )
    password = forms.CharField(
        max_length=128,
        required=False,
        strip=False,
        label=gettext_lazy("Your password"),
        help_text=gettext_lazy("Your account password confirms that it's you."),
        widget=forms.PasswordInput({"autocomplete": "current-password"}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["asset"]).choices = _asset_choices()
