"""Moderator screens: endpoints and notifications listed, deliveries read-only, no secrets."""

from __future__ import annotations

import pytest
from django.conf import settings

from marketplace.tests.factories import make_trade
from notifications import services
from notifications.models import WebhookDelivery

pytestmark = pytest.mark.django_db


def test_admin_lists_the_three_models_and_hides_secrets(admin_client, alice, bob):
    # given an endpoint with one queued delivery
    endpoint, secret = services.webhook_create(user=alice, url="https://bot.example.com/hook")
    trade = make_trade(alice, bob)
    services.notify_trade_event(trade=trade, event=trade.events.get())
    delivery = WebhookDelivery.objects.get()
    # then each changelist renders
    for model in ("notification", "webhookendpoint", "webhookdelivery"):
        response = admin_client.get(f"/admin/notifications/{model}/")
        assert response.status_code == 200, model
    # and the endpoint's page never shows its signing secret
    page = admin_client.get(f"/admin/notifications/webhookendpoint/{endpoint.pk}/change/")
    assert page.status_code == 200
    assert secret not in page.content.decode()
    # and a delivery can be viewed but not changed, added or deleted
    view = admin_client.get(f"/admin/notifications/webhookdelivery/{delivery.pk}/change/")
    assert view.status_code == 200
    assert b'name="_save"' not in view.content
    assert admin_client.get("/admin/notifications/webhookdelivery/add/").status_code == 403
    assert (
        admin_client.get(f"/admin/notifications/webhookdelivery/{delivery.pk}/delete/").status_code
        == 403
    )


def test_settings_wire_the_sweep():
    entry = settings.CELERY_BEAT_SCHEDULE["notifications-sweep-webhooks"]
    assert entry["task"] == "notifications.tasks.sweep_webhooks"
    assert settings.WEBHOOK_MAX_ATTEMPTS == 8
