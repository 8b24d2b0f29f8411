"""What every browser form shares: a service's ApplicationError shown on the form (once), and the
exact decimal input."""

from __future__ import annotations

from typing import Any

from django import forms

from common.errors import ApplicationError, ValidationFailed
from common.l10n import delocalize_number, localize_input


def add_application_error(form: forms.Form, exc: ApplicationError) -> None:
    """Put a service's error next to the fields it names; the message on top when it says more."""
    placed = False
    for field, messages in (exc.fields or {}).items():
        name = field if field in form.fields else None
        if name is None:
            continue
        for message in messages if isinstance(messages, list | tuple) else [messages]:
            form.add_error(name, str(message))
        placed = True
    # A ValidationFailed's message repeats its field error; other errors (a conflict, a balance
    # too low) explain the situation in the message, so show it as well.
    if not placed or not isinstance(exc, ValidationFailed):
        form.add_error(None, exc.message)


class AmountInput(forms.TextInput):
    """A decimal typed as text (exact, no float rounding by the browser), numeric keypad on
    phones. In the reader's language (issue 20): a value shown for editing uses its decimal
    mark, and what comes back is read in it (common.l10n.delocalize_number), so a Spanish
    "1.234,56" reaches the services as "1234.56"; the API is never localized."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        base = {"inputmode": "decimal", "autocomplete": "off", "spellcheck": "false"}
        super().__init__({**base, **(attrs or {})})

    def format_value(self, value: Any) -> str | None:
        text = super().format_value(value)
        return localize_input(text) if text else text


class AmountField(forms.CharField):
    """An amount typed in the reader's language, cleaned to the one plain grammar the services
    parse exactly ("1.234,56" in es -> "1234.56"); an ambiguous "1.234" is refused here."""

    widget = AmountInput

    def to_python(self, value: Any) -> str | None:
        text = super().to_python(value)
        if not text:
            return text
        try:
            return delocalize_number(text, field=(self.label and str(self.label)) or "amount")
        except ValidationFailed as exc:
            raise forms.ValidationError(
                next(iter(exc.fields.values()))[0], code="ambiguous_number"
            ) from None
