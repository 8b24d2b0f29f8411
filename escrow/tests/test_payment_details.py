"""The seller's payment account in a trade: copied when the trade opens (an edit or deletion of
the saved account never reaches it), chosen by the sell offer's maker or by the seller taking a
buy offer, and shown only to the buyer (and the seller) while the trade is open, and to the
moderator assigned to its dispute, over the API and in the trade room."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from common.errors import ValidationFailed
from disputes import services as disputes
from disputes.tests.test_services import moderator
from escrow import services as escrow
from escrow.models import Trade, TradePaymentAccount
from escrow.tests.conftest import IBAN
from marketplace.services import payment_accounts as pay
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db


def api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def details(response) -> dict | None:
    assert response.status_code == 200, response.content
    return response.json()["payment_account"]


class TestCopy:
    def test_the_offers_account_for_the_method_is_copied_at_opening(self, trade, alice):
        copy = TradePaymentAccount.objects.get(trade=trade)
        assert (copy.owner, copy.method_code, copy.holder_verified) == (alice, "revolut", True)
        assert [(f["key"], f["value"]) for f in copy.fields] == [
            ("holder_name", "Alice Martin"),
            ("revtag", "@alicem"),
        ]

    def test_editing_or_deleting_the_account_never_changes_the_open_trade(
        self, trade, alice, accounts, bob
    ):
        revolut, _ = accounts
        before = details(api(bob).get(f"/api/v1/trades/{trade.pk}/"))
        pay.payment_account_update(
            account_id=revolut.pk, actor=alice, details={"revtag": "@newtag"}
        )
        assert details(api(bob).get(f"/api/v1/trades/{trade.pk}/")) == before
        pay.payment_account_delete(account_id=revolut.pk, actor=alice)
        assert details(api(bob).get(f"/api/v1/trades/{trade.pk}/")) == before
        assert before["details"][1]["value"] == "@alicem"

    def test_a_method_without_a_named_account_copies_nothing(self, alice, bob):
        fund(alice)
        offer = make_offer(alice, payment_methods=["wise"])
        opened = escrow.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="100")
        assert not TradePaymentAccount.objects.filter(trade=opened).exists()
        assert details(api(bob).get(f"/api/v1/trades/{opened.pk}/")) is None

    def test_a_sell_offers_taker_names_no_account(self, alice, bob, accounts):
        fund(alice)
        mine = pay.payment_account_create(
            user=bob, method="sepa", details={"holder_name": "Bob Stone", "iban": IBAN}
        )
        offer = make_offer(alice, payment_accounts=[accounts[1].pk])
        with pytest.raises(ValidationFailed) as exc:
            escrow.trade_open(
                offer_id=offer.pk, taker=bob, fiat_amount="100", payment_account=mine.pk
            )
        assert list(exc.value.fields) == ["payment_account"]
        assert not Trade.objects.exists()


class TestBuyOfferTaker:
    @pytest.fixture
    def buy_offer(self, bob):
        return make_offer(bob, side="buy", payment_methods=["sepa", "revolut"])

    def test_the_seller_taking_names_their_account_for_the_method(
        self, alice, bob, accounts, buy_offer
    ):
        _, sepa = accounts
        fund(alice)
        opened = escrow.trade_open(
            offer_id=buy_offer.pk,
            taker=alice,
            fiat_amount="100",
            payment_method="sepa",
            payment_account=sepa.pk,
        )
        assert opened.seller == alice
        body = details(api(bob).get(f"/api/v1/trades/{opened.pk}/"))
        assert body["method"] == "sepa"
        assert body["details"][1] == {
            "key": "iban",
            "label": "IBAN",
            "value": IBAN,
            "display": "DE89 3704 0044 0532 0130 00",
        }

    def test_an_account_of_another_method_or_user_is_refused_and_nothing_opens(
        self, alice, bob, accounts, buy_offer, carol
    ):
        revolut, _ = accounts
        fund(alice)
        with pytest.raises(ValidationFailed) as exc:
            escrow.trade_open(
                offer_id=buy_offer.pk,
                taker=alice,
                fiat_amount="100",
                payment_method="sepa",
                payment_account=revolut.pk,
            )
        assert "paid by SEPA" in exc.value.fields["payment_account"][0]
        theirs = pay.payment_account_create(
            user=carol, method="sepa", details={"holder_name": "Carol", "iban": IBAN}
        )
        with pytest.raises(ValidationFailed) as exc:
            escrow.trade_open(
                offer_id=buy_offer.pk,
                taker=alice,
                fiat_amount="100",
                payment_method="sepa",
                payment_account=theirs.pk,
            )
        assert "not one of yours" in exc.value.fields["payment_account"][0]
        assert not Trade.objects.exists()

    def test_over_the_api(self, alice, bob, accounts, buy_offer):
        fund(alice)
        response = api(alice).post(
            f"/api/v1/offers/{buy_offer.pk}/take/",
            {"fiat_amount": "100", "payment_method": "revolut", "payment_account": accounts[0].pk},
            format="json",
        )
        assert response.status_code == 201, response.json()
        assert response.json()["payment_account"]["method"] == "revolut"


class TestWhoSees:
    def test_the_buyer_and_the_seller_while_open_nobody_else(self, trade, alice, bob, carol):
        url = f"/api/v1/trades/{trade.pk}/"
        assert details(api(bob).get(url))["details"][1]["value"] == "@alicem"
        assert details(api(alice).get(url))["method"] == "revolut"
        assert api(carol).get(url).status_code == 404  # a third trader: not even the trade
        listed = api(bob).get("/api/v1/trades/").json()["results"]
        assert listed[0]["payment_account"]["method"] == "revolut"

    def test_hidden_once_the_trade_is_over(self, trade, alice, bob):
        escrow.trade_cancel(trade_id=trade.pk, actor=bob)
        for user in (alice, bob):
            assert details(api(user).get(f"/api/v1/trades/{trade.pk}/")) is None
        client = Client()
        client.force_login(bob)
        assert b"@alicem" not in client.get(f"/trades/{trade.pk}/").content

    def test_the_assigned_moderator_sees_it_another_moderator_does_not(self, trade, bob):
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
        Trade.objects.filter(pk=trade.pk).update(paid_at=timezone.now() - timedelta(minutes=11))
        dispute = disputes.dispute_open(
            trade_id=trade.pk, actor=bob, category="paid_not_released", text="Paid, no release."
        )
        assigned, other = moderator("mod1"), moderator("mod2")
        url = f"/api/v1/trades/{trade.pk}/"
        assert api(assigned).get(url).status_code == 404  # not assigned yet
        disputes.dispute_assign(dispute_id=dispute.pk, actor=assigned)
        assert details(api(assigned).get(url))["details"][1]["value"] == "@alicem"
        assert api(other).get(url).status_code == 404
        assert details(api(bob).get(url))["method"] == "revolut"  # disputed is still open

    def test_the_room_shows_the_buyer_copy_buttons(self, trade, bob, carol):
        client = Client()
        client.force_login(bob)
        page = client.get(f"/trades/{trade.pk}/").content.decode()
        assert 'id="payment-details"' in page
        assert 'data-copy="@alicem"' in page
        assert "js/copy.js" in page
        assert "Daily" not in page  # the seller's private nickname
        live = client.get(f"/trades/{trade.pk}/status/").content.decode()
        assert 'data-copy="@alicem"' in live
