"""ISO 3166-1 alpha-2 countries with their English names, from CLDR (Babel): a trader's
country (accounts' Profile.country), the regions of payment methods and offers' allowed
countries. CLDR's numeric region codes (001, 150...) and the pseudo-regions ZZ (unknown),
EU/EZ/UN/QO and the XA/XB test regions are not countries."""

from __future__ import annotations

from functools import lru_cache

from babel import Locale as BabelLocale
from babel import UnknownLocaleError
from django.utils import translation

NOT_COUNTRIES = frozenset({"ZZ", "EU", "EZ", "UN", "QO", "XA", "XB"})

COUNTRY_NAMES: dict[str, str] = {
    code: name
    for code, name in BabelLocale("en").territories.items()
    if len(code) == 2 and code.isalpha() and code not in NOT_COUNTRIES
}


@lru_cache(maxsize=16)
def _names_in(locale: str) -> dict[str, str]:
    """CLDR's country names in a locale (English's for a locale Babel lacks)."""
    try:
        territories = BabelLocale.parse(locale).territories
    except (UnknownLocaleError, ValueError):
        return COUNTRY_NAMES
    return {code: territories.get(code, name) for code, name in COUNTRY_NAMES.items()}


def country_name(code: str) -> str:
    """The name of a country code in the active language (CLDR's own translations), or the
    code itself when unknown."""
    names = _names_in(translation.to_locale(translation.get_language() or "en"))
    return names.get(code.upper(), code)


def country_names() -> dict[str, str]:
    """{code: name} in the active language, for a picker."""
    return _names_in(translation.to_locale(translation.get_language() or "en"))


def country_code(value: object) -> str | None:
    """The upper-cased alpha-2 code when `value` names a country, else None."""
    code = str(value or "").strip().upper()
    return code if code in COUNTRY_NAMES else None
