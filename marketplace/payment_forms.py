"""The browser form of a saved payment account: one text input per field the method defines
(marketplace.payment_fields). It only collects what was typed; the service checks it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext, gettext_lazy

from marketplace.models import PaymentAccount, PaymentMethod
from marketplace.payment_fields import fields_for, summary

INPUT_ATTRS: dict[str, dict[str, str]] = {
    "name": {"autocomplete": "name"},
    "iban": {"autocomplete": "off", "spellcheck": "false", "autocapitalize": "characters"},
    "bic": {"autocomplete": "off", "spellcheck": "false", "autocapitalize": "characters"},
    "email": {"autocomplete": "email", "inputmode": "email", "type": "email"},
    "phone": {"autocomplete": "tel", "inputmode": "tel", "type": "tel"},
    "tag": {"autocomplete": "off", "spellcheck": "false", "autocapitalize": "none"},
    "sort_code": {"inputmode": "numeric", "autocomplete": "off"},
    "uk_account": {"inputmode": "numeric", "autocomplete": "off"},
    "text": {},
}


CODE_ATTRS = {"autocomplete": "off", "spellcheck": "false", "autocapitalize": "characters"}
NUMBER_ATTRS = {"inputmode": "numeric", "autocomplete": "off"}
# Kinds typed as digits (a keypad on phones) or as codes (no spell checking, capitals).
NUMERIC_KINDS = frozenset(
    {"aba_routing", "us_account", "in_account", "nuban", "ng_bank_code", "bank_account", "bsb",
     "au_account", "fps_id", "yoomoney", "card", "clabe", "cbu", "cpf", "cnpj", "abn"}
)  # fmt: skip
CODE_KINDS = frozenset({"iban_nl", "ifsc", "uen", "perfect_money", "payeer"})


def input_attrs(kind: str) -> dict[str, str]:
    """The input's hints for a field kind: the phone keypad for numbers, no autocorrect for
    codes and handles."""
    if kind in INPUT_ATTRS:
        return INPUT_ATTRS[kind]
    if kind.startswith("phone_"):
        return INPUT_ATTRS["phone"]
    if kind in NUMERIC_KINDS:
        return NUMBER_ATTRS
    if kind in CODE_KINDS:
        return CODE_ATTRS
    if kind == "city":
        return {"autocomplete": "address-level2"}
    return {"autocomplete": "off", "spellcheck": "false", "autocapitalize": "none"}


class PaymentAccountForm(forms.Form):
    label = forms.CharField(
        label=gettext_lazy("Nickname (optional)"),
        required=False,
        max_length=64,
        help_text=gettext_lazy("Only you see it, e.g. “Main bank”."),
    )

    def __init__(self, *args: Any, method: PaymentMethod, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.method = method
        self.spec = fields_for(method.code)
        for field in self.spec.fields:
            optional = not (field.required or self.spec.one_of)
            self.fields[field.key] = forms.CharField(
                label=gettext("{label} (optional)").format(label=field.label)
                if optional
                else field.label,
                required=False,  # the service says what is missing, and why
                max_length=300,
                help_text=field.help,
                widget=forms.TextInput(input_attrs(field.kind)),
            )
        if self.spec.one_of:
            names = gettext(" or ").join(
                str(f.label) for f in self.spec.fields if f.key in self.spec.one_of
            )
            first = self.fields[self.spec.one_of[0]]
            first.help_text = " ".join(
                t
                for t in (
                    str(first.help_text),
                    gettext("Give the {names} (or both).").format(names=names),
                )
                if t
            )

    @property
    def detail_fields(self) -> list[forms.BoundField]:
        return [self[f.key] for f in self.spec.fields]

    @classmethod
    def initial_for(cls, account: PaymentAccount) -> dict[str, Any]:
        return {"label": account.label, **account.details}

    def details(self) -> dict[str, str]:
        return {f.key: self.cleaned_data.get(f.key) or "" for f in self.spec.fields}


def account_choices(accounts: list[PaymentAccount]) -> list[tuple[int, str]]:
    """Checkbox or select labels that tell the user's accounts apart."""
    return [
        (
            a.pk,
            f"{a.method.name} · {a.label + ' · ' if a.label else ''}"
            f"{summary(a.method.code, a.details)}",
        )
        for a in accounts
    ]
