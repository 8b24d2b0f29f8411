"""Hostile strings in every field of every write endpoint of /api/schema/ (security finding 10):
exponents, several signs, non-ASCII digits, NaN, control bytes, markup, huge texts. The answer
is a 4xx naming what was wrong, never a 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from marketplace.tests.factories import fund, make_offer, make_trade, reference_data

HOSTILE = [
    "1e999999999",
    "1e30",
    "-1e-30",
    "+-5",
    "١٠",
    "１",
    "1_000",
    "NaN",
    "-Infinity",
    "0x10",
    "\x00",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "9" * 5000,
    "",
]


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        node = schema["components"]["schemas"][name]
    return node


def _string_fields(schema: dict[str, Any], body: dict[str, Any]) -> list[str]:
    props = _resolve(schema, body).get("properties", {})
    return [
        name
        for name, spec in props.items()
        if _resolve(schema, spec).get("type") in ("string", None) and not spec.get("readOnly")
    ]


@pytest.mark.django_db
def test_every_string_field_of_every_write_refuses_hostile_input_without_a_5xx():
    # given a trader with balances, an offer and a trade, and the API's own schema
    reference_data()
    me, other = UserFactory(username="hostile"), UserFactory(username="other")
    for user in (me, other):
        fund(user, "BTC", "5")
    offer = make_offer(other, amount="1")
    trade = make_trade(other, me, amount="0.01", fund_seller=False)
    client = APIClient()
    client.force_authenticate(me)
    schema = json.loads(client.get("/api/schema/?format=json").content)
    ids = {
        "offer_id": offer.pk,
        "trade_id": trade.pk,
        "asset": "BTC",
        "key_id": 1,
        "document_id": 1,
        "relation_id": 1,
        "webhook_id": 1,
        "endpoint_id": 1,
        "feedback_id": 1,
        "message_id": 1,
        "notification_id": 1,
        "seq": 1,
    }
    tried = 0
    failures = []
    # when each string field of each POST/PATCH body gets each hostile value
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if method not in ("post", "patch", "put"):
                continue
            content = operation.get("requestBody", {}).get("content", {})
            body = (content.get("application/json") or {}).get("schema")
            if not body:
                continue
            url = path
            for name, value in ids.items():
                url = url.replace("{" + name + "}", str(value))
            if "{" in url:
                continue
            for field in _string_fields(schema, body):
                for value in HOSTILE:
                    response = getattr(client, method)(url, {field: value}, format="json")
                    tried += 1
                    if response.status_code >= 500:
                        failures.append((method.upper(), url, field, value[:20]))
    # then nothing answered with a server error
    assert tried > 100
    assert failures == []
