"""Money is Decimal with the asset's precision, never float; JSON carries it as strings."""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, overload

from django.db import models
from django.utils.translation import gettext

if TYPE_CHECKING:
    from django.db.models.expressions import Combinable

from common.errors import ValidationFailed

# Ledger columns: 40 digits with 18 decimals (ETH has 18; a bigint holds only ~9.2 ETH in wei).
AMOUNT_MAX_DIGITS = 40
AMOUNT_DECIMAL_PLACES = 18


def quantum(precision: int) -> Decimal:
    return Decimal(1).scaleb(-precision)


# The one grammar of a number a user types or a bot sends: ASCII digits, at most one decimal
# point, at most one leading sign; no exponent, no underscores, no other digits or spaces inside.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# Longer than any amount a column can hold (40 digits, a point, a sign): refused before parsing.
_MAX_NUMBER_TEXT = 64


def parse_decimal(value: object, *, field: str) -> Decimal:
    """A number in the one grammar, exactly, as a Decimal (signed); anything else is a clear
    400 naming the field, never an exception from deep inside decimal arithmetic."""
    if isinstance(value, float):
        raise ValidationFailed(
            gettext("{field}: send amounts as decimal strings, not floats.").format(field=field),
            fields={field: [gettext('Send the amount as a decimal string, e.g. "0.015".')]},
        )
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValidationFailed(
                gettext("{field}: must be a finite number.").format(field=field),
                fields={field: [gettext("Enter a number.")]},
            )
        text = format(value, "f") if abs(value.adjusted()) < _MAX_NUMBER_TEXT else "x"
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        text = str(value).strip() if isinstance(value, str) else "x"
    if len(text) > _MAX_NUMBER_TEXT or not _NUMBER.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise ValidationFailed(
            gettext(
                "{field}: {shown!r} is not a number; write it like 1234.5678 (digits, one point, no exponent)."
            ).format(field=field, shown=shown),
            fields={field: [gettext("Enter a number.")]},
        )
    return Decimal(text)


def parse_amount(
    value: object,
    *,
    precision: int,
    field: str,
    allow_zero: bool = False,
) -> Decimal:
    """Parse a user-supplied amount exactly; reject floats, junk, non-positive and over-precise."""
    amount = parse_decimal(value, field=field)
    if amount < 0 or (amount == 0 and not allow_zero):
        raise ValidationFailed(
            gettext("{field}: must be greater than zero.").format(field=field),
            fields={field: [gettext("Must be greater than zero.")]},
        )
    # Size before precision: quantizing a huge number is what would fail.
    if amount.adjusted() >= AMOUNT_MAX_DIGITS - AMOUNT_DECIMAL_PLACES:
        raise ValidationFailed(
            gettext("{field}: amount is too large.").format(field=field),
            fields={field: [gettext("Amount is too large.")]},
        )
    if amount != amount.quantize(quantum(precision), rounding=ROUND_DOWN):
        raise ValidationFailed(
            gettext("{field}: at most {precision} decimal places are allowed.").format(
                field=field, precision=precision
            ),
            fields={
                field: [gettext("At most {precision} decimal places.").format(precision=precision)]
            },
        )
    return amount.quantize(quantum(precision))


def parse_signed(value: object, *, precision: int, field: str) -> Decimal:
    """Like parse_amount, for values that may be zero or negative (a price margin): one leading
    sign at most."""
    number = parse_decimal(value, field=field)
    magnitude = parse_amount(abs(number), precision=precision, field=field, allow_zero=True)
    return -magnitude if number < 0 else magnitude


def parse_fiat(
    value: object, *, currency: str, precision: int, field: str, unit: str = ""
) -> Decimal:
    """A fiat amount at its currency's minor units (FiatCurrency.precision): like parse_amount,
    but a sum finer than the currency can be paid in names the currency and its rule, e.g.
    "min_fiat: JPY has no minor unit: whole Japanese yen only (no decimals)"."""
    number = parse_decimal(value, field=field)
    if number > 0 and number != number.quantize(quantum(precision), rounding=ROUND_DOWN):
        if precision == 0:
            rule = f"{currency} has no minor unit: whole {unit or currency} only (no decimals)."
        else:
            example = format(Decimal(12345).scaleb(-precision), "f")
            rule = (
                f"{currency} has {precision} decimal place{'s' if precision > 1 else ''}: "
                f"at most {precision}, e.g. {example}."
            )
        raise ValidationFailed(f"{field}: {rule}", fields={field: [rule]})
    return parse_amount(number, precision=precision, field=field)


def round_down(amount: Decimal, precision: int) -> Decimal:
    return amount.quantize(quantum(precision), rounding=ROUND_DOWN)


def round_half_up(amount: Decimal, precision: int) -> Decimal:
    return amount.quantize(quantum(precision), rounding=ROUND_HALF_UP)


def fmt(amount: Decimal, precision: int) -> str:
    """The canonical decimal string of an amount at a precision (used in hashes and JSON)."""
    # Positional notation always: str() would give "1E-8" or "0E-8" for small values.
    return format(amount.quantize(quantum(precision)), "f")


def fmt_fiat(amount: Decimal, precision: int) -> str:
    """A fiat sum or price for people, with thousands separators: 2000 -> "2,000.00" (in
    Spanish "2.000,00": the active language's symbols, common.l10n). The one format of limits
    and prices, in pages and in error messages alike."""
    from common.l10n import format_decimal

    return format_decimal(amount, precision)


# --- model fields ------------------------------------------------------------------------------


# What the helpers' fields read as, for mypy: the django-stubs plugin infers a field's types from
# a models.DecimalField(...) call in the model body, not through a helper.
_Amount: TypeAlias = "models.DecimalField[Decimal | int | str | Combinable, Decimal]"
_AmountOrNone: TypeAlias = (
    "models.DecimalField[Decimal | int | str | Combinable | None, Decimal | None]"
)


@overload
def amount_field(*, null: Literal[True], **kwargs: Any) -> _AmountOrNone: ...
@overload
def amount_field(**kwargs: Any) -> _Amount: ...
def amount_field(**kwargs: Any) -> _Amount | _AmountOrNone:
    """Asset amounts: exact decimals wide enough for 18 places (ETH's wei)."""
    return models.DecimalField(
        max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES, **kwargs
    )


def fiat_field(**kwargs: Any) -> _Amount:
    """Fiat sums: 18 whole digits and up to 4 decimals, the widest minor units a currency has
    (KWD 3; CLF 4); each is held to its own currency's (FiatCurrency.precision) when parsed."""
    return models.DecimalField(max_digits=22, decimal_places=4, **kwargs)


@overload
def price_field(*, null: Literal[True], **kwargs: Any) -> _AmountOrNone: ...
@overload
def price_field(**kwargs: Any) -> _Amount: ...
def price_field(**kwargs: Any) -> _Amount | _AmountOrNone:
    return models.DecimalField(max_digits=24, decimal_places=8, **kwargs)
