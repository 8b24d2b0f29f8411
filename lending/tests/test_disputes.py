"""Loan disputes go to moderators as trade disputes do: a party opens one, both sides write, a
moderator who is no party decides; an upheld dispute moves value between the parties on the
ledger, never more than the payer got from the loan. Bad input changes nothing."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.utils import timezone

from accounts.tests.factories import UserFactory
from common.errors import Conflict, InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from ledger.models import Transfer
from ledger.replay import verify_ledger
from lending import services
from lending.models import Loan, LoanDispute, LoanDisputeStatement, LoanEvent
from lending.tests.helpers import at, bal, lenders, request_example
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db

TEXT = "The liquidation used a price far from the market."


def _moderator(username: str = "mod"):
    user = UserFactory(username=username, is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="decide_trade"))
    return UserFactory._meta.model.objects.get(pk=user.pk)  # a fresh permission cache


@pytest.fixture
def moderator(refdata):
    return _moderator()


@pytest.fixture
def loan(alice):
    """1500 USDT borrowed by alice against 1 ETH, funded by two lenders (1000 and 500)."""
    fund(alice, "ETH", "1")
    request = request_example(alice, asset="USDT", amount="1500", collateral_asset="ETH",
                              collateral_amount="1")  # fmt: skip
    big, small = lenders("1000", "500", asset="USDT")
    services.loan_request_fund(request_id=request.pk, lender=big, amount="1000")
    services.loan_request_fund(request_id=request.pk, lender=small, amount="500")
    return Loan.objects.get(pk=request.pk), big, small


def test_a_party_opens_both_sides_write_a_moderator_rejects(loan, alice, moderator):
    the_loan, big, _ = loan
    dispute = services.loan_dispute_open(
        loan_id=the_loan.pk, actor=big, category="conduct", text=TEXT
    )
    assert (dispute.status, dispute.opener_role) == ("open", "lender")
    services.loan_dispute_statement(dispute_id=dispute.pk, actor=alice, text="Nothing wrong here.")
    services.loan_dispute_assign(dispute_id=dispute.pk, actor=moderator)
    services.loan_dispute_statement(dispute_id=dispute.pk, actor=moderator,
                                    text="Please both send the dates.")  # fmt: skip
    roles = list(LoanDisputeStatement.objects.values_list("role", flat=True))
    assert roles == ["borrower", "moderator"]

    before = Transfer.objects.count()
    decided = services.loan_dispute_decide(
        dispute_id=dispute.pk, actor=moderator, outcome="rejected", reason="The rules were applied."
    )
    assert (decided.status, decided.outcome, decided.decided_by) == (
        "decided",
        "rejected",
        moderator,
    )
    assert Transfer.objects.count() == before  # nothing moved
    reasons = list(
        LoanEvent.objects.filter(request_id=the_loan.pk).values_list("reason", flat=True)
    )
    assert f"dispute #{dispute.pk} opened (conduct)" in reasons
    assert f"dispute #{dispute.pk} decided: rejected" in reasons
    # a decided dispute takes nothing more
    with pytest.raises(InvalidTransition):
        services.loan_dispute_statement(dispute_id=dispute.pk, actor=alice, text="One more thing!")


def test_an_upheld_dispute_moves_the_compensation_on_the_ledger(
    loan, alice, moderator, monkeypatch
):
    the_loan, big, _small = loan
    # the first installment is collected: the big lender has received USDT from the loan
    first = the_loan.installments.order_by("n").first()
    at(monkeypatch, first.due_at + timedelta(minutes=1))
    assert services.loan_collect(loan_id=the_loan.pk) == 1
    monkeypatch.undo()
    dispute = services.loan_dispute_open(
        loan_id=the_loan.pk, actor=alice, category="installment", text=TEXT
    )
    alice_usdt, big_usdt = bal(alice, "USDT"), bal(big, "USDT")
    services.loan_dispute_decide(
        dispute_id=dispute.pk, actor=moderator, outcome="compensate",
        reason="The lender agreed to waive part of the interest.",
        compensation_asset="USDT", compensation_amount="12.5", payer_id=big.pk, payee_id=alice.pk,
    )  # fmt: skip
    assert bal(big, "USDT") == big_usdt - Decimal("12.5")
    assert bal(alice, "USDT") == alice_usdt + Decimal("12.5")
    dispute.refresh_from_db()
    assert (dispute.outcome, dispute.compensation_amount) == ("compensate", Decimal("12.5"))
    paid = Transfer.objects.get(kind="loan_compensate")
    assert (paid.reference, paid.amount) == (the_loan.pk, Decimal("12.5"))
    assert verify_ledger().ok


def test_a_compensation_never_exceeds_what_the_payer_got_from_the_loan(loan, alice, moderator):
    the_loan, _big, small = loan
    fund(small, "USDT", "10000")  # rich, but got only 0 USDT from this loan so far
    dispute = services.loan_dispute_open(
        loan_id=the_loan.pk, actor=alice, category="other", text=TEXT
    )
    with pytest.raises(ValidationFailed) as err:
        services.loan_dispute_decide(
            dispute_id=dispute.pk, actor=moderator, outcome="compensate", reason="Upheld, sorry.",
            compensation_asset="USDT", compensation_amount="1", payer_id=small.pk,
            payee_id=alice.pk,
        )  # fmt: skip
    assert "compensation_amount" in err.value.fields
    # the borrower got 1500 USDT from the loan: she can be made to pay up to that
    with pytest.raises(ValidationFailed) as err:
        services.loan_dispute_decide(
            dispute_id=dispute.pk, actor=moderator, outcome="compensate", reason="Upheld, sorry.",
            compensation_asset="USDT", compensation_amount="1500.01", payer_id=alice.pk,
            payee_id=small.pk,
        )  # fmt: skip
    assert "1500" in err.value.message
    dispute.refresh_from_db()
    assert dispute.status == "open"
    assert not Transfer.objects.filter(kind="loan_compensate").exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"reason": "short"}, "reason"),
        ({"compensation_asset": "BTC"}, "compensation_asset"),
        ({"compensation_amount": "0"}, "compensation_amount"),
        ({"compensation_amount": "-3"}, "compensation_amount"),
        ({"compensation_amount": "1.0000001"}, "compensation_amount"),
        ({"payer_id": "nobody"}, "payer"),
        ({"payee_id": 999999}, "payee"),
        ({"payee_id": "self"}, "payee"),
    ],
)
def test_a_bad_decision_names_its_field_and_changes_nothing(loan, alice, moderator, changes, field):
    the_loan, big, _ = loan
    dispute = services.loan_dispute_open(
        loan_id=the_loan.pk, actor=alice, category="other", text=TEXT
    )
    args = {"outcome": "compensate", "reason": "Upheld after review.", "compensation_asset": "USDT",
            "compensation_amount": "5", "payer_id": alice.pk, "payee_id": big.pk, **changes}  # fmt: skip
    if args["payee_id"] == "self":
        args["payee_id"] = alice.pk
    balances = bal(alice, "USDT"), bal(big, "USDT")
    with pytest.raises(ValidationFailed) as err:
        services.loan_dispute_decide(dispute_id=dispute.pk, actor=moderator, **args)
    assert field in err.value.fields
    dispute.refresh_from_db()
    assert dispute.status == "open"
    assert dispute.outcome == ""
    assert (bal(alice, "USDT"), bal(big, "USDT")) == balances


def test_who_may_do_what(loan, alice, bob, moderator):
    the_loan, big, _ = loan
    # a stranger can't see the loan, let alone dispute it
    with pytest.raises(NotFound):
        services.loan_dispute_open(loan_id=the_loan.pk, actor=bob, category="other", text=TEXT)
    dispute = services.loan_dispute_open(
        loan_id=the_loan.pk, actor=alice, category="other", text=TEXT
    )
    with pytest.raises(NotFound):
        services.loan_dispute_statement(dispute_id=dispute.pk, actor=bob, text="I saw it all!!")
    # a party can't judge
    with pytest.raises(PermissionDenied):
        services.loan_dispute_decide(dispute_id=dispute.pk, actor=big, outcome="rejected",
                                     reason="I say it is fine.")  # fmt: skip
    with pytest.raises(PermissionDenied):
        services.loan_dispute_assign(dispute_id=dispute.pk, actor=big)
    # another moderator's dispute must be taken first
    other = _moderator("mod2")
    services.loan_dispute_assign(dispute_id=dispute.pk, actor=other)
    with pytest.raises(Conflict):
        services.loan_dispute_decide(dispute_id=dispute.pk, actor=moderator, outcome="rejected",
                                     reason="Nothing to see here.")  # fmt: skip
    # one open dispute per loan
    with pytest.raises(Conflict):
        services.loan_dispute_open(loan_id=the_loan.pk, actor=big, category="other", text=TEXT)


def test_a_moderator_who_is_a_lender_of_the_loan_cannot_judge_it(alice, refdata):
    fund(alice, "ETH", "1")
    request = request_example(alice, asset="USDT", amount="1500", collateral_asset="ETH",
                              collateral_amount="1")  # fmt: skip
    lender_mod = _moderator("lendermod")
    fund(lender_mod, "USDT", "1500")
    services.loan_request_fund(request_id=request.pk, lender=lender_mod, amount="1500")
    dispute = services.loan_dispute_open(loan_id=request.pk, actor=alice, category="other",
                                         text=TEXT)  # fmt: skip
    with pytest.raises(PermissionDenied, match="party"):
        services.loan_dispute_assign(dispute_id=dispute.pk, actor=lender_mod)
    with pytest.raises(PermissionDenied, match="party"):
        services.loan_dispute_decide(dispute_id=dispute.pk, actor=lender_mod, outcome="rejected",
                                     reason="All good with my loan.")  # fmt: skip


@pytest.mark.parametrize(
    ("category", "text", "field"),
    [("nonsense", TEXT, "category"), ("other", "too short", "text"), ("other", "x" * 4001, "text")],
)
def test_bad_openings_name_the_field(loan, alice, category, text, field):
    the_loan, _, _ = loan
    with pytest.raises(ValidationFailed) as err:
        services.loan_dispute_open(loan_id=the_loan.pk, actor=alice, category=category, text=text)
    assert field in err.value.fields
    assert not LoanDispute.objects.exists()


def test_a_loan_closed_long_ago_can_no_longer_be_disputed(loan, alice, settings):
    the_loan, _, _ = loan
    fund(alice, "USDT", "100")
    services.loan_repay_early(loan_id=the_loan.pk, actor=alice)
    # within the window: fine
    services.loan_dispute_open(loan_id=the_loan.pk, actor=alice, category="other", text=TEXT)
    LoanDispute.objects.all().delete()
    Loan.objects.filter(pk=the_loan.pk).update(
        closed_at=timezone.now() - timedelta(days=settings.LENDING_DISPUTE_DAYS + 1)
    )
    with pytest.raises(Conflict, match="no longer"):
        services.loan_dispute_open(loan_id=the_loan.pk, actor=alice, category="other", text=TEXT)


@pytest.mark.django_db(transaction=True)
def test_two_parties_opening_at_once_make_one_dispute(loan, alice):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    the_loan, big, small = loan
    barrier = threading.Barrier(3)
    outcomes: list[str] = []

    def open_as(user) -> None:
        try:
            barrier.wait()
            services.loan_dispute_open(loan_id=the_loan.pk, actor=user, category="other", text=TEXT)
            outcomes.append("opened")
        except Conflict:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=open_as, args=(u,)) for u in (alice, big, small)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "conflict", "opened"]
    assert LoanDispute.objects.filter(loan_id=the_loan.pk, status="open").count() == 1


def _api(user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_api_opens_lists_and_answers_a_dispute(loan, alice, bob):
    the_loan, big, _ = loan
    url = f"/api/v1/loans/{the_loan.pk}/disputes/"
    bad = _api(alice).post(url, {"category": "liquidation", "text": "short"}, format="json")
    assert bad.status_code == 400
    assert "text" in bad.json()["error"]["fields"]
    opened = _api(alice).post(url, {"category": "liquidation", "text": TEXT}, format="json")
    assert opened.status_code == 201, opened.json()
    body = opened.json()
    assert (body["status"], body["opener_role"], body["compensation"]) == ("open", "borrower", None)
    again = _api(big).post(url, {"category": "other", "text": TEXT}, format="json")
    assert again.status_code == 409
    said = _api(big).post(f"/api/v1/loan-disputes/{body['id']}/statements/",
                          {"text": "The price matched the market."}, format="json")  # fmt: skip
    assert said.status_code == 201
    assert [s["role"] for s in said.json()["statements"]] == ["lender"]
    assert [d["id"] for d in _api(big).get(url).json()["results"]] == [body["id"]]
    # a stranger sees nothing
    assert _api(bob).get(url).status_code == 404
    assert _api(bob).get(f"/api/v1/loan-disputes/{body['id']}/").status_code == 404


def test_a_moderator_takes_and_decides_in_the_admin(loan, alice, client, moderator):
    the_loan, big, _ = loan
    dispute = services.loan_dispute_open(
        loan_id=the_loan.pk, actor=alice, category="collateral", text=TEXT
    )
    client.force_login(moderator)
    page = client.get(f"/admin/lending/loandispute/{dispute.pk}/change/")
    assert page.status_code == 200
    assert b"Judge this dispute" in page.content
    assert client.get("/admin/lending/loandispute/").status_code == 200
    client.post(f"/admin/lending/loandispute/{dispute.pk}/take/")
    dispute.refresh_from_db()
    assert dispute.assigned_to == moderator
    # a bad amount: the error is shown, nothing changes
    client.post(f"/admin/lending/loandispute/{dispute.pk}/decide/", {
        "outcome": "compensate", "reason": "Collateral top-up was lost.", "payer": alice.pk,
        "payee": big.pk, "compensation_amount": "-1", "compensation_asset": "USDT"})  # fmt: skip
    dispute.refresh_from_db()
    assert dispute.status == "open"
    client.post(f"/admin/lending/loandispute/{dispute.pk}/decide/", {
        "outcome": "compensate", "reason": "Collateral top-up was lost.", "payer": alice.pk,
        "payee": big.pk, "compensation_amount": "100", "compensation_asset": "USDT"})  # fmt: skip
    dispute.refresh_from_db()
    assert (dispute.status, dispute.compensation_amount) == ("decided", Decimal(100))
