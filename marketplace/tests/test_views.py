"""The browser UI of the marketplace: order book, offers, the trade room and the wallet, driven
through Django's test client the way a browser posts its forms."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from common.templatetags.money import amount, fiat, percent
from escrow import services as escrow
from escrow.models import EscrowEvent, Settlement, Trade
from ledger.models import Withdrawal
from ledger.selectors import balance_available, wallet_list_for_user
from marketplace.models import Offer
from marketplace.tests.factories import fund, make_offer, make_trade

pytestmark = pytest.mark.django_db

S = Trade.State


def _text(html: str) -> str:
    """The page's text without its tags (amounts sit in spans that carry the exact amount)."""
    return re.sub(r"<[^>]+>", "", html)


def _action(trade: Trade, slug: str) -> str:
    return reverse("trade_action", args=[trade.pk, slug])


def _post_action(client, trade: Trade, slug: str, *, expected: str, **extra: str):
    data = {"expected_state": expected, "confirm": "1", **extra}
    return client.post(_action(trade, slug), data)


# --- money filters ----------------------------------------------------------------------------


class TestMoneyFilters:
    def test_amount_is_exact_at_the_asset_precision(self):
        assert amount(Decimal("1"), 8) == "1.00000000"
        assert amount(Decimal("0.00000001"), 8) == "0.00000001"  # not "1E-8"
        assert amount(Decimal(0), 18) == "0." + "0" * 8  # 18-place zeros trimmed to 8, exact
        assert amount(Decimal("2.5"), 18) == "2.50000000"
        assert amount(Decimal("0.000000000000000001"), 18) == "0.000000000000000001"
        assert amount(Decimal("123456789.123456789123456789"), 18) == "123456789.123456789123456789"

    def test_amount_drops_nothing_beyond_the_precision(self):
        assert amount(Decimal("0.123"), 2) == "0.123"
        assert amount(None, 8) == ""

    def test_fiat_groups_thousands_exactly(self):
        assert fiat(Decimal("85000")) == "85,000.00"
        assert fiat(Decimal("0.9234")) == "0.9234"

    def test_percent(self):
        assert percent(Decimal("100.0")) == "100%"
        assert percent(Decimal("98.5")) == "98.5%"
        assert percent(None) == "—"


# --- order book -------------------------------------------------------------------------------


class TestOrderBook:
    def test_buy_tab_lists_sell_offers_cheapest_first(self, client, alice, bob, carol):
        # given sell offers at three prices, a buy offer and a USD offer
        fund(alice, "BTC", "2")
        fund(carol, "BTC", "2")
        make_offer(alice, price="81000")
        make_offer(carol, price="80000")
        make_offer(alice, price="82000", terms="")
        make_offer(bob, side="buy", price="79000")
        make_offer(carol, fiat="USD", price="90000")
        # when a visitor opens the Buy BTC / EUR book
        response = client.get(reverse("home"), {"side": "buy", "asset": "BTC", "fiat": "EUR"})
        # then they see the three EUR sell offers, best (lowest) price first, with Buy buttons
        html = response.content.decode()
        assert response.status_code == 200
        positions = [html.index(p) for p in ("80,000.00", "81,000.00", "82,000.00")]
        assert positions == sorted(positions)
        assert "79,000.00" not in html
        assert "90,000.00" not in html
        assert "Buy BTC" in html
        cheapest = Offer.objects.get(price=Decimal("80000"))
        assert reverse("offer_detail", args=[cheapest.pk]) in html

    def test_sell_tab_lists_buy_offers_highest_first(self, client, alice, bob, carol):
        make_offer(bob, side="buy", price="79000")
        make_offer(carol, side="buy", price="83000")
        fund(alice)
        make_offer(alice, price="70000")
        html = client.get(reverse("home"), {"side": "sell", "asset": "BTC"}).content.decode()
        assert html.index("83,000.00") < html.index("79,000.00")
        assert "70,000.00" not in html
        assert "Sell BTC" in html

    def test_filters_by_amount_and_payment_method(self, client, alice, carol):
        fund(alice, "BTC", "2")
        fund(carol, "BTC", "2")
        make_offer(alice, price="81000", max_fiat="1000", payment_methods=["sepa"])
        make_offer(carol, price="82000", max_fiat="40000", payment_methods=["revolut", "sepa"])
        # 5,000 EUR fits only carol's limits
        html = client.get(reverse("home"), {"fiat": "EUR", "amount": "5000"}).content.decode()
        assert "82,000.00" in html
        assert "81,000.00" not in html
        # only carol's offer takes Revolut
        html = client.get(reverse("home"), {"payment_method": "revolut"}).content.decode()
        assert "82,000.00" in html
        assert "81,000.00" not in html

    def test_rows_show_maker_stats_limits_and_available(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
        escrow.escrow_release(trade_id=trade.pk, actor=alice)
        escrow.settlement_execute(settlement_id=Settlement.objects.get(trade=trade).pk)
        html = client.get(reverse("home")).content.decode()
        assert "alice" in html
        assert "1 trade · 100% completion" in html
        assert "0.49000000" in html  # available at BTC's 8 places
        assert "10.00 – 40,000.00 EUR" in html
        assert "SEPA transfer" in html

    def test_a_bad_amount_filter_is_a_message_not_an_error(self, client, alice):
        response = client.get(reverse("home"), {"amount": "lots"})
        assert response.status_code == 200
        assert "Enter a number." in response.content.decode()

    def test_quick_trade_takes_the_best_offer(self, client, alice, bob, carol):
        fund(alice, "BTC", "2")
        fund(carol, "BTC", "2")
        make_offer(alice, price="81000")
        best = make_offer(carol, price="80000")
        client.force_login(bob)
        response = client.post(
            reverse("quick_trade"),
            {"side": "buy", "asset": "BTC", "fiat": "EUR", "fiat_amount": "800"},
        )
        trade = Trade.objects.get(buyer=bob)
        assert response.status_code == 302
        assert response.url == reverse("trade_detail", args=[trade.pk])
        assert trade.offer_id == best.pk
        assert trade.amount == Decimal("0.01")

    def test_quick_trade_without_a_match_says_so_and_keeps_the_input(self, client, bob):
        client.force_login(bob)
        response = client.post(
            reverse("quick_trade"),
            {"side": "buy", "asset": "BTC", "fiat": "EUR", "fiat_amount": "777"},
        )
        html = response.content.decode()
        assert response.status_code == 404
        assert "No BTC offer fits 777.00 EUR right now." in html
        assert 'value="777"' in html
        assert not Trade.objects.exists()


# --- offers -----------------------------------------------------------------------------------


class TestOfferPage:
    def test_shows_terms_and_take_form(self, client, alice, bob):
        fund(alice)
        offer = make_offer(alice, terms="SEPA only, no third parties.")
        client.force_login(bob)
        html = client.get(reverse("offer_detail", args=[offer.pk])).content.decode()
        assert "SEPA only, no third parties." in html
        assert "80,000.00" in html
        assert 'name="fiat_amount"' in html
        assert 'name="csrfmiddlewaretoken"' in html

    def test_take_creates_a_trade_and_redirects_to_it(self, client, alice, bob):
        # given alice sells BTC at 80,000 EUR
        fund(alice)
        offer = make_offer(alice, payment_methods=["sepa", "revolut"])
        client.force_login(bob)
        # when bob takes it for 800 EUR by Revolut
        response = client.post(
            reverse("offer_detail", args=[offer.pk]),
            {"fiat_amount": "800", "amount": "", "payment_method": "revolut"},
        )
        # then a funded trade for 0.01 BTC exists and bob lands in its trade room
        trade = Trade.objects.get()
        assert response.status_code == 302
        assert response.url == reverse("trade_detail", args=[trade.pk])
        assert (trade.buyer, trade.seller, trade.state) == (bob, alice, S.FUNDED)
        assert trade.amount == Decimal("0.01")
        assert trade.payment_method.code == "revolut"

    def test_take_by_asset_amount(self, client, alice, bob):
        fund(alice)
        offer = make_offer(alice)
        client.force_login(bob)
        client.post(
            reverse("offer_detail", args=[offer.pk]), {"amount": "0.02", "payment_method": "sepa"}
        )
        assert Trade.objects.get().fiat_amount == Decimal("1600.00")

    def test_bad_amount_rerenders_with_the_field_error_and_the_typed_value(
        self, client, alice, bob
    ):
        fund(alice)
        offer = make_offer(alice)
        client.force_login(bob)
        response = client.post(
            reverse("offer_detail", args=[offer.pk]),
            {"amount": "0.123456789", "payment_method": "sepa"},
        )
        html = response.content.decode()
        assert response.status_code == 400
        assert "At most 8 decimal places." in html
        assert 'value="0.123456789"' in html
        assert not Trade.objects.exists()

    def test_amount_outside_the_limits_names_them(self, client, alice, bob):
        fund(alice)
        offer = make_offer(alice)
        client.force_login(bob)
        response = client.post(
            reverse("offer_detail", args=[offer.pk]), {"fiat_amount": "5", "payment_method": "sepa"}
        )
        html = response.content.decode()
        assert response.status_code == 400
        assert "This offer trades 10.00 – 40,000.00 EUR per trade" in html
        assert 'value="5"' in html

    def test_more_than_the_offer_has_left_is_a_conflict(self, client, alice, bob):
        fund(alice)
        offer = make_offer(alice, amount="0.1", max_fiat="40000")
        client.force_login(bob)
        response = client.post(
            reverse("offer_detail", args=[offer.pk]), {"amount": "0.2", "payment_method": "sepa"}
        )
        assert response.status_code == 409
        assert "Only 0.10000000 BTC is left" in response.content.decode()

    def test_both_or_neither_amount_is_a_form_error(self, client, alice, bob):
        fund(alice)
        offer = make_offer(alice)
        client.force_login(bob)
        url = reverse("offer_detail", args=[offer.pk])
        response = client.post(url, {"payment_method": "sepa"})
        assert response.status_code == 400
        assert "Enter how much you want to trade" in response.content.decode()
        response = client.post(
            url, {"amount": "0.01", "fiat_amount": "800", "payment_method": "sepa"}
        )
        assert "not both" in response.content.decode()

    def test_taking_needs_a_login(self, client, alice):
        fund(alice)
        offer = make_offer(alice)
        url = reverse("offer_detail", args=[offer.pk])
        assert "Log in to buy BTC" in client.get(url).content.decode()
        response = client.post(url, {"fiat_amount": "800", "payment_method": "sepa"})
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))
        assert not Trade.objects.exists()

    def test_own_offer_has_no_take_form(self, client, alice):
        fund(alice)
        offer = make_offer(alice)
        client.force_login(alice)
        html = client.get(reverse("offer_detail", args=[offer.pk])).content.decode()
        assert "This is your offer." in html
        assert 'name="fiat_amount"' not in html

    def test_unknown_offer_is_404(self, client):
        assert client.get(reverse("offer_detail", args=[999])).status_code == 404


class TestMyOffers:
    def _form(self, **overrides: object) -> dict[str, object]:
        data: dict[str, object] = {
            "side": "sell",
            "asset": "BTC",
            "fiat": "EUR",
            "price_type": "fixed",
            "price": "80500",
            "margin_percent": "",
            "amount": "0.4",
            "min_fiat": "50",
            "max_fiat": "5000",
            "payment_methods": ["sepa", "wise"],
            "payment_window_minutes": "30",
            "terms": "Be quick.",
        }
        data.update(overrides)
        return data

    def test_create_an_offer(self, client, alice):
        fund(alice)
        client.force_login(alice)
        assert client.get(reverse("offer_new")).status_code == 200
        response = client.post(reverse("offer_new"), self._form())
        assert response.status_code == 302
        offer = Offer.objects.get()
        assert (offer.maker, offer.side, offer.price, offer.amount) == (
            alice,
            "sell",
            Decimal("80500"),
            Decimal("0.4"),
        )
        assert sorted(m.code for m in offer.payment_methods.all()) == ["sepa", "wise"]

    def test_create_a_floating_offer(self, client, alice):
        fund(alice)
        client.force_login(alice)
        client.post(
            reverse("offer_new"), self._form(price_type="floating", price="", margin_percent="-1.5")
        )
        offer = Offer.objects.get()
        assert (offer.price_type, offer.margin_percent) == ("floating", Decimal("-1.5"))

    def test_selling_more_than_you_hold_names_the_field(self, client, alice):
        fund(alice, "BTC", "0.1")
        client.force_login(alice)
        response = client.post(reverse("offer_new"), self._form(amount="0.5"))
        html = response.content.decode()
        assert response.status_code == 400
        assert "You hold 0.10000000 BTC; a sell offer can&#x27;t offer more." in html
        assert 'value="0.5"' in html
        assert not Offer.objects.exists()

    def test_edit_pause_resume_delete(self, client, alice, bob):
        fund(alice)
        offer = make_offer(alice)
        client.force_login(alice)
        # edit
        response = client.get(reverse("offer_edit", args=[offer.pk]))
        assert 'value="80000.00"' in response.content.decode()
        response = client.post(
            reverse("offer_edit", args=[offer.pk]),
            self._form(price="79999", amount="0.3", payment_methods=["revolut"]),
        )
        assert response.status_code == 302
        offer.refresh_from_db()
        assert (offer.price, offer.amount, offer.side) == (
            Decimal("79999"),
            Decimal("0.3"),
            "sell",
        )
        # pause hides it from the book, resume shows it again
        client.post(reverse("offer_pause", args=[offer.pk]))
        offer.refresh_from_db()
        assert not offer.is_active
        assert "79,999.00" not in client.get(reverse("home")).content.decode()
        client.post(reverse("offer_resume", args=[offer.pk]))
        offer.refresh_from_db()
        assert offer.is_active
        # delete
        client.post(reverse("offer_delete", args=[offer.pk]))
        offer.refresh_from_db()
        assert offer.is_deleted

    def test_state_changes_are_post_only(self, client, alice):
        fund(alice)
        offer = make_offer(alice)
        client.force_login(alice)
        assert client.get(reverse("offer_pause", args=[offer.pk])).status_code == 405
        assert client.get(reverse("offer_delete", args=[offer.pk])).status_code == 405

    def test_someone_elses_offer_is_404(self, client, alice, bob):
        fund(alice)
        offer = make_offer(alice)
        client.force_login(bob)
        assert client.get(reverse("offer_edit", args=[offer.pk])).status_code == 404
        client.post(reverse("offer_pause", args=[offer.pk]))
        offer.refresh_from_db()
        assert offer.is_active

    def test_my_offers_lists_them_with_trade_counts(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        client.force_login(alice)
        html = client.get(reverse("my_offers")).content.decode()
        assert f"#{trade.offer_id}" in html
        assert "(1 open)" in html
        assert reverse("offer_edit", args=[trade.offer_id]) in html


# --- trade room -------------------------------------------------------------------------------


class TestTradeRoom:
    def test_buyer_sees_pay_cancel_and_dispute_not_release(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        client.force_login(bob)
        html = client.get(reverse("trade_detail", args=[trade.pk])).content.decode()
        assert "Pay 800.00 EUR to alice by SEPA transfer" in html
        assert _action(trade, "mark-paid") in html
        assert _action(trade, "cancel") in html
        assert _action(trade, "dispute") in html
        assert _action(trade, "release") not in html
        assert 'name="expected_state" value="funded"' in html
        assert "data-deadline-ts=" in html
        assert 'hx-trigger="every 3s, live-refresh"' in html

    def test_seller_sees_no_button_until_paid_then_release(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        client.force_login(alice)
        html = client.get(reverse("trade_detail", args=[trade.pk])).content.decode()
        for slug in ("mark-paid", "cancel", "dispute", "release"):
            assert _action(trade, slug) not in html
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
        html = client.get(reverse("trade_detail", args=[trade.pk])).content.decode()
        assert _action(trade, "release") in html
        assert "You are releasing 0.01000000 BTC to bob." in _text(html)
        assert _action(trade, "mark-paid") not in html
        # a dispute opens only after the delay: said, not offered as a button
        assert _action(trade, "dispute") not in html
        assert "can open a dispute from" in html

    def test_mark_paid_then_release_through_the_forms(self, client, alice, bob):
        # given a funded trade: alice sells 0.01 BTC to bob
        trade = make_trade(alice, bob, amount="0.01")
        # when bob marks it paid
        client.force_login(bob)
        response = _post_action(client, trade, "mark-paid", expected="funded")
        assert response.status_code == 302
        assert response.url == reverse("trade_detail", args=[trade.pk])
        trade.refresh_from_db()
        assert trade.state == S.PAID
        # and alice releases
        client.force_login(alice)
        response = _post_action(client, trade, "release", expected="paid", password="demo-pass-123")
        assert response.status_code == 302
        # then the trade is releasing, with its settlement queued (on_commit doesn't run here)
        trade.refresh_from_db()
        assert trade.state == S.RELEASING
        assert Settlement.objects.filter(trade=trade, kind="release").exists()
        html = client.get(reverse("trade_detail", args=[trade.pk])).content.decode()
        assert "Settling…" in html
        assert "Released. The crypto is being settled to the buyer." in html

    def test_cancel_and_dispute(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        client.force_login(bob)
        _post_action(client, trade, "cancel", expected="funded")
        trade.refresh_from_db()
        assert trade.state == S.CANCELLED
        other = make_trade(alice, bob, amount="0.01", fund_seller=False)
        _post_action(
            client,
            other,
            "dispute",
            expected="funded",
            reason="Paid, the button broke",
            category="could_not_mark_paid",
        )
        other.refresh_from_db()
        assert other.state == S.DISPUTED
        assert other.dispute.text == "Paid, the button broke"
        assert other.events.last().reason == "Dispute: I paid but could not mark the trade paid"

    def test_a_stale_expected_state_changes_nothing(self, client, alice, bob):
        # given the page showed "funded", but bob marked it paid in another tab
        trade = make_trade(alice, bob, amount="0.01")
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
        client.force_login(bob)
        # when the stale page's cancel is submitted
        response = _post_action(client, trade, "cancel", expected="funded")
        # then nothing happens and the page says why
        assert response.status_code == 409
        assert "This trade changed: it is now paid." in response.content.decode()
        trade.refresh_from_db()
        assert trade.state == S.PAID

    def test_a_double_submit_does_one_thing(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        client.force_login(bob)
        first = _post_action(client, trade, "mark-paid", expected="funded")
        second = _post_action(client, trade, "mark-paid", expected="funded")
        assert (first.status_code, second.status_code) == (302, 409)
        assert EscrowEvent.objects.filter(trade=trade, new_state=S.PAID).count() == 1

    def test_without_confirm_it_asks_first(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
        client.force_login(alice)
        # no JS: the confirmation page, by GET or by a POST without confirm=1
        for response in (
            client.get(_action(trade, "release")),
            client.post(_action(trade, "release"), {"expected_state": "paid"}),
        ):
            html = response.content.decode()
            assert response.status_code == 200
            assert "You are releasing 0.01000000 BTC to bob." in _text(html)
            assert "Only do this once the money" in html
            assert 'name="confirm" value="1"' in html
        trade.refresh_from_db()
        assert trade.state == S.PAID

    def test_a_refused_move_shows_the_service_message(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        client.force_login(alice)  # the seller can't mark paid
        response = _post_action(client, trade, "mark-paid", expected="funded")
        assert response.status_code == 403
        assert "Only the buyer can mark it paid" in response.content.decode()
        trade.refresh_from_db()
        assert trade.state == S.FUNDED

    def test_a_stranger_gets_404(self, client, alice, bob, carol):
        trade = make_trade(alice, bob, amount="0.01")
        client.force_login(carol)
        assert client.get(reverse("trade_detail", args=[trade.pk])).status_code == 404
        assert client.get(reverse("trade_status", args=[trade.pk])).status_code == 404
        response = _post_action(client, trade, "cancel", expected="funded")
        assert response.status_code == 404
        trade.refresh_from_db()
        assert trade.state == S.FUNDED

    def test_anonymous_is_sent_to_login(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        response = client.get(reverse("trade_detail", args=[trade.pk]))
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))

    def test_unknown_action_is_404(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        client.force_login(bob)
        assert _post_action(client, trade, "explode", expected="funded").status_code == 404

    def test_status_partial_for_the_poll(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        client.force_login(bob)
        url = reverse("trade_status", args=[trade.pk])
        response = client.get(url, headers={"HX-Request": "true"})
        html = response.content.decode()
        assert response.status_code == 200
        assert "<html" not in html
        assert 'id="trade-live"' in html
        assert _action(trade, "mark-paid") in html
        # unchanged since the version the page shows: nothing to swap
        version = html.split("?v=", 1)[1].split('"', 1)[0]
        assert client.get(url, {"v": version.replace("%3A", ":")}).status_code == 204
        # once the seller's side moves, the partial has the new state
        escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
        response = client.get(url, {"v": version.replace("%3A", ":")})
        assert response.status_code == 200
        assert "Paid · awaiting release" in response.content.decode()

    def test_final_trade_stops_polling(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        escrow.trade_cancel(trade_id=trade.pk, actor=bob)
        client.force_login(bob)
        html = client.get(reverse("trade_detail", args=[trade.pk])).content.decode()
        assert "hx-trigger" not in html
        assert "Cancelled" in html

    def test_my_trades_lists_both_sides(self, client, alice, bob, carol):
        sold = make_trade(alice, bob, amount="0.01")
        bought = make_trade(carol, alice, amount="0.02")
        escrow.trade_cancel(trade_id=bought.pk, actor=alice)
        client.force_login(alice)
        html = client.get(reverse("my_trades")).content.decode()
        assert reverse("trade_detail", args=[sold.pk]) in html
        assert reverse("trade_detail", args=[bought.pk]) in html
        active = client.get(reverse("my_trades"), {"show": "active"}).content.decode()
        assert reverse("trade_detail", args=[sold.pk]) in active
        assert reverse("trade_detail", args=[bought.pk]) not in active


# --- wallet -----------------------------------------------------------------------------------


class TestWallet:
    def test_shows_balances_at_asset_precision_and_history(self, client, alice, bob):
        trade = make_trade(alice, bob, amount="0.01")
        client.force_login(alice)
        response = client.get(reverse("wallet"))
        html = response.content.decode()
        assert response.status_code == 200
        # 1 BTC deposited, 0.01 + 0.00001 fee held in escrow
        assert "0.98999000" in html
        assert "0.01001000" in html
        assert "0E-18" not in html  # ETH: never exponent notation
        assert "0.00000000" in html
        assert "E-" not in html.split('id="balances"')[0]
        assert "memo U" in html  # deposit instructions of the manual adapter
        assert "Deposit" in html
        assert "awaiting seal" in html
        assert reverse("trade_detail", args=[trade.pk]) in html

    def test_a_withdrawal_holds_the_amount(self, client, alice):
        fund(alice, "BTC", "1")
        client.force_login(alice)
        response = client.post(
            reverse("wallet"),
            {
                "asset": "BTC",
                "amount": "0.25",
                "address": "bc1qexampleaddress000",
                "password": "demo-pass-123",
            },
        )
        assert response.status_code == 302
        assert balance_available(user=alice, asset_code="BTC") == Decimal("0.75")
        withdrawal = Withdrawal.objects.get()
        assert (withdrawal.amount, withdrawal.address) == (Decimal("0.25"), "bc1qexampleaddress000")
        btc = next(w for w in wallet_list_for_user(user=alice) if w.asset.code == "BTC")
        assert btc.pending_withdrawal == Decimal("0.25")
        html = client.get(reverse("wallet")).content.decode()
        assert "0.75000000" in html
        assert "0.25000000" in html
        assert "Requested" in html

    def test_withdrawal_errors_are_shown_next_to_the_fields(self, client, alice):
        fund(alice, "BTC", "0.1")
        client.force_login(alice)
        response = client.post(
            reverse("wallet"),
            {"asset": "BTC", "amount": "0.1", "address": "no spaces!", "password": "demo-pass-123"},
        )
        assert response.status_code == 400
        assert "Not a valid address" in response.content.decode()
        response = client.post(
            reverse("wallet"),
            {
                "asset": "BTC",
                "amount": "5",
                "address": "bc1qexampleaddress000",
                "password": "demo-pass-123",
            },
        )
        html = response.content.decode()
        assert response.status_code == 409
        assert "Insufficient BTC balance" in html
        assert 'value="5"' in html
        assert not Withdrawal.objects.exists()
        assert balance_available(user=alice, asset_code="BTC") == Decimal("0.1")

    def test_needs_login(self, client):
        response = client.get(reverse("wallet"))
        assert response.status_code == 302
        assert response.url.startswith(reverse("login"))


def test_every_page_has_the_nav_and_csrf_protected_forms(client, alice, bob):
    trade = make_trade(alice, bob, amount="0.01")
    client.force_login(bob)
    for name, args in [
        ("home", []),
        ("my_offers", []),
        ("offer_new", []),
        ("my_trades", []),
        ("wallet", []),
        ("trade_detail", [trade.pk]),
        ("offer_detail", [trade.offer_id]),
        ("profile", ["alice"]),
    ]:
        response = client.get(reverse(name, args=args))
        html = response.content.decode()
        assert response.status_code == 200, name
        assert reverse("my_trades") in html
        assert reverse("wallet") in html
        assert html.count('method="post"') == html.count("csrfmiddlewaretoken"), name


PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.mark.django_db
def test_chat_in_the_trade_room(client, alice, bob, carol):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from marketplace.tests.factories import make_trade

    trade = make_trade(alice, bob)
    client.force_login(bob)
    sent = client.post(f"/trades/{trade.pk}/chat/send/", {"text": "Sent, ref 42"})
    assert sent.status_code == 302
    proof = SimpleUploadedFile("proof.png", PNG_BYTES, content_type="image/png")
    client.post(f"/trades/{trade.pk}/chat/send/", {"text": "", "attachment": proof})
    bad = client.post(
        f"/trades/{trade.pk}/chat/send/",
        {"attachment": SimpleUploadedFile("x.png", b"MZ not an image", content_type="image/png")},
        HTTP_HX_REQUEST="true",
    )
    assert bad.status_code == 400
    assert "only" in bad.content.decode().lower()
    client.force_login(alice)
    room = client.get(f"/trades/{trade.pk}/").content.decode()
    assert "Sent, ref 42" in room
    assert "proof.png" in room
    message = trade.messages.exclude(attachment="").get()
    download = client.get(f"/trades/{trade.pk}/chat/{message.pk}/attachment/")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == PNG_BYTES
    client.force_login(carol)
    assert client.get(f"/trades/{trade.pk}/chat/{message.pk}/attachment/").status_code == 404
    assert client.get(f"/trades/{trade.pk}/chat/").status_code == 404


@pytest.mark.django_db
def test_order_book_shows_when_the_maker_was_last_seen(client, alice, bob):
    from marketplace.tests.factories import fund, make_offer

    fund(alice, "BTC", "1")
    make_offer(alice)
    client.force_login(bob)
    assert "Not seen recently" in client.get("/?side=buy").content.decode()
    client.force_login(alice)
    client.get("/")  # alice visits: her last_seen is written
    client.force_login(bob)
    assert "Online" in client.get("/?side=buy").content.decode()
