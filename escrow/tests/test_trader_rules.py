"""Issue 20's rules traders know from Binance P2P: the daily cancellation limit, the offer's
auto-reply, makers' online status and average release time, and region restrictions. Time is
moved with a fixed clock (django.utils.timezone.now), never slept through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts import services as accounts
from accounts.models import Profile
from accounts.selectors import profile_for
from accounts.tests.factories import UserFactory, complete
from common.errors import Conflict, PermissionDenied, ValidationFailed
from escrow import services
from escrow.models import CancelReason, EscrowEvent, Trade, TradeMessage
from escrow.selectors import trader_stats, trader_stats_for_users
from marketplace.models import Offer
from marketplace.selectors import offer_book, trader_stats_recent
from marketplace.tests.factories import fund, make_offer, make_trade
from notifications.models import Notification

pytestmark = pytest.mark.django_db

S = Trade.State
# 10:00 UTC is 11:00 in Madrid (CET, no daylight saving in early March).
MORNING = datetime(2030, 3, 5, 10, 0, tzinfo=UTC)
MADRID_MIDNIGHT = datetime(2030, 3, 5, 23, 0, tzinfo=UTC)  # 2030-03-06 00:00 in Madrid


class Clock:
    """A fixed clock for the whole app: timezone.now() (auto_now fields included) reads it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, start: datetime) -> None:
        self.now = start
        monkeypatch.setattr(timezone, "now", lambda: self.now)

    def set(self, when: datetime) -> None:
        self.now = when


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch, MORNING)


def api(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def _moderator() -> Any:
    user = UserFactory(username="mod", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="decide_trade"))
    return type(user).objects.get(pk=user.pk)  # a fresh permission cache


@pytest.fixture
def seller_offer(alice: Any) -> Offer:
    fund(alice, "BTC", "1")
    return make_offer(alice, amount="0.5")


@pytest.fixture
def madrid_bob(bob: Any) -> Any:
    accounts.profile_time_zone_set(user=bob, time_zone="Europe/Madrid")
    return bob


def _take_and_cancel(offer: Offer, buyer: Any, reason: str = CancelReason.CHANGED_MIND) -> Trade:
    trade = services.trade_open(offer_id=offer.pk, taker=buyer, amount="0.01")
    return services.trade_cancel(trade_id=trade.pk, actor=buyer, cancel_reason=reason)


class TestCancellationLimit:
    @pytest.fixture(autouse=True)
    def _the_real_limit(self, settings: Any) -> None:
        settings.CANCEL_LIMIT_PER_DAY = 3  # the default (the test settings turn it off)

    def test_the_fourth_take_of_the_day_is_refused_with_the_time_it_ends(
        self, clock, seller_offer, madrid_bob, client
    ):
        # given bob (in Madrid) cancelled three trades this morning
        for _ in range(3):
            _take_and_cancel(seller_offer, madrid_bob)
        # when he takes a fourth
        with pytest.raises(PermissionDenied) as refused:
            services.trade_open(offer_id=seller_offer.pk, taker=madrid_bob, amount="0.01")
        # then it is refused, naming the rule and when it ends in his time zone
        assert refused.value.code == "buying_suspended"
        assert "daily cancellation limit" in refused.value.message
        assert "2030-03-06 00:00 (Europe/Madrid)" in refused.value.message
        assert profile_for(madrid_bob).buying_suspended_until == MADRID_MIDNIGHT
        assert Trade.objects.filter(buyer=madrid_bob).count() == 3
        # and the API says the same (403), quick buy too
        response = api(madrid_bob).post(
            f"/api/v1/offers/{seller_offer.pk}/take/", {"amount": "0.01"}, format="json"
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "buying_suspended"
        with pytest.raises(PermissionDenied):
            services.trade_match(
                taker=madrid_bob, side="buy", asset="BTC", fiat="EUR", fiat_amount="800"
            )
        # and the book and the offer page tell him before he tries
        client.force_login(madrid_bob)
        book = client.get("/?side=buy").content.decode()
        assert 'data-testid="buying-paused"' in book
        assert "2030-03-06 00:00 (Europe/Madrid)" in book
        page = client.get(reverse("offer_detail", args=[seller_offer.pk])).content.decode()
        assert 'data-testid="buying-paused"' in page
        assert 'id="take-form"' not in page

    def test_selling_goes_on_while_buying_is_paused(self, clock, alice, seller_offer, madrid_bob):
        for _ in range(3):
            _take_and_cancel(seller_offer, madrid_bob)
        # bob still sells into a buy offer
        fund(madrid_bob, "BTC", "1")
        carol_buys = make_offer(UserFactory(username="carol2"), side="buy", amount="0.5")
        trade = services.trade_open(offer_id=carol_buys.pk, taker=madrid_bob, amount="0.01")
        assert trade.seller_id == madrid_bob.pk

    def test_a_cancel_for_the_sellers_fault_does_not_count(self, clock, seller_offer, madrid_bob):
        # given two cancels of his own and two blaming the seller
        _take_and_cancel(seller_offer, madrid_bob, CancelReason.CHANGED_MIND)
        _take_and_cancel(seller_offer, madrid_bob, CancelReason.CANNOT_PAY)
        blamed = _take_and_cancel(seller_offer, madrid_bob, CancelReason.SELLER_DETAILS)
        _take_and_cancel(seller_offer, madrid_bob, CancelReason.SELLER_UNRESPONSIVE)
        # then the reasons are recorded, the seller's fault not counted
        assert blamed.cancel_reason == CancelReason.SELLER_DETAILS
        assert not blamed.cancel_counted
        assert profile_for(madrid_bob).buying_suspended_until is None
        # and he may still buy
        trade = services.trade_open(offer_id=seller_offer.pk, taker=madrid_bob, amount="0.01")
        assert trade.state == S.FUNDED

    def test_a_moderator_counts_an_abused_seller_fault_reason(
        self, clock, seller_offer, madrid_bob
    ):
        _take_and_cancel(seller_offer, madrid_bob)
        _take_and_cancel(seller_offer, madrid_bob)
        blamed = _take_and_cancel(seller_offer, madrid_bob, CancelReason.SELLER_ASKED)
        assert profile_for(madrid_bob).buying_suspended_until is None
        # when a moderator finds the reason abused and counts it
        moderator = _moderator()
        services.trade_cancellation_review(trade_id=blamed.pk, actor=moderator, counted=True)
        # then bob's buying pauses at once, until his midnight
        assert profile_for(madrid_bob).buying_suspended_until == MADRID_MIDNIGHT
        # and un-counting it lifts the pause
        services.trade_cancellation_review(trade_id=blamed.pk, actor=moderator, counted=False)
        assert profile_for(madrid_bob).buying_suspended_until is None
        # a party can't review their own trade's cancellation
        with pytest.raises(PermissionDenied):
            services.trade_cancellation_review(trade_id=blamed.pk, actor=madrid_bob, counted=False)

    def test_the_next_day_buying_is_allowed_again(self, clock, seller_offer, madrid_bob):
        # given bob paused by three cancels late in his evening (23:30 in Madrid)
        clock.set(MADRID_MIDNIGHT - timedelta(minutes=30))
        for _ in range(3):
            _take_and_cancel(seller_offer, madrid_bob)
        with pytest.raises(PermissionDenied):
            services.trade_open(offer_id=seller_offer.pk, taker=madrid_bob, amount="0.01")
        # when midnight passes in Madrid
        clock.set(MADRID_MIDNIGHT + timedelta(seconds=1))
        # then he buys again, and the new day's count starts from zero
        _take_and_cancel(seller_offer, madrid_bob)
        trade = services.trade_open(offer_id=seller_offer.pk, taker=madrid_bob, amount="0.01")
        assert trade.state == S.FUNDED
        assert profile_for(madrid_bob).buying_suspended_until is None

    def test_the_day_is_the_buyers_own(self, clock, seller_offer, bob):
        # given bob without a time zone: his day is UTC's, which ends at 00:00 UTC
        for _ in range(3):
            _take_and_cancel(seller_offer, bob)
        assert profile_for(bob).buying_suspended_until == datetime(2030, 3, 6, tzinfo=UTC)

    def test_an_expiry_counts_a_moderators_cancel_does_not(self, clock, seller_offer, madrid_bob):
        _take_and_cancel(seller_offer, madrid_bob)
        # a trade the moderator cancels doesn't count
        by_moderator = services.trade_open(
            offer_id=seller_offer.pk, taker=madrid_bob, amount="0.01"
        )
        services._escrow_transition(
            trade_id=by_moderator.pk, to=S.CANCELLED, actor=_moderator(), as_moderator=True
        )
        assert not Trade.objects.get(pk=by_moderator.pk).cancel_counted
        # one he lets expire does
        expired = services.trade_open(offer_id=seller_offer.pk, taker=madrid_bob, amount="0.01")
        clock.set(MORNING + timedelta(minutes=31))
        services.escrow_expire(trade_id=expired.pk)
        assert Trade.objects.get(pk=expired.pk).cancel_counted
        assert profile_for(madrid_bob).buying_suspended_until is None
        _take_and_cancel(seller_offer, madrid_bob)
        assert profile_for(madrid_bob).buying_suspended_until == MADRID_MIDNIGHT

    def test_a_paused_makers_buy_offers_leave_the_book(self, clock, alice, seller_offer, carol):
        # given carol buys through her own buy offer, and is paused by cancels as a taker
        buy_offer = make_offer(carol, side="buy", amount="0.5")
        for _ in range(3):
            _take_and_cancel(seller_offer, carol)
        # then her buy offer is not in the book and can't be taken
        assert buy_offer.pk not in {o.pk for o in offer_book(side="buy", asset="BTC")}
        with pytest.raises(Conflict) as refused:
            services.trade_open(offer_id=buy_offer.pk, taker=alice, amount="0.01")
        assert refused.value.code == "offer_unavailable"

    def test_the_api_takes_the_reason_and_the_room_form_too(self, clock, seller_offer, bob, client):
        one = services.trade_open(offer_id=seller_offer.pk, taker=bob, amount="0.01")
        response = api(bob).post(
            f"/api/v1/trades/{one.pk}/cancel/", {"cancel_reason": "seller_asked"}, format="json"
        )
        assert response.status_code == 200
        assert response.json()["cancel_reason"] == "seller_asked"
        assert not Trade.objects.get(pk=one.pk).cancel_counted
        bad = services.trade_open(offer_id=seller_offer.pk, taker=bob, amount="0.01")
        response = api(bob).post(
            f"/api/v1/trades/{bad.pk}/cancel/", {"cancel_reason": "bored"}, format="json"
        )
        assert response.status_code == 400
        assert Trade.objects.get(pk=bad.pk).state == S.FUNDED
        client.force_login(bob)
        form = client.get(reverse("trade_action", args=[bad.pk, "cancel"])).content.decode()
        assert 'name="cancel_reason"' in form
        client.post(
            reverse("trade_action", args=[bad.pk, "cancel"]),
            {"expected_state": "funded", "confirm": "1", "cancel_reason": "seller_unresponsive"},
        )
        bad.refresh_from_db()
        assert (bad.state, bad.cancel_reason, bad.cancel_counted) == (
            S.CANCELLED,
            "seller_unresponsive",
            False,
        )


class TestAutoReply:
    def test_posted_once_as_the_makers_first_message(
        self, alice, bob, django_capture_on_commit_callbacks
    ):
        # given alice's offer with an auto-reply
        fund(alice, "BTC", "1")
        offer = make_offer(alice, auto_reply="  Hi! Pay by SEPA, then mark it paid.  ")
        # when bob takes it
        with django_capture_on_commit_callbacks(execute=True):
            trade = services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        # then the chat holds it once, from alice, marked as an auto-reply, and bob is told
        messages = list(TradeMessage.objects.filter(trade=trade))
        assert [(m.sender_id, m.is_auto_reply, m.text) for m in messages] == [
            (alice.pk, True, "Hi! Pay by SEPA, then mark it paid.")
        ]
        assert Notification.objects.filter(
            user=bob, kind=Notification.Kind.MESSAGE, text__contains="Hi! Pay by SEPA"
        ).exists()
        # a second trade gets its own, once
        other = services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
        assert TradeMessage.objects.filter(trade=other).count() == 1
        # and the API shows it marked
        listed = api(bob).get(f"/api/v1/trades/{trade.pk}/messages/").json()["results"]
        assert listed[0]["is_auto_reply"] is True

    def test_no_auto_reply_no_message(self, alice, bob):
        trade = make_trade(alice, bob)
        assert not TradeMessage.objects.filter(trade=trade).exists()

    def test_too_long_is_refused_naming_the_field(self, alice):
        fund(alice, "BTC", "1")
        with pytest.raises(ValidationFailed) as refused:
            make_offer(alice, auto_reply="x" * 1001)
        assert "auto_reply" in refused.value.fields
        assert not Offer.objects.filter(maker=alice).exists()

    def test_the_api_and_the_form_set_it_only_its_maker_reads_it(self, alice, bob, client):
        fund(alice, "BTC", "1")
        created = api(alice).post(
            "/api/v1/offers/",
            {
                "side": "sell",
                "asset": "BTC",
                "fiat": "EUR",
                "price_type": "fixed",
                "price": "80000",
                "amount": "0.1",
                "min_fiat": "10",
                "max_fiat": "4000",
                "payment_methods": ["sepa"],
                "auto_reply": "Welcome!",
            },
            format="json",
        )
        assert created.status_code == 201, created.content
        offer_id = created.json()["id"]
        assert created.json()["auto_reply"] == "Welcome!"
        assert api(bob).get(f"/api/v1/offers/{offer_id}/").json()["auto_reply"] is None
        patched = api(alice).patch(
            f"/api/v1/offers/{offer_id}/", {"auto_reply": "Hello again"}, format="json"
        )
        assert patched.json()["auto_reply"] == "Hello again"
        client.force_login(alice)
        page = client.get(reverse("offer_edit", args=[offer_id])).content.decode()
        assert "Hello again" in page


def _sale(seller: Any, buyer: Any, *, paid: datetime, released: datetime) -> Trade:
    """A completed sale whose paid and released events happened at these times."""
    trade = make_trade(seller, buyer)
    complete(trade)
    EscrowEvent.objects.filter(trade=trade, new_state=S.PAID).update(created_at=paid)
    EscrowEvent.objects.filter(trade=trade, new_state=S.RELEASING).update(created_at=released)
    Trade.objects.filter(pk=trade.pk).update(paid_at=paid, released_at=released)
    return trade


class TestOnlineAndReleaseTime:
    def test_average_release_time_from_crafted_events(self, alice, bob, carol):
        now = timezone.now()
        # alice released two sales in 4 and 10 minutes this week: the mean is 7 minutes
        _sale(alice, bob, paid=now - timedelta(minutes=64), released=now - timedelta(minutes=60))
        _sale(
            alice, bob, paid=now - timedelta(days=2), released=now - timedelta(days=2, minutes=-10)
        )
        # a sale released 40 days ago is out of the 30-day window
        _sale(alice, bob, paid=now - timedelta(days=40, hours=5), released=now - timedelta(days=40))
        # a sale a moderator released (a dispute decided for the buyer) isn't her release
        decided = _sale(alice, carol, paid=now - timedelta(hours=3), released=now)
        EscrowEvent.objects.filter(trade=decided, new_state=S.RELEASING).update(
            actor_role="moderator"
        )
        # and a trade where alice buys is not a sale of hers
        _sale(carol, alice, paid=now - timedelta(hours=9), released=now)
        stats = trader_stats(user=alice)
        assert stats.average_release_seconds == 7 * 60
        assert trader_stats(user=carol).average_release_seconds == 9 * 3600
        assert trader_stats(user=bob).average_release_seconds is None

    def test_one_aggregate_for_a_page_of_makers(self, alice, bob, carol, django_assert_num_queries):
        now = timezone.now()
        _sale(alice, bob, paid=now - timedelta(minutes=5), released=now)
        _sale(carol, bob, paid=now - timedelta(minutes=15), released=now)
        makers = [UserFactory(username=f"maker{i}") for i in range(5)]
        ids = [alice.pk, carol.pk, bob.pk] + [m.pk for m in makers]
        # the counts, the release times of all, names with last seen: per page, not per row
        with django_assert_num_queries(3):
            stats = trader_stats_for_users(user_ids=ids)
        assert stats[alice.pk].average_release_seconds == 300
        assert stats[carol.pk].average_release_seconds == 900

    def test_online_within_the_window_else_active_ago(self, alice, bob, settings, client):
        # (last seen back-dated: the template's timesince reads the real clock)
        settings.MAKER_ONLINE_MINUTES = 10
        settings.TRADER_STATS_CACHE_SECONDS = 60
        fund(alice, "BTC", "1")
        make_offer(alice)
        now = timezone.now()
        Profile.objects.filter(user=alice).update(last_seen=now - timedelta(minutes=9))
        assert trader_stats(user=alice).is_online()
        client.force_login(bob)
        assert 'data-testid="online"' in client.get("/?side=buy").content.decode()
        # last seen two hours ago (the book's stats cached meanwhile: last seen is read afresh)
        two_hours_ago = now - timedelta(hours=2, minutes=1)
        Profile.objects.filter(user=alice).update(last_seen=two_hours_ago)
        assert not trader_stats(user=alice).is_online()
        assert not trader_stats_recent(user_ids=[alice.pk])[alice.pk].is_online()
        book = client.get("/?side=buy").content.decode()
        assert 'data-testid="online"' not in book
        assert "Active 2\xa0hours" in book
        # the API's maker and the profile say the same
        maker = api(bob).get("/api/v1/offers/?side=sell").json()["results"][0]["maker"]
        assert maker["online"] is False
        assert maker["last_seen"] == two_hours_ago.isoformat().replace("+00:00", "Z")
        profile = api(bob).get("/api/v1/traders/alice/").json()
        assert (profile["online"], profile["trades"]) == (False, 0)
        assert api(bob).get("/api/v1/traders/nobody-here/").status_code == 404
        page = client.get(reverse("profile", args=["alice"])).content.decode()
        assert "Active 2\xa0hours" in page


class TestRegionRestrictions:
    @pytest.fixture
    def german_offer(self, alice: Any) -> Offer:
        fund(alice, "BTC", "1")
        return make_offer(alice, allowed_countries=["de", "AT", "de"])

    def test_codes_are_checked_and_kept_sorted(self, german_offer, alice):
        assert german_offer.allowed_countries == ["AT", "DE"]
        with pytest.raises(ValidationFailed) as refused:
            make_offer(alice, allowed_countries=["XX"])
        assert "allowed_countries" in refused.value.fields

    def test_a_taker_from_elsewhere_or_nowhere_is_refused(self, german_offer, bob, client):
        # bob set no country
        with pytest.raises(PermissionDenied) as refused:
            services.trade_open(offer_id=german_offer.pk, taker=bob, amount="0.01")
        assert refused.value.code == "requirement_not_met"
        assert "Austria, Germany" in refused.value.message
        assert "names no country" in refused.value.message
        # bob in France
        accounts.profile_country_set(user=bob, country="fr")
        with pytest.raises(PermissionDenied) as refused:
            services.trade_open(offer_id=german_offer.pk, taker=bob, amount="0.01")
        assert "your profile says France" in refused.value.message
        assert not Trade.objects.exists()
        # and the book marks it like the other requirements
        client.force_login(bob)
        book = client.get("/?side=buy").content.decode()
        assert "Not open to you" in book
        assert "Takers in AT, DE only (you: FR)" in book

    def test_a_taker_from_an_allowed_country_may_take_it(self, german_offer, bob, client):
        client.force_login(bob)
        client.post(reverse("settings_country"), {"country": "de"})
        assert profile_for(bob).country == "DE"
        trade = services.trade_open(offer_id=german_offer.pk, taker=bob, amount="0.01")
        assert trade.state == S.FUNDED

    def test_an_unknown_country_is_refused(self, bob):
        with pytest.raises(ValidationFailed):
            accounts.profile_country_set(user=bob, country="Narnia")
        assert profile_for(bob).country == ""
