"""Security finding 10 (and 13): one strict grammar for every money and number input. Exponents,
several signs, underscores and non-ASCII digits are refused with a 400 naming the field, never a
500 from decimal arithmetic; whatever is accepted is exact."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from common.errors import ValidationFailed
from common.money import parse_amount, parse_decimal, parse_signed
from marketplace.tests.factories import fund, make_offer

CANONICAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=80), st.from_regex(r"[+-]{0,2}[0-9_.eE٠-٩０-９]{0,30}")))
def test_the_parsers_accept_only_the_grammar_and_never_crash(text):
    for parse in (
        lambda t: parse_amount(t, precision=8, field="amount"),
        lambda t: parse_signed(t, precision=2, field="margin_percent"),
        lambda t: parse_decimal(t, field="amount"),
    ):
        refused: ValidationFailed | None = None
        try:
            value = parse(text)
        except ValidationFailed as exc:
            refused = exc
        if refused is not None:
            assert refused.fields  # names the field
        else:
            assert isinstance(value, Decimal)
            assert value.is_finite()
            assert CANONICAL.fullmatch(text.strip())  # nothing non-canonical got through


@pytest.mark.parametrize(
    "text", ["1e30", "1E-8", "+-5", "--5", "١٠", "１", "1_000", "1 000", "0x10", "NaN", "Infinity"]
)
def test_non_canonical_forms_are_refused(text):
    with pytest.raises(ValidationFailed):
        parse_signed(text, precision=2, field="margin_percent")
    with pytest.raises(ValidationFailed):
        parse_amount(text, precision=8, field="amount")


def test_one_leading_sign_is_fine():
    assert parse_signed("-5", precision=2, field="m") == Decimal("-5.00")
    assert parse_signed("+5.5", precision=2, field="m") == Decimal("5.50")


@pytest.mark.django_db
def test_the_api_and_pages_answer_400_not_500(alice, client):
    # given a funded maker with a token
    fund(alice, "BTC", "1")
    make_offer(alice)
    api = APIClient()
    api.force_authenticate(alice)
    # when exponents too large for any column arrive everywhere a number is read
    book = api.get("/api/v1/offers/", {"amount": "1e999999999"})
    withdrawal = api.post(
        "/api/v1/wallets/BTC/withdrawals/",
        {"amount": "1e25", "address": "bc1qexponentaddress", "password": "demo-pass-123"},
        format="json",
    )
    offer = api.post(
        "/api/v1/offers/",
        {
            "side": "sell",
            "asset": "BTC",
            "fiat": "EUR",
            "price_type": "fixed",
            "price": "1e30",
            "amount": "0.1",
            "min_fiat": "10",
            "max_fiat": "100",
            "payment_methods": ["sepa"],
        },
        format="json",
    )
    page = client.get("/", {"amount": "1e30"})
    # then each is a clear refusal naming its field (the page shows the form's error)
    assert book.status_code == 400
    assert "amount" in book.json()["error"]["fields"]
    assert withdrawal.status_code == 400
    assert "amount" in withdrawal.json()["error"]["fields"]
    assert offer.status_code == 400
    assert "price" in offer.json()["error"]["fields"]
    assert page.status_code in (200, 400)
