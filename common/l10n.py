"""Numbers for people in the active language (issue 20): the locale's decimal and group symbols
(from Babel's CLDR data) on an exact Decimal, and the reverse for what a person types in a
browser form. Exact both ways: Python writes the digits (never float, any size), Babel only
says which symbols a language uses. The API never goes through here: JSON carries amounts as
plain strings ("1234.56") whatever the language."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.dates import format_timedelta
from babel.numbers import get_decimal_symbol, get_group_symbol, get_minus_sign_symbol
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _

from common.errors import ValidationFailed


def babel_locale(language: str | None = None) -> str:
    """The Babel locale of a Django language code ("pt-br" -> "pt_BR"); the site's by default."""
    code = language or translation.get_language() or settings.LANGUAGE_CODE
    return translation.to_locale(code)


@lru_cache(maxsize=32)
def _symbols(locale: str) -> tuple[str, str, str]:
    """(decimal, group, minus) of a locale in Latin digits; English's for a locale Babel lacks."""
    try:
        Locale.parse(locale)
        return (
            get_decimal_symbol(locale),
            get_group_symbol(locale),
            get_minus_sign_symbol(locale),
        )
    except (UnknownLocaleError, ValueError):
        return ".", ",", "-"


def symbols(language: str | None = None) -> tuple[str, str, str]:
    return _symbols(babel_locale(language))


def localize_number(text: str, *, language: str | None = None) -> str:
    """A number Python wrote ("1,234.5" with format ",f", or "-0.015") with the active
    language's symbols: "1.234,5" in Spanish, "1 234,5" in Russian; English unchanged."""
    decimal, group, minus = symbols(language)
    if (decimal, group, minus) == (".", ",", "-"):
        return text
    table = {",": group, ".": decimal, "-": minus}
    return "".join(table.get(ch, ch) for ch in text)


def format_decimal(
    value: Decimal, places: int, *, grouping: bool = True, language: str | None = None
) -> str:
    """An exact Decimal at `places` places for people: 85000 -> "85,000.00" (en),
    "85.000,00" (es). The caller quantizes or checks the places; nothing is rounded here
    beyond Decimal's exact quantize to `places`."""
    quantized = value.quantize(Decimal(1).scaleb(-places)) if places >= 0 else value
    text = format(quantized, ",f" if grouping else "f")
    return localize_number(text, language=language)


# What people type: Latin digits, or Arabic-Indic / Eastern Arabic-Indic ones (and the Arabic
# decimal and group marks), with any kind of space as a group separator.
_DIGITS = str.maketrans(
    "٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹٫٬", "01234567890123456789.,"
)  # fmt: skip
_SPACES = re.compile(r"[\s\u00a0\u202f\u2009']")
_GROUPED = re.compile(r"[+-]?[0-9]{1,3}(?:[.,][0-9]{3})+")


def delocalize_number(text: str, *, field: str, language: str | None = None) -> str:
    """What a person typed in a browser form, in the one grammar of common.money.parse_decimal
    ("1234.56"). In a language whose decimal mark is a comma (es, pt-br, ru), "1.234,56" and
    "1234,56" are 1234.56 and "0.5" is still a half (a point never groups alone there); a lone
    "1.234" could be either, so it is refused with a clear error rather than guessed. In other
    languages the text is left as typed (English keeps its one grammar). Junk is left for the
    parser to refuse."""
    raw = str(text).strip().translate(_DIGITS)
    decimal, _group, _minus = symbols(language)
    raw = raw.replace("\u2212", "-")  # the minus sign some keyboards and locales write
    if decimal != ",":
        return raw
    compact = _SPACES.sub("", raw)
    if "," in compact:
        whole, _sep, frac = compact.rpartition(",")
        if "." in whole:
            if not _GROUPED.fullmatch(whole):
                return raw  # "12.34,5": not a grouping; the parser refuses it
            whole = whole.replace(".", "")
        if "," in whole or "." in frac:
            return raw
        return f"{whole}.{frac}"
    if compact.count(".") > 1 and _GROUPED.fullmatch(compact):
        return compact.replace(".", "")  # "1.234.567": only a grouping has two points
    if _GROUPED.fullmatch(compact) and compact.lstrip("+-")[0] != "0":
        # "1.234": a thousand and thirty-four in Spain, one point two three four to a
        # machine. Money is not guessed.
        comma_form = compact.replace(".", ",")
        raise ValidationFailed.for_field(
            field,
            _(
                "%(text)s is ambiguous: write %(whole)s for the whole number, or "
                "%(comma)s with a decimal comma."
            )
            % {"text": compact, "whole": compact.replace(".", ""), "comma": comma_form},
            code="ambiguous_number",
        )
    return compact


def localize_input(value: str, *, language: str | None = None) -> str:
    """An exact amount ("1234.50", as services and the API write it) as the form shows it for
    editing: the locale's decimal mark, no grouping ("1234,50" in es), so that sending it back
    unchanged reads the same number."""
    decimal, _group, _minus = symbols(language)
    if decimal == "." or not re.fullmatch(r"[+-]?[0-9]+\.[0-9]+", value):
        return value
    return value.replace(".", decimal)


def format_duration(delta: timedelta, *, add_direction: bool = False) -> str:
    """A time span in the active language: "5 minutes" / "in 5 minutes" (CLDR's words)."""
    return format_timedelta(
        delta, add_direction=add_direction, locale=babel_locale(), threshold=1.5
    )
