"""Template filters for money: exact Decimal formatting, never through float."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django import template

from common.money import quantum

register = template.Library()


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        # A float here is a bug upstream; show its shortest exact repr rather than guess.
        value = repr(value)
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _places(value: Decimal, precision: int) -> int:
    """At least `precision` places, more only when the value has digits beyond it (drop nothing)."""
    exponent = value.normalize().as_tuple().exponent
    needed = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    return max(precision, needed)


DISPLAY_PLACES = 8


@register.filter
def amount(value: Any, precision: Any = 8) -> str:
    """`{{ w.available|amount:w.asset.precision }}`: 0.01 BTC -> "0.01000000"."""
    number = _decimal(value)
    if number is None:
        return ""
    try:
        places = int(precision)
    except (TypeError, ValueError):
        places = 8
    # Not str(): Decimal writes 0.00000001 as "1E-8"; format "f" is always positional.
    text = format(number.quantize(quantum(_places(number, places))), "f")
    if places > DISPLAY_PLACES and "." in text:
        # 18-decimal assets (ETH): drop trailing zeros past 8 places; still exact.
        whole, frac = text.split(".")
        text = f"{whole}.{frac[:DISPLAY_PLACES]}{frac[DISPLAY_PLACES:].rstrip('0')}"
    return text


@register.filter
def fiat(value: Any, precision: Any = 2) -> str:
    """A fiat sum or price with thousands separators: 85000 -> "85,000.00" (exact)."""
    number = _decimal(value)
    if number is None:
        return ""
    try:
        places = int(precision)
    except (TypeError, ValueError):
        places = 2
    places = _places(number, places)
    return format(number.quantize(quantum(places)), f",.{places}f")


@register.filter
def percent(value: Any) -> str:
    """A completion rate (already in percent) as "98.5%"; "—" when there is none yet."""
    number = _decimal(value)
    if number is None:
        return "—"
    text = format(number.normalize(), "f")
    return f"{text}%"


@register.filter
def signed(value: Any) -> str:
    """A margin in percent with its sign: 1.5 -> "+1.5%", -2 -> "-2%"."""
    number = _decimal(value)
    if number is None:
        return ""
    text = format(number.normalize(), "f")
    return f"+{text}%" if number > 0 else f"{text}%"
