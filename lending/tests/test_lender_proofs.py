"""What no custodial lender offers: a lender proves, from a signed checkpoint and without
trusting the server, that each repayment of a loan reached them."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from ledger.services import checkpoint_create, ledger_seal_pending
from ledger.verify import verify_proof
from lending import services
from lending.models import Loan
from lending.tests.helpers import at, lenders, request_example
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db


def _api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def test_a_lender_proves_every_installment_paid_to_them(alice, monkeypatch):
    # given the example funded by three lenders, and two installments collected
    fund(alice, "USDT", "6000")
    request = request_example(alice)
    a, b, c = lenders("0.5", "0.3", "0.2")
    for lender, amount in ((a, "0.5"), (b, "0.3"), (c, "0.2")):
        services.loan_request_fund(request_id=request.pk, lender=lender, amount=amount)
    loan = Loan.objects.get(pk=request.pk)
    for inst in loan.installments.order_by("n")[:2]:
        at(monkeypatch, inst.due_at + timedelta(minutes=1))
        assert services.loan_collect(loan_id=loan.pk) == 1
    monkeypatch.undo()
    ledger_seal_pending()
    checkpoint_create()

    # when lender b lists what this loan paid them
    listed = _api(b).get(f"/api/v1/transfers/?kind=loan_installment&reference={loan.pk}")
    assert listed.status_code == 200, listed.json()
    rows = listed.json()["results"]
    assert len(rows) == 2
    keys = APIClient().get("/api/v1/ledger/public-key/").json()
    trusted = {k["key_id"]: k["public_key"] for k in keys["keys"]}
    total = Decimal(0)
    for row in rows:
        # then each one verifies offline against the signed checkpoint, names the loan and the
        # installment in its key, and credits b's own account
        proof = _api(b).get(f"/api/v1/ledger/entries/{row['seq']}/proof/").json()
        entry = verify_proof(proof, trusted)
        assert entry["key"].startswith(f"loan:{loan.pk}:inst:")
        assert entry["key"].endswith(f":lender:{b.pk}")
        assert entry["credit"] == row["credit"]
        total += Decimal(entry["amount"])
    # and together they are b's 30 % of the first two installments, to the wei
    due = sum((i.total for i in loan.installments.order_by("n")[:2]), Decimal(0))
    assert total == pytest.approx(due * Decimal("0.3"), abs=Decimal("1e-18"))

    # a bad filter is a 400 naming the field; another lender's view holds only their own
    bad = _api(b).get("/api/v1/transfers/?kind=nonsense")
    assert bad.status_code == 400
    assert "kind" in bad.json()["error"]["fields"]
    theirs = _api(c).get(f"/api/v1/transfers/?kind=loan_installment&reference={loan.pk}").json()
    assert {r["credit"] for r in theirs["results"]}.isdisjoint({r["credit"] for r in rows})
