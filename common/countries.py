"""ISO 3166-1 alpha-2 countries with their English names, from CLDR (Babel): a trader's
country (accounts' Profile.country), the regions of payment methods and offers' allowed
countries. CLDR's numeric region codes (001, 150...) and the pseudo-regions ZZ (unknown),
EU/EZ/UN/QO and the XA/XB test regions are not countries."""

from __future__ import annotations

from babel import Locale as BabelLocale

NOT_COUNTRIES = frozenset({"ZZ", "EU", "EZ", "UN", "QO", "XA", "XB"})

COUNTRY_NAMES: dict[str, str] = {
    code: name
    for code, name in BabelLocale("en").territories.items()
    if len(code) == 2 and code.isalpha() and code not in NOT_COUNTRIES
}


def country_name(code: str) -> str:
    """The English name of a country code, or the code itself when unknown."""
    return COUNTRY_NAMES.get(code.upper(), code)


def country_code(value: object) -> str | None:
    """The upper-cased alpha-2 code when `value` names a country, else None."""
    code = str(value or "").strip().upper()
    return code if code in COUNTRY_NAMES else None
