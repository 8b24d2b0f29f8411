"""What a saved payment account holds for each payment method: the field kinds and how each is
checked and normalised (python-stdnum where it knows the number: IBAN, BIC, CPF, CNPJ, ABA
routing numbers, CBU/CVU, ABN, Luhn card numbers; the published format otherwise). Which fields
each method has is data, in marketplace.payment_catalog; a method the catalogue doesn't name
(one a moderator added in the admin) gets GENERIC: the holder's name and free-form details.
Pure: no database; marketplace.services.payment_accounts applies it."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from django.utils.translation import gettext, gettext_lazy
from stdnum import bic as stdnum_bic
from stdnum import iban as stdnum_iban
from stdnum import luhn as stdnum_luhn
from stdnum.ar import cbu as stdnum_cbu
from stdnum.au import abn as stdnum_abn
from stdnum.br import cnpj as stdnum_cnpj
from stdnum.br import cpf as stdnum_cpf
from stdnum.exceptions import InvalidChecksum
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.us import rtn as stdnum_rtn

# ISO 3166-1 alpha-2 countries (CLDR, through Babel): the regions of the payment methods.
from common.countries import COUNTRY_NAMES

# A label or help text: lazy, written out in the reader's language where it is shown.
Text = Any


@dataclass(frozen=True)
class AccountField:
    key: str
    label: Text
    kind: str  # a key of KINDS
    required: bool = True
    help: Text = ""


@dataclass(frozen=True)
class MethodFields:
    fields: tuple[AccountField, ...]
    # At least one of these (optional) fields must be given, e.g. a Revtag or a phone number.
    one_of: tuple[str, ...] = ()
    # A rule over several fields once each is valid on its own (a NUBAN's check digit depends on
    # its bank's code): {field key: why} for what it refuses.
    check: Callable[[Mapping[str, str]], dict[str, str]] | None = None


HOLDER = AccountField(
    "holder_name",
    gettext_lazy("Account holder"),
    "name",
    help=gettext_lazy(
        "As your bank shows it. When you are verified, it must be your verified name."
    ),
)
IBAN = AccountField(
    "iban", gettext_lazy("IBAN"), "iban", help=gettext_lazy("E.g. DE89 3704 0044 0532 0130 00")
)
BIC = AccountField(
    "bic", gettext_lazy("BIC / SWIFT"), "bic", required=False, help=gettext_lazy("E.g. COBADEFFXXX")
)
PHONE = AccountField(
    "phone",
    gettext_lazy("Phone"),
    "phone",
    required=False,
    help=gettext_lazy("With the country code, e.g. +44 7700 900123"),
)
EMAIL = AccountField("email", gettext_lazy("Email"), "email")

GENERIC = MethodFields(
    (
        HOLDER,
        AccountField(
            "details",
            gettext_lazy("Account details"),
            "text",
            help=gettext_lazy("What the buyer needs to pay you."),
        ),
    )
)


def fields_for(method_code: str) -> MethodFields:
    # The catalogue imports this module's kinds; read it when first asked.
    from marketplace.payment_catalog import METHOD_FIELDS

    return METHOD_FIELDS.get(method_code, GENERIC)


# --- the kinds: each turns what was typed into the stored value, or raises ValueError(why) -----

NAME_RE = re.compile(r"^[^\W\d_]+(?:[ '’.-]+[^\W\d_]+)*\.?$")
PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")
TAG_RE = re.compile(r"^[a-z0-9_]{3,32}$")
MAX_TEXT = 200


def _name(value: str) -> str:
    value = " ".join(value.split())
    if not 2 <= len(value) <= 100 or not NAME_RE.match(value):
        raise ValueError(
            gettext("Letters, spaces, hyphens and apostrophes only (2-100 characters).")
        )
    return value


def _iban(value: str) -> str:
    try:
        return str(stdnum_iban.validate(value))
    except InvalidChecksum:
        raise ValueError(gettext("The check digits don't match: look for a typo.")) from None
    except StdnumError:
        raise ValueError(gettext("Not a valid IBAN, e.g. DE89 3704 0044 0532 0130 00.")) from None


def _bic(value: str) -> str:
    try:
        return str(stdnum_bic.validate(value))
    except StdnumError:
        raise ValueError(
            gettext("Not a valid BIC: 8 or 11 letters and digits, e.g. COBADEFFXXX.")
        ) from None


def _email(value: str) -> str:
    value = value.strip()
    try:
        validate_email(value)
    except DjangoValidationError:
        raise ValueError(gettext("Not a valid email address.")) from None
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


def _phone(value: str) -> str:
    compact = re.sub(r"[\s().-]", "", value)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not PHONE_RE.match(compact):
        raise ValueError(
            gettext("An international number with its country code, e.g. +44 7700 900123.")
        )
    return compact


def _tag(value: str) -> str:
    tag = value.strip().lstrip("@").lower()
    if not TAG_RE.match(tag):
        raise ValueError(gettext("3-32 letters, digits or underscores, e.g. @alice."))
    return "@" + tag


def _digits(count: int, what: Text) -> Callable[[str], str]:
    def clean(value: str) -> str:
        digits = re.sub(r"[\s-]", "", value)
        if not (digits.isdigit() and len(digits) == count):
            raise ValueError(gettext("{what}: {count} digits.").format(what=what, count=count))
        return digits

    return clean


def _text(value: str) -> str:
    value = " ".join(value.split())
    if len(value) > MAX_TEXT:
        raise ValueError(gettext("At most {count} characters.").format(count=MAX_TEXT))
    return value


def _digit_range(low: int, high: int, what: Text) -> Callable[[str], str]:
    def clean(value: str) -> str:
        digits = re.sub(r"[\s-]", "", value)
        if not (digits.isdigit() and low <= len(digits) <= high):
            raise ValueError(
                gettext("{what}: {low}-{high} digits.").format(what=what, low=low, high=high)
            )
        return digits

    return clean


def _pattern(
    regex: str,
    why: Text,
    *,
    upper: bool = False,
    lower: bool = False,
    squeeze: bool = True,
) -> Callable[[str], str]:
    """A value in a published format: spaces dropped (`squeeze`; else only around it, and one
    inside is refused), case folded as the format writes it."""
    compiled = re.compile(regex)

    def clean(value: str) -> str:
        compact = re.sub(r"\s", "", value) if squeeze else " ".join(value.split())
        compact = compact.upper() if upper else compact.lower() if lower else compact
        if not compiled.fullmatch(compact):
            raise ValueError(str(why))
        return compact

    return clean


def _stdnum(module: Any, what: Text, example: str) -> Callable[[str], str]:
    """A number python-stdnum knows, stored compact (digits only)."""

    def clean(value: str) -> str:
        try:
            return str(module.validate(value))
        except InvalidChecksum:
            raise ValueError(
                gettext("Not a valid {what}: its check digit doesn't match.").format(what=what)
            ) from None
        except StdnumError:
            raise ValueError(
                gettext("Not a valid {what}, e.g. {example}.").format(what=what, example=example)
            ) from None

    return clean


def _mobile(
    country_code: str, national: str, example: str, *, trunk: bool = True
) -> Callable[[str], str]:
    """A mobile number of one country, stored as +<country code><number>. Typed with the
    country code (+254..., 00254...) or, where `trunk`, as dialled at home with its leading 0
    (0712 345 678)."""
    compiled = re.compile(rf"\+{country_code}(?:{national})")

    def clean(value: str) -> str:
        compact = re.sub(r"[\s().-]", "", value)
        if compact.startswith("00"):
            compact = "+" + compact[2:]
        elif trunk and compact.startswith("0"):
            compact = f"+{country_code}{compact[1:]}"
        elif not compact.startswith("+") and compact.startswith(country_code):
            compact = "+" + compact
        if not compiled.fullmatch(compact):
            raise ValueError(
                gettext("A mobile number of this country, e.g. {example}.").format(example=example)
            )
        return compact

    return clean


def _either(*kinds: str, why: Text) -> Callable[[str], str]:
    """The first of `kinds` that accepts the value (an email or a phone number, say)."""

    def clean(value: str) -> str:
        for kind in kinds:
            try:
                return KINDS[kind](value)
            except ValueError:
                continue
        raise ValueError(str(why))

    return clean


def _iban_of(*countries: str) -> Callable[[str], str]:
    def clean(value: str) -> str:
        iban = _iban(value)
        if iban[:2] not in countries:
            raise ValueError(
                gettext("An IBAN of {countries} (it starts with {start}).").format(
                    countries=" / ".join(countries), start=iban[:2]
                )
            )
        return iban

    return clean


EVP_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _pix_key(value: str) -> str:
    """A Pix key, in the form the Central Bank's directory (DICT) stores it: a CPF or CNPJ as
    digits (their check digits verified), an email, a phone as +55 with its area code, or a
    random key (EVP, a UUID). Eleven bare digits are a CPF: phone keys are written +55."""
    text = value.strip()
    if "@" in text:
        return _email(text)
    if text.startswith("+") or text.startswith("00"):
        return KINDS["phone_br"](text)
    if EVP_RE.fullmatch(text.lower()):
        return text.lower()
    digits = re.sub(r"[\s./-]", "", text)
    if digits.isdigit() and len(digits) == 11:
        return KINDS["cpf"](digits)
    if digits.isdigit() and len(digits) == 14:
        return KINDS["cnpj"](digits)
    raise ValueError(
        gettext(
            "A Pix key: CPF (11 digits), CNPJ (14 digits), email, phone (+55 11 91234 5678) or a "
            "random key (e.g. 123e4567-e89b-42d3-a456-426614174000)."
        )
    )


def _clabe(value: str) -> str:
    """A Mexican CLABE: 18 digits, the last a check digit (weights 3, 7, 1 over the first 17,
    each product mod 10, summed; the digit brings the sum to a multiple of 10)."""
    digits = re.sub(r"[\s-]", "", value)
    if not (digits.isdigit() and len(digits) == 18):
        raise ValueError(gettext("A CLABE: 18 digits, e.g. 002010077777777771."))
    weights = (3, 7, 1) * 6
    total = sum((int(d) * w) % 10 for d, w in zip(digits[:17], weights, strict=False))
    if (10 - total % 10) % 10 != int(digits[17]):
        raise ValueError(gettext("Not a valid CLABE: its check digit doesn't match."))
    return digits


def nuban_check_digit(bank_code: str, serial: str) -> int:
    """The check digit of a Nigerian account number (NUBAN, CBN's standard): weights 3, 7, 3
    repeated over the bank's code (3 digits, or 6 for other institutions; the 3 left-padded
    with zeros, which changes nothing) and the account's 9-digit serial."""
    digits = bank_code.zfill(6) + serial
    total = sum(int(d) * (3, 7, 3)[i % 3] for i, d in enumerate(digits))
    return (10 - total % 10) % 10


def nuban_matches_bank(details: Mapping[str, str]) -> dict[str, str]:
    account, bank = details.get("account_number", ""), details.get("bank_code", "")
    if account and bank and nuban_check_digit(bank, account[:9]) != int(account[9]):
        return {
            "account_number": gettext(
                "This account number doesn't belong to that bank code: its check digit doesn't "
                "match. Look for a typo in either."
            )
        }
    return {}


def _card(value: str) -> str:
    digits = re.sub(r"[\s-]", "", value)
    if not (digits.isdigit() and 16 <= len(digits) <= 19):
        raise ValueError(gettext("A card number: 16-19 digits, e.g. 2200 7001 2345 6789."))
    try:
        stdnum_luhn.validate(digits)
    except StdnumError:
        raise ValueError(
            gettext("Not a valid card number: its check digit doesn't match.")
        ) from None
    return digits


def _cashtag(value: str) -> str:
    tag = value.strip().lstrip("$")
    if not CASHTAG_RE.fullmatch(tag):
        raise ValueError(
            gettext("A $Cashtag: a letter, then up to 19 letters, digits or _, e.g. $alice.")
        )
    return "$" + tag


def _handle(value: str) -> str:
    handle = value.strip().lstrip("@")
    if not HANDLE_RE.fullmatch(handle):
        raise ValueError(gettext("A username: 5-30 letters, digits, - or _, e.g. @Alice-Martin."))
    return "@" + handle


def _country(value: str) -> str:
    code = value.strip().upper()
    if not (len(code) == 2 and code.isalpha() and code in COUNTRY_NAMES):
        raise ValueError(gettext("A country's two-letter ISO code, e.g. NG, BR, DE."))
    return code


CASHTAG_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,19}")
HANDLE_RE = re.compile(r"[A-Za-z0-9_-]{5,30}")


KINDS: dict[str, Callable[[str], str]] = {
    "name": _name,
    "iban": _iban,
    "bic": _bic,
    "email": _email,
    "phone": _phone,
    "tag": _tag,
    "sort_code": _digits(6, gettext_lazy("A sort code")),
    "uk_account": _digits(8, gettext_lazy("An account number")),
    "text": _text,
    "city": _pattern(
        r"[^\W\d_]+(?:[ '’.-]+[^\W\d_]+)*\.?",
        gettext_lazy("A city's name, e.g. Lagos or São Paulo."),
        squeeze=False,
    ),
    "country": _country,
    # Banks' numbers python-stdnum checks.
    "iban_nl": _iban_of("NL"),
    "aba_routing": _stdnum(stdnum_rtn, gettext_lazy("ABA routing number"), "011000015"),
    "cpf": _stdnum(stdnum_cpf, gettext_lazy("CPF"), "390.533.447-05"),
    "cnpj": _stdnum(stdnum_cnpj, gettext_lazy("CNPJ"), "11.222.333/0001-81"),
    "cbu": _stdnum(stdnum_cbu, gettext_lazy("CBU/CVU"), "2850590940090418135201"),
    "abn": _stdnum(stdnum_abn, gettext_lazy("ABN"), "51 824 753 556"),
    "card": _card,
    "clabe": _clabe,
    "pix_key": _pix_key,
    # Account numbers in their published formats.
    "us_account": _digit_range(4, 17, gettext_lazy("A US account number")),
    "ifsc": _pattern(
        r"[A-Z]{4}0[A-Z0-9]{6}",
        gettext_lazy("An IFSC: 11 characters, e.g. SBIN0001234."),
        upper=True,
    ),
    "in_account": _digit_range(9, 18, gettext_lazy("An Indian account number")),
    "upi_vpa": _pattern(
        r"[a-z0-9][a-z0-9._-]{1,255}@[a-z][a-z0-9]{1,63}",
        gettext_lazy("A UPI ID (VPA) like name@bank, e.g. alice@okaxis."),
        lower=True,
        squeeze=False,
    ),
    "nuban": _digits(10, gettext_lazy("A NUBAN account number")),
    "ng_bank_code": _pattern(
        r"\d{3}|\d{6}",
        gettext_lazy("The bank's CBN code: 3 digits (058 GTBank) or 6 (other institutions)."),
    ),
    "bank_account": _digit_range(6, 16, gettext_lazy("An account number")),
    "bsb": _digits(6, gettext_lazy("A BSB")),
    "au_account": _digit_range(5, 9, gettext_lazy("An Australian account number")),
    "alias_ar": _pattern(
        r"[a-z0-9.-]{6,20}",
        gettext_lazy("An alias: 6-20 letters, digits, dots or hyphens."),
        lower=True,
    ),
    "uen": _pattern(
        r"\d{8}[A-Z]|\d{9}[A-Z]|[TSR]\d{2}[A-Z]{2}\d{4}[A-Z]",
        gettext_lazy("A UEN, e.g. 201912345K."),
        upper=True,
    ),
    "fps_id": _digit_range(7, 9, gettext_lazy("An FPS ID")),
    "yoomoney": _pattern(
        r"4100\d{7,16}", gettext_lazy("A YooMoney wallet number: 4100 and 7-16 digits.")
    ),
    "perfect_money": _pattern(
        r"[UEG]\d{7,8}",
        gettext_lazy("A Perfect Money account: U, E or G and 7-8 digits, e.g. U1234567."),
        upper=True,
    ),
    "payeer": _pattern(
        r"P\d{7,12}",
        gettext_lazy("A Payeer account: P and 7-12 digits, e.g. P1234567."),
        upper=True,
    ),
    "wechat_id": _pattern(
        r"[A-Za-z][A-Za-z0-9_-]{5,19}",
        gettext_lazy("A WeChat ID: 6-20 letters, digits, - or _, from a letter."),
    ),
    "instapay": _pattern(
        r"[a-z0-9._-]{3,}@instapay",
        gettext_lazy("An InstaPay address, e.g. alice@instapay."),
        lower=True,
    ),
    "cashtag": _cashtag,
    "handle": _handle,
    # Mobile numbers, one country each (the mobile-money and phone-keyed methods).
    "phone_us": _mobile("1", r"[2-9]\d{2}[2-9]\d{6}", "+1 212 555 0123", trunk=False),
    "phone_br": _mobile("55", r"[1-9]{2}9\d{8}", "+55 11 91234 5678"),
    "phone_ke": _mobile("254", r"7\d{8}|1[01]\d{7}", "+254 712 345 678"),
    "phone_ng": _mobile("234", r"[789][01]\d{8}", "+234 803 123 4567"),
    "phone_gh": _mobile("233", r"[25]\d{8}", "+233 24 123 4567"),
    "phone_pl": _mobile("48", r"[4-8]\d{8}", "+48 512 345 678", trunk=False),
    "phone_es": _mobile("34", r"[67]\d{8}", "+34 612 345 678", trunk=False),
    "phone_pt": _mobile("351", r"9[1236]\d{7}", "+351 912 345 678", trunk=False),
    "phone_se": _mobile("46", r"7[02369]\d{7}", "+46 70 123 45 67"),
    "phone_no": _mobile("47", r"[49]\d{7}", "+47 412 34 567", trunk=False),
    "phone_dk": _mobile("45", r"\d{8}", "+45 20 12 34 56", trunk=False),
    "phone_ch": _mobile("41", r"7[5-9]\d{7}", "+41 78 123 45 67"),
    "phone_it": _mobile("39", r"3\d{8,9}", "+39 312 345 6789", trunk=False),
    "phone_fr": _mobile("33", r"[67]\d{8}", "+33 6 12 34 56 78"),
    "phone_sg": _mobile("65", r"[89]\d{7}", "+65 8123 4567", trunk=False),
    "phone_my": _mobile("60", r"1\d{8,9}", "+60 12 345 6789"),
    "phone_th": _mobile("66", r"[689]\d{8}", "+66 81 234 5678"),
    "phone_ph": _mobile("63", r"9\d{9}", "+63 917 123 4567"),
    "phone_co": _mobile("57", r"3\d{9}", "+57 300 123 4567", trunk=False),
    "phone_pe": _mobile("51", r"9\d{8}", "+51 912 345 678", trunk=False),
    "phone_kz": _mobile("7", r"7\d{9}", "+7 701 234 5678", trunk=False),
    "phone_ru": _mobile("7", r"9\d{9}", "+7 912 345 67 89", trunk=False),
    "phone_pk": _mobile("92", r"3\d{9}", "+92 300 1234567"),
    "phone_bd": _mobile("880", r"1[3-9]\d{8}", "+880 1712 345678"),
    "phone_cn": _mobile("86", r"1[3-9]\d{9}", "+86 138 0013 8000", trunk=False),
    "phone_ca": _mobile("1", r"[2-9]\d{2}[2-9]\d{6}", "+1 416 555 0123", trunk=False),
    "phone_au": _mobile("61", r"4\d{8}", "+61 412 345 678"),
    "phone_eg": _mobile("20", r"1[0125]\d{8}", "+20 100 123 4567"),
    "phone_sa": _mobile("966", r"5\d{8}", "+966 50 123 4567"),
    "phone_zw": _mobile("263", r"7[1378]\d{7}", "+263 77 123 4567"),
    "phone_hk": _mobile("852", r"[4-9]\d{7}", "+852 5123 4567", trunk=False),
    "phone_fi": _mobile("358", r"4\d{7,8}|50\d{6,7}", "+358 40 123 4567"),
    "phone_ua": _mobile("380", r"[3-9]\d{8}", "+380 67 123 4567"),
}
# Kinds that accept one of several forms; they read KINDS, so they come after it.
KINDS.update(
    {
        "email_or_phone_us": _either(
            "email",
            "phone_us",
            why=gettext_lazy("An email or a US mobile number (+1 212 555 0123)."),
        ),
        "email_or_phone_ca": _either(
            "email",
            "phone_ca",
            why=gettext_lazy("An email or a Canadian mobile number (+1 416 555 0123)."),
        ),
        "payid": _either(
            "email",
            "phone_au",
            "abn",
            why=gettext_lazy(
                "A PayID: an email, an Australian mobile (+61 412 345 678) or an ABN."
            ),
        ),
        "phone_dk_fi": _either(
            "phone_dk",
            "phone_fi",
            why=gettext_lazy("A Danish or Finnish mobile number (+45 20 12 34 56)."),
        ),
        "email_or_phone_cn": _either(
            "email",
            "phone_cn",
            why=gettext_lazy("An email or a Chinese mobile number (+86 138 0013 8000)."),
        ),
    }
)


def display(kind: str, value: str) -> str:
    """How a stored value reads on a page (the copy button copies the stored value)."""
    if kind.startswith("iban"):
        return str(stdnum_iban.format(value))
    if kind == "sort_code" and len(value) == 6:
        return f"{value[:2]}-{value[2:4]}-{value[4:]}"
    return value


def clean_details(
    method_code: str, raw: Mapping[str, Any]
) -> tuple[dict[str, str], dict[str, str]]:
    """(the stored values, {field key: why it was refused}) for what was typed; unknown keys
    are refused by name, empty optional fields left out."""
    spec = fields_for(method_code)
    known = {f.key for f in spec.fields}
    errors: dict[str, str] = {
        str(key): "Not a field of this payment method." for key in raw if key not in known
    }
    values: dict[str, str] = {}
    for field in spec.fields:
        typed = raw.get(field.key)
        text = "" if typed is None else str(typed).strip()
        if not text:
            if field.required:
                errors[field.key] = "Required."
            continue
        try:
            values[field.key] = KINDS[field.kind](text)
        except ValueError as exc:
            errors[field.key] = str(exc)
    if spec.check and not errors:
        errors.update(spec.check(values))
    if spec.one_of and not any(values.get(k) for k in spec.one_of) and not errors:
        labels = gettext(" or ").join(str(f.label) for f in spec.fields if f.key in spec.one_of)
        errors[spec.one_of[0]] = gettext("Give at least one of: {labels}.").format(labels=labels)
    return values, errors


def same_name(a: str, b: str) -> bool:
    """Two names are the same person's when they match ignoring case, accents, punctuation
    between words and spacing: "José  Pérez-Núñez" is "jose perez nunez"."""
    return _name_key(a) == _name_key(b)


def _name_key(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w]+|_", " ", plain.casefold()).split())


def summary(method_code: str, details: Mapping[str, str]) -> str:
    """One line that tells a user's accounts apart: the first field after the holder's name
    (the IBAN, the Revtag...), then the holder."""
    shown = [
        display(f.kind, details[f.key])
        for f in fields_for(method_code).fields
        if f.key != "holder_name" and details.get(f.key)
    ]
    holder = details.get("holder_name", "")
    return " · ".join([*shown[:1], holder] if holder else shown[:1])
