"""Schemathesis over every endpoint of /api/schema/: no 5xx, and every response conforms to the
schema (status codes, content types, bodies). Bounded examples so it stays fast."""

from __future__ import annotations

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from schemathesis import checks

from accounts.tests.factories import UserFactory
from marketplace.tests.factories import fund, make_offer, make_trade, reference_data


@pytest.fixture(autouse=True)
def _keep_test_connection(db):
    # As Django's test client does: the in-process WSGI calls must not close the test's
    # connection (and with it the transaction that isolates the test) after each request.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def bot_token(db) -> str:
    """A trader with balances, an offer of their own, others' offers and a trade to act on."""
    reference_data()
    me, other = UserFactory(username="fuzzbot"), UserFactory(username="counterparty")
    for asset in ("BTC", "ETH", "USDT"):
        fund(me, asset, "5")
        fund(other, asset, "5")
    make_offer(me, amount="1")
    make_offer(other, amount="1")
    make_offer(other, side="buy", amount="1")
    make_trade(other, me, amount="0.01", fund_seller=False)
    return Token.objects.create(user=me).key


# The schema view needs no database: load it at collection, through the app itself.
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, bot_token):
    case.call_and_validate(
        headers={"Authorization": f"Token {bot_token}"},
        checks=[
            checks.not_a_server_error,
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_schema_conformance,
        ],
    )
