"""Template filters for money: exact Decimal formatting, never through float.

Asset amounts in the browser go through one filter that knows the asset, `{{ x|amount:asset }}`:
the amount rounded *down* to the asset's display precision (`Asset.display_places`: BTC 8,
ETH 6, USDT 2 by default), every place written out ("1.000000 ETH", as the exact form writes
its places), inside a span whose `title` and `data-exact` carry the exact amount, so it shows on
hover and is what a copy takes. Down, not half-even: a balance, a payout or what is left of an
offer is never shown as more than it is. The API keeps exact amounts (common.money.fmt)."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from common.l10n import localize_number
from common.money import fmt_fiat, quantum

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


def _is_asset(value: Any) -> bool:
    return hasattr(value, "display_places") and hasattr(value, "precision")


def amount_shown(value: Any, asset: Any) -> str:
    """The amount as the browser shows it: rounded down to the asset's display places, each place
    written (0.0384615384615385 ETH -> "0.038461"); plain text, for attributes and messages."""
    number = _decimal(value)
    if number is None:
        return ""
    places = int(asset.display_places)
    return format(number.quantize(quantum(places), rounding=ROUND_DOWN), "f")


@register.filter
def amount(value: Any, precision: Any = 8) -> str:
    """`{{ trade.amount|amount:trade.asset }}`: the amount at the asset's display precision in a
    span with the exact amount on hover and for copying (see the module's docstring).
    `{{ x|amount:8 }}` (a number of places): the exact amount as text, 0.01 -> "0.01000000"."""
    if _is_asset(precision):
        return amount_html(value, precision)
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


def amount_html(value: Any, asset: Any) -> SafeString | str:
    """<span class="amount" title="exact" data-exact="exact">shown</span>; `amount-rounded` when
    the two differ (the page underlines it, hinting at the hover)."""
    exact = amount(value, asset.precision)
    if exact == "":
        return ""
    shown = amount_shown(value, asset)
    rounded = _decimal(shown) != _decimal(value)
    # What people read is in their language's symbols ("0,038461" in es); what a copy takes
    # (data-exact) is the one plain format the forms and the API read in every language.
    return format_html(
        '<span class="{}" title="{}" data-exact="{}">{}</span>',
        "amount amount-rounded" if rounded else "amount",
        localize_number(exact),
        exact,
        localize_number(shown),
    )


@register.filter
def amount_text(value: Any, asset: Any) -> str:
    """`{{ x|amount_text:asset }}`: the shown amount as plain text (a page title, an attribute),
    in the active language's symbols."""
    return localize_number(amount_shown(value, asset))


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
    return fmt_fiat(number, _places(number, places))


@register.filter
def percent(value: Any) -> str:
    """A completion rate (already in percent) as "98.5%"; "—" when there is none yet."""
    number = _decimal(value)
    if number is None:
        return "—"
    text = localize_number(format(number.normalize(), "f"))
    return f"{text}%"


@register.filter
def signed(value: Any) -> str:
    """A margin in percent with its sign: 1.5 -> "+1.5%", -2 -> "-2%"."""
    number = _decimal(value)
    if number is None:
        return ""
    text = localize_number(format(number.normalize(), "f"))
    return f"+{text}%" if number > 0 else f"{text}%"
