"""The trade room's chat rules: a per-user rate limit, read-only once the trade is final, and
one unread notification per trade however many messages arrive (security finding 11)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from common.errors import Conflict, RateLimited
from escrow import services
from escrow.models import Settlement, Trade, TradeMessage
from marketplace.tests.factories import make_trade
from notifications.models import Notification

pytestmark = pytest.mark.django_db

S = Trade.State


def _moderator():
    user = UserFactory(username="mod", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="decide_trade"))
    return UserFactory._meta.model.objects.get(pk=user.pk)  # fresh permission cache


def _api(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def _settle(trade: Trade) -> Trade:
    services.settlement_execute(settlement_id=Settlement.objects.get(trade=trade).pk)
    trade.refresh_from_db()
    return trade


def _completed(seller, buyer) -> Trade:
    trade = make_trade(seller, buyer)
    services.trade_mark_paid(trade_id=trade.pk, actor=buyer)
    services.escrow_release(trade_id=trade.pk, actor=seller)
    return _settle(trade)


class TestRateLimit:
    def test_the_message_past_the_limit_is_refused_with_429(self, alice, bob, settings):
        # given a trade and a limit of 3 messages a minute, all used by bob
        settings.CHAT_MESSAGES_PER_MINUTE = 3
        trade = make_trade(alice, bob)
        for n in range(3):
            services.trade_message_send(trade_id=trade.pk, actor=bob, text=f"msg {n}")

        # when bob writes once more, through the service and through the API
        with pytest.raises(RateLimited) as refused:
            services.trade_message_send(trade_id=trade.pk, actor=bob, text="one too many")
        response = _api(bob).post(
            f"/api/v1/trades/{trade.pk}/messages/", {"text": "again"}, format="json"
        )

        # then both are refused with the rate-limit error, and nothing was stored
        assert refused.value.status == 429
        assert response.status_code == 429, response.json()
        assert response.json()["error"]["code"] == "throttled"
        assert response["Retry-After"] == "60"
        assert TradeMessage.objects.filter(trade=trade, sender=bob).count() == 3

    def test_the_limit_is_per_user_and_per_minute(self, alice, bob, settings):
        # given bob used up his limit, one of those messages over a minute ago
        settings.CHAT_MESSAGES_PER_MINUTE = 2
        trade = make_trade(alice, bob)
        first = services.trade_message_send(trade_id=trade.pk, actor=bob, text="one")
        services.trade_message_send(trade_id=trade.pk, actor=bob, text="two")

        # when alice writes, and bob writes after his first message has aged a minute
        services.trade_message_send(trade_id=trade.pk, actor=alice, text="hello")
        TradeMessage.objects.filter(pk=first.pk).update(
            created_at=timezone.now() - timedelta(seconds=61)
        )
        services.trade_message_send(trade_id=trade.pk, actor=bob, text="three")

        # then both went through
        assert TradeMessage.objects.filter(trade=trade).count() == 4

    def test_the_default_is_twenty_a_minute(self, settings):
        # given / when the default settings / then
        assert settings.CHAT_MESSAGES_PER_MINUTE == 20


class TestReadOnlyOnceFinal:
    def test_parties_cannot_write_on_a_completed_trade(self, alice, bob):
        # given a completed trade
        trade = _completed(alice, bob)

        # when either party writes, through the service or the API
        with pytest.raises(Conflict) as refused:
            services.trade_message_send(trade_id=trade.pk, actor=bob, text="thanks!")
        response = _api(alice).post(
            f"/api/v1/trades/{trade.pk}/messages/", {"text": "hi"}, format="json"
        )

        # then the chat is closed
        assert refused.value.code == "chat_closed"
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "chat_closed"
        assert not TradeMessage.objects.filter(trade=trade).exists()

    def test_parties_cannot_write_on_a_cancelled_trade(self, alice, bob):
        # given a cancelled trade
        trade = make_trade(alice, bob)
        services.trade_cancel(trade_id=trade.pk, actor=bob)

        # when / then
        with pytest.raises(Conflict, match="read-only") as refused:
            services.trade_message_send(trade_id=trade.pk, actor=alice, text="why?")
        assert refused.value.code == "chat_closed"

    def test_moderator_writes_while_disputed_and_not_once_settled(self, alice, bob):
        # given a disputed trade and a moderator
        trade = make_trade(alice, bob)
        services.trade_dispute(trade_id=trade.pk, actor=bob, reason="paid, button failed")
        mod = _moderator()

        # when the moderator writes during the dispute
        services.trade_message_send(
            trade_id=trade.pk, actor=mod, text="Send your receipt.", as_moderator=True
        )
        # and after the decision has settled (refunded: final)
        services._escrow_transition(trade_id=trade.pk, to=S.REFUNDING, actor=mod, as_moderator=True)
        trade = _settle(trade)
        assert trade.state == S.REFUNDED
        with pytest.raises(Conflict) as refused:
            services.trade_message_send(
                trade_id=trade.pk, actor=mod, text="late", as_moderator=True
            )

        # then the first went through, the second is refused: the chat is closed
        assert refused.value.code == "chat_closed"
        assert list(TradeMessage.objects.filter(trade=trade).values_list("text", flat=True)) == [
            "Send your receipt."
        ]


class TestNotificationsCoalesce:
    def test_one_unread_notification_per_trade_for_a_burst(
        self, alice, bob, django_capture_on_commit_callbacks
    ):
        # given a trade
        trade = make_trade(alice, bob)
        unread = Notification.objects.filter(
            user=alice, trade=trade, kind="message", read_at__isnull=True
        )

        # when bob writes five messages
        for n in range(5):
            with django_capture_on_commit_callbacks(execute=True):
                services.trade_message_send(trade_id=trade.pk, actor=bob, text=f"msg {n}")

        # then alice has one unread notification about them
        assert unread.count() == 1

        # when she reads it and bob writes again
        unread.update(read_at=timezone.now())
        with django_capture_on_commit_callbacks(execute=True):
            services.trade_message_send(trade_id=trade.pk, actor=bob, text="still there?")

        # then she is told again, once
        assert unread.count() == 1
        assert not Notification.objects.filter(user=bob, kind="message").exists()
