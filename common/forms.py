"""What every browser form shares: a service's ApplicationError shown on the form (once), and the
exact decimal input."""

from __future__ import annotations

from typing import Any

from django import forms

from common.errors import ApplicationError, ValidationFailed


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
    """A decimal typed as text (exact, no float rounding by the browser), numeric keypad on phones."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        base = {"inputmode": "decimal", "autocomplete": "off", "spellcheck": "false"}
        super().__init__({**base, **(attrs or {})})
