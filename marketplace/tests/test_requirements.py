"""Who may take an offer (tier, completed trades, account age, trusted list), blocked traders,
the order book's "why not open", and reputation: feedback, replies and computed stats."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts import services as accounts
from accounts.tests.factories import DEFAULT_LIMITS, complete, set_tier
from common.errors import InvalidTransition, NotFound, PermissionDenied, ValidationFailed
from escrow import services as escrow
from escrow import services as escrow_services
from escrow.models import EscrowEvent, Feedback, Trade
from escrow.selectors import trader_stats
from marketplace import services
from marketplace.models import Offer
from marketplace.selectors import offer_book, offer_get, offers_unmet_for_viewer
from marketplace.tests.factories import fund, make_offer, make_trade

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.KYC_LIMITS_EUR = DEFAULT_LIMITS


def api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def _offer(maker, **requirements) -> Offer:
    fund(maker, "BTC", "1")
    return make_offer(maker, amount="0.5", **requirements)


# --- requirements -----------------------------------------------------------------------------


class TestRequirements:
    def test_minimum_tier(self, alice, bob):
        offer = _offer(alice, min_taker_tier=1)
        with pytest.raises(PermissionDenied) as caught:
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        assert caught.value.code == "requirement_not_met"
        assert "tier 1 or higher; you are tier 0" in caught.value.message
        assert not Trade.objects.exists()
        set_tier(bob, 1)
        assert (
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01").state
            == "funded"
        )

    def test_minimum_completed_trades(self, alice, bob, carol):
        offer = _offer(alice, min_taker_trades=1)
        with pytest.raises(PermissionDenied, match="at least 1 completed trades; you have 0"):
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        # a cancelled trade doesn't count; a completed one does
        escrow.trade_cancel(trade_id=make_trade(carol, bob).pk, actor=bob)
        with pytest.raises(PermissionDenied):
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        complete(make_trade(carol, bob, fund_seller=False))
        assert escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")

    def test_minimum_account_age(self, alice, bob):
        offer = _offer(alice, min_account_age_days=30)
        type(bob).objects.filter(pk=bob.pk).update(date_joined=timezone.now() - timedelta(days=3))
        bob.refresh_from_db()
        with pytest.raises(PermissionDenied, match="at least 30 days old; yours is 3 days old"):
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        type(bob).objects.filter(pk=bob.pk).update(date_joined=timezone.now() - timedelta(days=31))
        bob.refresh_from_db()
        assert escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")

    def test_trusted_only(self, alice, bob, carol):
        offer = _offer(alice, trusted_only=True)
        with pytest.raises(PermissionDenied, match="Only traders on alice's trusted list"):
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        # carol trusting bob is no help: it is alice's list that counts
        accounts.trader_relation_add(actor=carol, username="bob", kind="trusted")
        with pytest.raises(PermissionDenied):
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        accounts.trader_relation_add(actor=alice, username="bob", kind="trusted")
        assert escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")

    def test_several_unmet_requirements_are_all_named(self, alice, bob):
        offer = _offer(alice, min_taker_tier=2, min_taker_trades=5, trusted_only=True)
        with pytest.raises(PermissionDenied) as caught:
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        message = caught.value.message
        assert "tier 2" in message
        assert "5 completed trades" in message
        assert "trusted list" in message

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("min_taker_tier", 3),
            ("min_taker_tier", "x"),
            ("min_taker_trades", -1),
            ("min_account_age_days", 100000),
            ("trusted_only", "maybe"),
        ],
    )
    def test_bad_requirements_name_the_field(self, alice, field, value):
        fund(alice, "BTC", "1")
        with pytest.raises(ValidationFailed) as caught:
            make_offer(alice, **{field: value})
        assert set(caught.value.fields) == {field}
        assert not Offer.objects.exists()

    def test_the_maker_edits_requirements(self, alice, bob):
        offer = _offer(alice)
        services.offer_update(offer_id=offer.pk, actor=alice, min_taker_tier=2)
        offer.refresh_from_db()
        assert offer.min_taker_tier == 2
        with pytest.raises(ValidationFailed):
            services.offer_update(offer_id=offer.pk, actor=alice, min_taker_trades=-5)
        offer.refresh_from_db()
        assert offer.min_taker_trades == 0

    def test_quick_match_skips_offers_not_open_to_the_taker(self, alice, bob, carol):
        cheap_but_closed = _offer(alice, min_taker_tier=1)
        services.offer_update(offer_id=cheap_but_closed.pk, actor=alice, price="70000")
        open_offer = _offer(carol)
        trade = escrow_services.trade_match(
            taker=bob, side="buy", asset="BTC", fiat="EUR", fiat_amount="500"
        )
        assert trade.offer_id == open_offer.pk


# --- blocked traders --------------------------------------------------------------------------


class TestBlocked:
    @pytest.mark.parametrize("who_blocks", ["maker", "taker"])
    def test_blocked_either_way_hides_the_offer(self, alice, bob, carol, who_blocks):
        offer = _offer(alice)
        other = _offer(carol)
        owner, target = ("alice", "bob") if who_blocks == "maker" else ("bob", "alice")
        accounts.trader_relation_add(
            actor=alice if owner == "alice" else bob, username=target, kind="blocked"
        )
        # the book: bob doesn't see alice's offer; alice doesn't see bob's either
        assert [o.pk for o in offer_book(side="sell", viewer=bob)] == [other.pk]
        assert {o.pk for o in offer_book(side="sell")} == {offer.pk, other.pk}
        fund(bob, "BTC", "1")
        bobs = make_offer(bob, amount="0.1")
        assert bobs.pk not in {o.pk for o in offer_book(side="sell", viewer=alice)}
        # the offer itself and taking it: not found
        with pytest.raises(NotFound):
            offer_get(offer_id=offer.pk, viewer=bob)
        with pytest.raises(NotFound, match=f"Offer #{offer.pk} not found"):
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        assert not Trade.objects.exists()
        # quick match goes past it to the next best
        services.offer_update(offer_id=offer.pk, actor=alice, price="1000")
        trade = escrow_services.trade_match(
            taker=bob, side="buy", asset="BTC", fiat="EUR", fiat_amount="100"
        )
        assert trade.offer_id == other.pk

    def test_blocked_pages_and_api_answer_404(self, client, alice, bob):
        offer = _offer(alice)
        accounts.trader_relation_add(actor=alice, username="bob", kind="blocked")
        client.force_login(bob)
        assert client.get(reverse("offer_detail", args=[offer.pk])).status_code == 404
        html = client.get(reverse("home"), {"side": "buy", "asset": "BTC"}).content.decode()
        assert f"Offer {offer.pk} by alice" not in html
        assert api(bob).get(f"/api/v1/offers/{offer.pk}/").status_code == 404
        taken = api(bob).post(f"/api/v1/offers/{offer.pk}/take/", {"amount": "0.01"}, "json")
        assert taken.status_code == 404
        assert api(bob).get("/api/v1/offers/?side=sell").json()["results"] == []
        # others still see it
        assert api(alice).get(f"/api/v1/offers/{offer.pk}/").status_code == 200

    def test_a_block_stops_the_next_take_whatever_was_cached(self, alice, bob):
        # given bob took alice's offer once (his blocked set is now cached, empty)
        offer = _offer(alice)
        escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        # when alice blocks bob, then lifts it
        relation = accounts.trader_relation_add(actor=alice, username="bob", kind="blocked")
        # then his next take finds no such offer, and nothing is opened
        with pytest.raises(NotFound):
            escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        assert Trade.objects.filter(offer=offer).count() == 1
        accounts.trader_relation_remove(actor=alice, relation_id=relation.pk)
        escrow_services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        assert Trade.objects.filter(offer=offer).count() == 2

    def test_unblocking_shows_it_again(self, alice, bob):
        offer = _offer(alice)
        relation = accounts.trader_relation_add(actor=bob, username="alice", kind="blocked")
        accounts.trader_relation_remove(actor=bob, relation_id=relation.pk)
        assert [o.pk for o in offer_book(viewer=bob)] == [offer.pk]

    def test_ongoing_trades_go_on_after_a_block(self, alice, bob):
        trade = make_trade(alice, bob)
        accounts.trader_relation_add(actor=alice, username="bob", kind="blocked")
        complete(trade)
        assert trade.state == Trade.State.COMPLETED


# --- the order book tells why an offer isn't open ---------------------------------------------


class TestWhyNotOpen:
    def test_reasons_per_offer_for_the_viewer(self, alice, bob, carol):
        closed = _offer(alice, min_taker_tier=1, min_account_age_days=10)
        open_offer = _offer(carol)
        type(bob).objects.filter(pk=bob.pk).update(date_joined=timezone.now())
        bob.refresh_from_db()
        reasons = offers_unmet_for_viewer(offers=[closed, open_offer], viewer=bob)
        assert reasons[open_offer.pk] == []
        assert len(reasons[closed.pk]) == 2
        assert reasons[closed.pk][0].startswith("The maker asks for tier 1 or higher")
        # the maker sees their own offer as open; anonymous visitors get nothing to show
        assert offers_unmet_for_viewer(offers=[closed], viewer=alice) == {closed.pk: []}
        assert offers_unmet_for_viewer(offers=[closed], viewer=None) == {}

    def test_the_book_shows_the_reason_in_place_of_the_button(self, client, alice, bob, carol):
        closed = _offer(alice, trusted_only=True)
        open_offer = _offer(carol)
        client.force_login(bob)
        html = client.get(reverse("home"), {"side": "buy", "asset": "BTC"}).content.decode()
        closed_row = html.split(f'aria-label="Offer {closed.pk} by alice"')[1].split("</article>")[
            0
        ]
        open_row = html.split(f'aria-label="Offer {open_offer.pk} by carol"')[1].split(
            "</article>"
        )[0]
        assert "Not open to you" in closed_row
        assert "alice&#x27;s trusted traders only" in closed_row
        assert 'class="btn btn-buy"' not in closed_row
        assert "Trusted traders only" in closed_row  # the requirement, for everyone
        assert "Not open to you" not in open_row
        assert "Buy BTC" in open_row

    def test_offer_page_and_api_say_why(self, client, alice, bob):
        offer = _offer(alice, min_taker_trades=3)
        client.force_login(bob)
        html = client.get(reverse("offer_detail", args=[offer.pk])).content.decode()
        assert "This offer isn't open to you." in html
        assert "at least 3 completed trades; you have 0" in html
        assert 'id="take-form"' not in html
        body = api(bob).get(f"/api/v1/offers/{offer.pk}/").json()
        assert body["min_taker_trades"] == 3
        assert body["unmet_requirements"] == [
            "The maker asks for at least 3 completed trades; you have 0."
        ]
        listed = api(bob).get("/api/v1/offers/?side=sell").json()["results"][0]
        assert listed["unmet_requirements"] == body["unmet_requirements"]
        assert api(alice).get(f"/api/v1/offers/{offer.pk}/").json()["unmet_requirements"] == []
        refused = api(bob).post(f"/api/v1/offers/{offer.pk}/take/", {"amount": "0.01"}, "json")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "requirement_not_met"


class TestOfferFormAndApi:
    def test_offer_form_takes_requirements(self, client, alice):
        fund(alice, "BTC", "1")
        client.force_login(alice)
        assert "Who may take it" in client.get(reverse("offer_new")).content.decode()
        response = client.post(
            reverse("offer_new"),
            {
                "side": "sell",
                "asset": "BTC",
                "fiat": "EUR",
                "price_type": "fixed",
                "price": "80000",
                "amount": "0.1",
                "min_fiat": "10",
                "max_fiat": "1000",
                "payment_methods": ["sepa"],
                "payment_window_minutes": "30",
                "min_taker_tier": "1",
                "min_taker_trades": "5",
                "min_account_age_days": "7",
                "trusted_only": "on",
            },
        )
        assert response.status_code == 302, response.content.decode()[:2000]
        offer = Offer.objects.get()
        assert (
            offer.min_taker_tier,
            offer.min_taker_trades,
            offer.min_account_age_days,
            offer.trusted_only,
        ) == (1, 5, 7, True)
        edit = client.get(reverse("offer_edit", args=[offer.pk])).content.decode()
        assert re.search(r'<input type="checkbox" name="trusted_only"[^>]* checked>', edit)

    def test_api_create_and_patch_requirements(self, alice):
        fund(alice, "BTC", "1")
        payload = {
            "side": "sell",
            "asset": "BTC",
            "fiat": "EUR",
            "price_type": "fixed",
            "price": "80000",
            "amount": "0.1",
            "min_fiat": "10",
            "max_fiat": "1000",
            "payment_methods": ["sepa"],
            "min_taker_tier": 2,
            "trusted_only": True,
        }
        created = api(alice).post("/api/v1/offers/", payload, format="json")
        assert created.status_code == 201, created.json()
        body = created.json()
        assert (body["min_taker_tier"], body["trusted_only"], body["min_taker_trades"]) == (
            2,
            True,
            0,
        )
        patched = api(alice).patch(
            f"/api/v1/offers/{body['id']}/", {"min_taker_tier": 0}, format="json"
        )
        assert patched.json()["min_taker_tier"] == 0
        bad = api(alice).post("/api/v1/offers/", {**payload, "min_taker_tier": 5}, format="json")
        assert bad.status_code == 400
        assert "min_taker_tier" in bad.json()["error"]["fields"]


# --- reputation -------------------------------------------------------------------------------


class TestFeedbackRules:
    def test_not_on_cancelled_or_expired_trades(self, alice, bob):
        cancelled = make_trade(alice, bob)
        escrow.trade_cancel(trade_id=cancelled.pk, actor=bob)
        expired = make_trade(alice, bob, fund_seller=False)
        Trade.objects.filter(pk=expired.pk).update(payment_deadline=timezone.now())
        escrow.escrow_expire(trade_id=expired.pk)
        for trade in (cancelled, expired):
            for actor in (alice, bob):
                with pytest.raises(InvalidTransition, match="never on a cancelled or expired"):
                    escrow_services.feedback_leave(
                        trade_id=trade.pk, actor=actor, rating="negative"
                    )
        assert not Feedback.objects.exists()

    @pytest.mark.parametrize("state", [Trade.State.REFUNDED, Trade.State.SPLIT])
    def test_resolved_trades_take_feedback(self, alice, bob, state):
        trade = make_trade(alice, bob)
        # As a moderator's decision leaves it once settled (decisions are the disputes tests').
        Trade.objects.filter(pk=trade.pk).update(state=state)
        feedback = escrow_services.feedback_leave(
            trade_id=trade.pk, actor=bob, rating="negative", comment="Never released"
        )
        assert (feedback.author, feedback.target) == (bob, alice)

    def test_once_per_party(self, alice, bob, carol):
        trade = make_trade(alice, bob)
        complete(trade)
        escrow_services.feedback_leave(trade_id=trade.pk, actor=bob, rating="positive")
        escrow_services.feedback_leave(trade_id=trade.pk, actor=alice, rating="positive")
        with pytest.raises(InvalidTransition, match="already left feedback"):
            escrow_services.feedback_leave(trade_id=trade.pk, actor=bob, rating="negative")
        with pytest.raises(NotFound):
            escrow_services.feedback_leave(trade_id=trade.pk, actor=carol, rating="negative")
        assert Feedback.objects.count() == 2

    def test_reply_once_by_the_target_only(self, alice, bob, carol):
        trade = make_trade(alice, bob)
        complete(trade)
        feedback = escrow_services.feedback_leave(
            trade_id=trade.pk, actor=bob, rating="negative", comment="Slow release"
        )
        for actor in (bob, carol):  # the author and a stranger
            with pytest.raises(PermissionDenied, match="Only the trader this feedback is about"):
                escrow_services.feedback_reply(feedback_id=feedback.pk, actor=actor, text="hm")
        with pytest.raises(ValidationFailed):
            escrow_services.feedback_reply(feedback_id=feedback.pk, actor=alice, text="   ")
        replied = escrow_services.feedback_reply(
            feedback_id=feedback.pk, actor=alice, text="My bank was slow that day."
        )
        assert replied.reply == "My bank was slow that day."
        assert replied.replied_at is not None
        with pytest.raises(InvalidTransition, match="already replied"):
            escrow_services.feedback_reply(feedback_id=feedback.pk, actor=alice, text="Again")
        feedback.refresh_from_db()
        assert feedback.reply == "My bank was slow that day."

    def test_reply_over_the_api(self, alice, bob, carol):
        trade = make_trade(alice, bob)
        complete(trade)
        given = api(bob).post(
            f"/api/v1/trades/{trade.pk}/feedback/", {"rating": "positive"}, format="json"
        )
        assert given.status_code == 201
        url = f"/api/v1/feedback/{given.json()['id']}/reply/"
        assert api(carol).post(url, {"text": "hi"}, format="json").status_code == 403
        replied = api(alice).post(url, {"text": "Thanks!"}, format="json")
        assert replied.status_code == 200
        assert replied.json()["reply"] == "Thanks!"
        again = api(alice).post(url, {"text": "Thanks again"}, format="json")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "reply_exists"
        assert (
            api(alice).post("/api/v1/feedback/999999/reply/", {"text": "x"}, "json").status_code
            == 404
        )


class TestComputedStats:
    def test_average_release_time_from_the_sellers_completed_trades(self, alice, bob, carol):
        now = timezone.now()
        for minutes in (4, 10):
            trade = make_trade(alice, bob)
            complete(trade)
            # the release time is read from the trade's events (paid, then released)
            EscrowEvent.objects.filter(trade=trade, new_state="paid").update(
                created_at=now - timedelta(minutes=minutes)
            )
        # a trade where alice buys doesn't count towards her release time
        bought = make_trade(carol, alice)
        complete(bought)
        EscrowEvent.objects.filter(trade=bought, new_state="paid").update(
            created_at=now - timedelta(hours=5)
        )
        stats = trader_stats(user=alice)
        assert stats.average_release_seconds == 7 * 60
        assert stats.trades == 3
        assert trader_stats(user=bob).average_release_seconds is None

    def test_stats_take_three_queries(self, alice, bob, django_assert_num_queries):
        complete(make_trade(alice, bob))
        from escrow.selectors import trader_stats_for_users

        # the counts (escrow.models.TraderCount), release times (from the events), names with
        # last seen
        with django_assert_num_queries(3):
            trader_stats_for_users(user_ids=[alice.pk, bob.pk])

    def test_book_stats_come_from_the_cache_until_they_expire(
        self, alice, bob, settings, django_assert_num_queries
    ):
        from django.core.cache import cache

        from escrow.selectors import trader_stats_recent

        settings.TRADER_STATS_CACHE_SECONDS = 60
        cache.delete_many([f"trader-stats:v2:{u.pk}" for u in (alice, bob)])
        complete(make_trade(alice, bob))
        names = {alice.pk: "alice", bob.pk: "bob"}
        # the counts, release times, last seen: the names were given
        with django_assert_num_queries(3):
            first = trader_stats_recent(user_ids=[alice.pk, bob.pk], usernames=names)
        assert first[alice.pk] == trader_stats(user=alice)
        assert first[alice.pk].trades == 1
        assert first[alice.pk].completion_rate == 100
        complete(make_trade(alice, bob))
        with django_assert_num_queries(0):  # as counted a moment ago
            again = trader_stats_recent(user_ids=[alice.pk, bob.pk])
        assert again == first
        cache.delete(f"trader-stats:v2:{alice.pk}")  # expired
        assert trader_stats_recent(user_ids=[alice.pk])[alice.pk].trades == 2
        settings.TRADER_STATS_CACHE_SECONDS = 0  # off: always counted afresh
        with django_assert_num_queries(3):
            assert trader_stats_recent(user_ids=[bob.pk])[bob.pk].trades == 2

    def test_book_stats_are_counted_when_the_cache_is_down(self, alice, bob, monkeypatch):
        from django.core.cache import cache

        from escrow.selectors import trader_stats_recent

        def down(*args, **kwargs):
            raise ConnectionError("Redis is down")

        complete(make_trade(alice, bob))
        monkeypatch.setattr(cache, "get_many", down)
        monkeypatch.setattr(cache, "set_many", down)
        stats = trader_stats_recent(user_ids=[alice.pk, bob.pk])
        assert stats == {u.pk: trader_stats(user=u) for u in (alice, bob)}

    def test_public_profile(self, client, alice, bob):
        trade = make_trade(alice, bob)
        complete(trade)
        feedback = escrow_services.feedback_leave(
            trade_id=trade.pk, actor=bob, rating="positive", comment="Smooth and fast"
        )
        escrow_services.feedback_reply(feedback_id=feedback.pk, actor=alice, text="Thank you, bob!")
        set_tier(alice, 1)
        html = client.get(reverse("profile", args=["alice"])).content.decode()
        assert "Verified · tier 1" in html
        assert "Smooth and fast" in html
        assert "Thank you, bob!" in html
        assert "Average release time" in html
        assert "Completion rate" in html
        assert "Member since" in html
        # the public profile never shows documents or limits (the page's random CSRF tokens
        # left out: one can spell "kyc" by chance)
        shown = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", html)
        assert "kyc" not in shown.lower()
        assert "per 30 days" not in html

    def test_reply_from_the_profile_page(self, client, alice, bob):
        trade = make_trade(alice, bob)
        complete(trade)
        feedback = escrow_services.feedback_leave(trade_id=trade.pk, actor=bob, rating="negative")
        client.force_login(alice)
        page = client.get(reverse("profile", args=["alice"])).content.decode()
        assert reverse("feedback_reply", args=[feedback.pk]) in page
        response = client.post(
            reverse("feedback_reply", args=[feedback.pk]), {"text": "Sorry about that."}
        )
        assert response.status_code == 302
        feedback.refresh_from_db()
        assert feedback.reply == "Sorry about that."
        client.force_login(bob)
        client.post(reverse("feedback_reply", args=[feedback.pk]), {"text": "No!"})
        feedback.refresh_from_db()
        assert feedback.reply == "Sorry about that."
