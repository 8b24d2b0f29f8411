"""What a saved payment account holds for each payment method: one table of data
(METHOD_FIELDS), the field kinds and how each is checked and normalised. A method the table
doesn't name (one a moderator added in the admin) gets GENERIC: the holder's name and free-form
details. Pure: no database; marketplace.services.payment_accounts applies it."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from stdnum import bic as stdnum_bic
from stdnum import iban as stdnum_iban
from stdnum.exceptions import InvalidChecksum
from stdnum.exceptions import ValidationError as StdnumError


@dataclass(frozen=True)
class AccountField:
    key: str
    label: str
    kind: str  # a key of KINDS
    required: bool = True
    help: str = ""


@dataclass(frozen=True)
class MethodFields:
    fields: tuple[AccountField, ...]
    # At least one of these (optional) fields must be given, e.g. a Revtag or a phone number.
    one_of: tuple[str, ...] = ()


HOLDER = AccountField(
    "holder_name",
    "Account holder",
    "name",
    help="As your bank shows it. When you are verified, it must be your verified name.",
)
IBAN = AccountField("iban", "IBAN", "iban", help="E.g. DE89 3704 0044 0532 0130 00")
BIC = AccountField("bic", "BIC / SWIFT", "bic", required=False, help="E.g. COBADEFFXXX")
PHONE = AccountField(
    "phone", "Phone", "phone", required=False, help="With the country code, e.g. +44 7700 900123"
)
EMAIL = AccountField("email", "Email", "email")

METHOD_FIELDS: dict[str, MethodFields] = {
    "sepa": MethodFields((HOLDER, IBAN, BIC)),
    "sepa-instant": MethodFields((HOLDER, IBAN, BIC)),
    "revolut": MethodFields(
        (
            HOLDER,
            AccountField("revtag", "Revtag", "tag", required=False, help="E.g. @alice"),
            PHONE,
        ),
        one_of=("revtag", "phone"),
    ),
    "wise": MethodFields((HOLDER, EMAIL)),
    "zelle": MethodFields(
        (HOLDER, AccountField("email", "Email", "email", required=False), PHONE),
        one_of=("email", "phone"),
    ),
    "faster-payments": MethodFields(
        (
            HOLDER,
            AccountField("sort_code", "Sort code", "sort_code", help="6 digits, e.g. 12-34-56"),
            AccountField("account_number", "Account number", "uk_account", help="8 digits"),
        )
    ),
    "bank-transfer": MethodFields(
        (
            HOLDER,
            AccountField("bank_name", "Bank", "text"),
            AccountField("account_number", "Account number or IBAN", "text"),
            AccountField("bic", "BIC / SWIFT / routing code", "text", required=False),
        )
    ),
    "opay": MethodFields((HOLDER, AccountField("phone", "OPay phone number", "phone"))),
}
GENERIC = MethodFields(
    (
        HOLDER,
        AccountField("details", "Account details", "text", help="What the buyer needs to pay you."),
    )
)


def fields_for(method_code: str) -> MethodFields:
    return METHOD_FIELDS.get(method_code, GENERIC)


# --- the kinds: each turns what was typed into the stored value, or raises ValueError(why) -----

NAME_RE = re.compile(r"^[^\W\d_]+(?:[ '’.-]+[^\W\d_]+)*\.?$")
PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")
TAG_RE = re.compile(r"^[a-z0-9_]{3,32}$")
MAX_TEXT = 200


def _name(value: str) -> str:
    value = " ".join(value.split())
    if not 2 <= len(value) <= 100 or not NAME_RE.match(value):
        raise ValueError("Letters, spaces, hyphens and apostrophes only (2-100 characters).")
    return value


def _iban(value: str) -> str:
    try:
        return str(stdnum_iban.validate(value))
    except InvalidChecksum:
        raise ValueError("The check digits don't match: look for a typo.") from None
    except StdnumError:
        raise ValueError("Not a valid IBAN, e.g. DE89 3704 0044 0532 0130 00.") from None


def _bic(value: str) -> str:
    try:
        return str(stdnum_bic.validate(value))
    except StdnumError:
        raise ValueError("Not a valid BIC: 8 or 11 letters and digits, e.g. COBADEFFXXX.") from None


def _email(value: str) -> str:
    value = value.strip()
    try:
        validate_email(value)
    except DjangoValidationError:
        raise ValueError("Not a valid email address.") from None
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


def _phone(value: str) -> str:
    compact = re.sub(r"[\s().-]", "", value)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not PHONE_RE.match(compact):
        raise ValueError("An international number with its country code, e.g. +44 7700 900123.")
    return compact


def _tag(value: str) -> str:
    tag = value.strip().lstrip("@").lower()
    if not TAG_RE.match(tag):
        raise ValueError("3-32 letters, digits or underscores, e.g. @alice.")
    return "@" + tag


def _digits(count: int, what: str) -> Callable[[str], str]:
    def clean(value: str) -> str:
        digits = re.sub(r"[\s-]", "", value)
        if not (digits.isdigit() and len(digits) == count):
            raise ValueError(f"{what}: {count} digits.")
        return digits

    return clean


def _text(value: str) -> str:
    value = " ".join(value.split())
    if len(value) > MAX_TEXT:
        raise ValueError(f"At most {MAX_TEXT} characters.")
    return value


KINDS: dict[str, Callable[[str], str]] = {
    "name": _name,
    "iban": _iban,
    "bic": _bic,
    "email": _email,
    "phone": _phone,
    "tag": _tag,
    "sort_code": _digits(6, "A sort code"),
    "uk_account": _digits(8, "An account number"),
    "text": _text,
}


def display(kind: str, value: str) -> str:
    """How a stored value reads on a page (the copy button copies the stored value)."""
    if kind == "iban":
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
    if spec.one_of and not any(values.get(k) for k in spec.one_of) and not errors:
        labels = " or ".join(f.label for f in spec.fields if f.key in spec.one_of)
        errors[spec.one_of[0]] = f"Give at least one of: {labels}."
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
