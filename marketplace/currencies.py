"""The fiat currencies the platform can trade: every ISO 4217 currency that is legal tender in a
territory today, with its minor units, read from the Unicode CLDR data that Babel ships (pinned
in requirements, so a new release changes nothing until it is upgraded). Pure: no database;
marketplace.services.reference writes it into FiatCurrency.

Minor units are CLDR's `digits` (babel.numbers.get_currency_precision): what the currency is
written with in practice. They match ISO 4217's minor units for all but a handful that no one
pays in fractions of any more (IQD, whose fils ISO still lists, is 0 here): a trade's fiat amount
is what a buyer really sends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Protocol

from babel.core import get_global
from babel.numbers import get_currency_name, get_currency_precision, get_territory_currencies

from common.money import parse_fiat

# The widest minor unit the fiat columns hold (common.money.fiat_field): CLDR's widest are 4
# (CLF, UYW, units of account, not legal tender); legal tender goes up to 3 (KWD, BHD...).
MAX_MINOR_UNITS = 4

# Enabled when first loaded; moderators enable the others in the admin. The first four were the
# platform's only fiats before the whole table; the others have payment methods in the
# catalogue that their traders use every day (Pix, UPI, M-Pesa, MTN MoMo).
ENABLED_BY_DEFAULT = frozenset({"EUR", "USD", "GBP", "NGN", "BRL", "INR", "KES", "GHS"})


@dataclass(frozen=True)
class CurrencyInfo:
    code: str
    name: str
    minor_units: int


def legal_tender_codes(*, on: date | None = None) -> set[str]:
    """ISO 4217 codes that are legal tender in at least one territory on `on` (today)."""
    territories = get_global("territory_currencies")
    codes: set[str] = set()
    for territory in territories:
        codes.update(get_territory_currencies(territory, start_date=on, tender=True))
    return codes


def minor_units(code: str) -> int:
    return int(get_currency_precision(code))


def iso_currencies(*, on: date | None = None) -> list[CurrencyInfo]:
    """Every legal-tender currency, by code, with its English name and minor units."""
    return [
        CurrencyInfo(code, str(get_currency_name(code, locale="en")), minor_units(code))
        for code in sorted(legal_tender_codes(on=on))
        if minor_units(code) <= MAX_MINOR_UNITS
    ]


def unit_name(code: str) -> str:
    """The currency's major unit, plural, for messages: "Japanese yen", "Kuwaiti dinars"."""
    return str(get_currency_name(code, count=2, locale="en"))


class _Fiat(Protocol):
    code: str
    precision: int


def parse_fiat_amount(value: object, *, fiat: _Fiat, field: str) -> Decimal:
    """A fiat sum a user typed, at `fiat`'s minor units; finer is refused by name and rule
    ("fiat_amount: JPY has no minor unit: whole Japanese yen only (no decimals).")."""
    return parse_fiat(
        value, currency=fiat.code, precision=fiat.precision, field=field, unit=unit_name(fiat.code)
    )
