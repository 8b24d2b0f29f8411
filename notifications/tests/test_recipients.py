"""The parties' settings of a trade move read from Redis (notifications.recipients): a move reads
none of them from PostgreSQL once cached, every writer makes the next move see its change once
it commits, and with Redis down everything comes from PostgreSQL. Real PostgreSQL and Redis;
transactional tests where the commit is what matters."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts.services import profile_language_set
from escrow import services as escrow
from marketplace.tests.factories import make_trade
from notifications import preferences, recipients, services, telegram
from notifications.models import (
    Notification,
    NotificationPreference,
    OutboundMessage,
    TelegramLink,
    WebhookDelivery,
    WebhookEndpoint,
)

pytestmark = pytest.mark.usefixtures("trade_news_inline")

URL = "https://bot.example.com/hooks"
SETTINGS_TABLES = (
    "notifications_webhookendpoint",
    "notifications_notificationpreference",
    "notifications_telegramlink",
    "accounts_profile",
)


def _news(trade):
    """Announce the trade's opening again (as the listener does on commit): what the maker gets."""
    services.notify_trade_events(events=[trade.events.get(new_state="funded")])


def _settings_queries(queries) -> list[str]:
    return [q["sql"] for q in queries if any(t in q["sql"] for t in SETTINGS_TABLES)]


@pytest.mark.django_db
def test_a_cached_move_reads_no_settings_and_writes_the_same(alice, bob, settings):
    settings.TELEGRAM_BOT_TOKEN = "123:test"
    endpoint, _ = services.webhook_create(user=alice, url=URL)
    TelegramLink.objects.create(user=alice, chat_id=7001)
    preferences.preferences_set(user=alice, changes=[{"category": "trade_opened", "email": True}])
    trade = make_trade(alice, bob)
    # the first move reads the settings from PostgreSQL and caches them
    with CaptureQueriesContext(connection) as first:
        _news(trade)
    assert _settings_queries(first.captured_queries)
    # the next one reads none of them, and writes the same rows
    with CaptureQueriesContext(connection) as second:
        _news(trade)
    assert _settings_queries(second.captured_queries) == []
    # one savepoint (the news' own transaction, inside the test's): none for the outbox rows
    assert sum("SAVEPOINT" in q["sql"] for q in second.captured_queries) == 2  # and its RELEASE
    assert WebhookDelivery.objects.filter(endpoint=endpoint, event="trade.created").count() == 2
    rows = OutboundMessage.objects.filter(user=alice).values_list("channel", "address")
    assert sorted(rows) == sorted([("email", alice.email), ("telegram", "7001")] * 2)
    assert Notification.objects.filter(user=alice, kind="created").count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_deleted_or_deactivated_endpoint_gets_nothing_once_the_change_commits(alice, bob):
    gone, _ = services.webhook_create(user=alice, url=URL)
    paused, _ = services.webhook_create(user=alice, url=URL + "/2")
    trade = make_trade(alice, bob)  # its listener ran on commit: cached with both endpoints
    _news(trade)
    assert WebhookDelivery.objects.filter(endpoint=paused).count() == 2
    # when alice deletes one and a moderator disables the other in the admin (a model save)
    services.webhook_delete(endpoint_id=gone.pk, user=alice)
    paused.is_active = False
    paused.save()
    # then the next move queues nothing for either, and the news is still written
    _news(trade)
    assert WebhookDelivery.objects.count() == 2  # the earlier ones to `paused` only
    assert Notification.objects.filter(user=alice, kind="created").count() == 3
    # and a new endpoint gets the move after it
    fresh, _ = services.webhook_create(user=alice, url=URL + "/3", events=["trade.created"])
    _news(trade)
    assert WebhookDelivery.objects.filter(endpoint=fresh).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_forget_that_never_reached_redis_still_sends_nothing_to_a_deleted_endpoint(
    alice, bob, monkeypatch
):
    endpoint, _ = services.webhook_create(user=alice, url=URL)
    trade = make_trade(alice, bob)
    # (its listener ran on commit: cached with the endpoint)
    # Redis did not take the writer's forget: the cached entry still names the endpoint
    monkeypatch.setattr(recipients, "_new_tokens", lambda user_ids: None)
    services.webhook_delete(endpoint_id=endpoint.pk, user=alice)
    assert recipients.recipients_of([alice.pk])[0][alice.pk].endpoints == ((endpoint.pk, ()),)
    # the move's news is written all the same, from the database, with no delivery
    _news(trade)
    assert Notification.objects.filter(user=alice, kind="created").count() == 2
    assert not WebhookDelivery.objects.exists()
    # (until the entry expires, each move pays that second write; the database has the truth)
    assert recipients.recipients_of([alice.pk], fresh=True)[0][alice.pk].endpoints == ()


@pytest.mark.django_db(transaction=True)
def test_changed_preferences_apply_to_the_next_move(alice, bob):
    trade = make_trade(alice, bob)  # cached by its listener
    assert OutboundMessage.objects.filter(user=alice, channel="email").count() == 1
    preferences.preferences_set(user=alice, changes=[{"category": "trade_opened", "email": False}])
    _news(trade)
    assert OutboundMessage.objects.filter(user=alice, channel="email").count() == 1
    # and a preference row deleted (back to the defaults) applies too
    NotificationPreference.objects.filter(user=alice).delete()
    _news(trade)
    assert OutboundMessage.objects.filter(user=alice, channel="email").count() == 2


@pytest.mark.django_db(transaction=True)
def test_an_unlinked_telegram_chat_gets_nothing_once_unlinked(alice, bob, settings):
    settings.TELEGRAM_BOT_TOKEN = "123:test"
    trade = make_trade(alice, bob)
    TelegramLink.objects.create(user=alice, chat_id=7001)
    _news(trade)
    assert OutboundMessage.objects.filter(channel="telegram", address="7001").count() == 1
    # unlinked from the site
    telegram.telegram_unlink(user=alice)
    _news(trade)
    assert OutboundMessage.objects.filter(channel="telegram").count() == 1
    # linked again, then /stop from the chat (an UPDATE: no signal)
    TelegramLink.objects.create(user=alice, chat_id=7002)
    _news(trade)
    assert OutboundMessage.objects.filter(channel="telegram", address="7002").count() == 1
    update = {"message": {"chat": {"id": 7002, "type": "private"}, "text": "/stop"}}
    assert telegram._answer(update) is not None
    _news(trade)
    assert OutboundMessage.objects.filter(channel="telegram").count() == 2
    # and a chat linked to another account leaves alice's (the other UPDATE)
    TelegramLink.objects.filter(user=alice).update(chat_id=7003)
    recipients.recipients_forget([alice.pk])
    _news(trade)
    assert OutboundMessage.objects.filter(channel="telegram", address="7003").count() == 1
    code, _ = telegram.telegram_link_code_create(user=bob)
    with transaction.atomic():
        assert "bob" in telegram._link(code, 7003)
    _news(trade)
    assert OutboundMessage.objects.filter(channel="telegram", address="7003").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_new_language_writes_the_next_move_in_it(alice, bob):
    trade = make_trade(alice, bob)  # cached by its listener
    profile_language_set(user=alice, language="es")
    _news(trade)
    first, second = Notification.objects.filter(user=alice, kind="created").order_by("pk")
    assert first.text.startswith("bob opened trade")
    assert second.text != first.text
    assert f"#{trade.pk}" in second.text


@pytest.mark.django_db
def test_an_entry_built_before_a_change_is_never_used_after_it(alice, bob):
    services.webhook_create(user=alice, url=URL)
    recipients.recipients_of([alice.pk])
    # a reader that read the rows before the change writes its entry after the forget
    stale = cache.get(recipients._entry_key(alice.pk))
    WebhookEndpoint.objects.filter(user=alice).delete()
    cache.set(recipients._entry_key(alice.pk), stale, recipients.ENTRY_SECONDS)
    # its token is not the current one: the entry is not used
    assert recipients.recipients_of([alice.pk])[0][alice.pk].endpoints == ()


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_the_settings_come_from_postgresql(alice, bob, settings):
    endpoint, _ = services.webhook_create(user=alice, url=URL)
    trade = make_trade(alice, bob)
    settings.CACHES = {
        "default": {
            "BACKEND": "common.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    _news(trade)
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 2
    services.webhook_delete(endpoint_id=endpoint.pk, user=alice)  # its forget fails, logged
    _news(trade)
    assert WebhookDelivery.objects.count() == 0  # the earlier ones went with their endpoint
    assert Notification.objects.filter(user=alice, kind="created").count() == 3
    assert OutboundMessage.objects.filter(user=alice, channel="email").count() == 3


@pytest.mark.django_db
def test_moves_of_a_never_disputed_trade_ask_for_no_moderator(alice, bob):
    from notifications.live import listeners as live

    trade = make_trade(alice, bob)
    with CaptureQueriesContext(connection) as taken:
        live.on_trade_transitions([trade.events.get(new_state="funded")])
    assert not [q for q in taken.captured_queries if "disputes_dispute" in q["sql"]]
    escrow.trade_dispute(trade_id=trade.pk, actor=bob, reason="paid but could not mark it")
    with CaptureQueriesContext(connection) as disputed:
        live.on_trade_transitions([trade.events.get(new_state="disputed")])
    assert [q for q in disputed.captured_queries if "disputes_dispute" in q["sql"]]
