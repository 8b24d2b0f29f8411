"""The running 30-day volumes (TradeVolumeDay) the trading limits read: each take adds its value
for both parties, a cancel or an expiry takes it off, whole UTC days make the window, the
migration's backfill counts what was there before, and takes racing on one party add up."""

from __future__ import annotations

import importlib
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from accounts.tests.factories import UserFactory, complete
from conftest import require_postgres
from escrow import services
from escrow.models import Trade, TradeVolumeDay
from escrow.selectors.stats import trade_volume_eur, trade_volume_eur_recount, volume_day
from escrow.tests.test_concurrency import outcome, run_at_once
from marketplace.tests.factories import fund, make_offer, make_trade

CENT = Decimal("0.01")


def _values(*trades: Trade) -> Decimal:
    total = Decimal(0)
    for trade in trades:
        trade.refresh_from_db()
        assert trade.value_eur is not None
        total += trade.value_eur
    return total.quantize(CENT)


@pytest.mark.django_db
def test_opens_add_and_cancels_and_expiries_take_off(alice, bob, carol):
    # given trades between the three, each way a trade goes on or ends
    fund(alice, "BTC", "2")
    offer = make_offer(alice, price="85000", payment_window_minutes=30)
    done = services.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="100")
    complete(done)
    cancelled = services.trade_open(offer_id=offer.pk, taker=bob, fiat_amount="200")
    services.trade_cancel(trade_id=cancelled.pk, actor=bob, cancel_reason="changed_mind")
    expired = services.trade_open(offer_id=offer.pk, taker=carol, fiat_amount="300")
    Trade.objects.filter(pk=expired.pk).update(payment_deadline=timezone.now())
    assert services.trades_expire_overdue() == 1
    funded = services.trade_open(offer_id=offer.pk, taker=carol, fiat_amount="400")
    other = make_trade(carol, bob, amount="0.001", price="85000")
    # when the volumes are read
    users = [alice.pk, bob.pk, carol.pk]
    volumes = trade_volume_eur(user_ids=users)
    # then the completed and the open trades count for both parties, the closed ones not
    assert volumes == {
        alice.pk: _values(done, funded),
        bob.pk: _values(done, other),
        carol.pk: _values(funded, other),
    }
    assert volumes[alice.pk] == Decimal("500.00")
    assert volumes == trade_volume_eur_recount(user_ids=users)
    # and the rows left for the closed trades' values are back where they were
    assert TradeVolumeDay.objects.filter(user=alice).count() == 1


@pytest.mark.django_db
def test_the_window_is_today_and_the_thirty_whole_days_before(alice, bob):
    trade = make_trade(alice, bob, amount="0.01", price="85000")
    value = _values(trade)
    now = timezone.now()
    first = volume_day(now - timedelta(days=30))
    TradeVolumeDay.objects.update(day=first)
    assert trade_volume_eur(user_ids=[alice.pk], now=now) == {alice.pk: value}
    TradeVolumeDay.objects.update(day=first - timedelta(days=1))
    assert trade_volume_eur(user_ids=[alice.pk], now=now) == {alice.pk: Decimal("0.00")}


@pytest.mark.django_db
def test_the_migrations_backfill_counts_the_trades_of_the_window(alice, bob, carol):
    # given trades of the window (one cancelled) and one older, as before the rows were kept
    kept = [make_trade(alice, bob, amount="0.01", price="85000")]
    kept.append(make_trade(carol, bob, amount="0.02", fiat="USD", price="92000"))
    cancelled = make_trade(alice, carol, amount="0.03", price="85000")
    services.trade_cancel(trade_id=cancelled.pk, actor=carol)
    old = make_trade(alice, bob, amount="0.04", price="85000")
    Trade.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=40))
    users = [alice.pk, bob.pk, carol.pk]
    expected = trade_volume_eur_recount(user_ids=users)  # by the trades' own dates
    Trade.objects.update(value_eur=None)
    TradeVolumeDay.objects.all().delete()
    # when the migration's SQL runs
    migration = importlib.import_module("escrow.migrations.0008_trade_volume_days")
    with connection.cursor() as cursor:
        cursor.execute(migration.BACKFILL_SQL)
    # then the volumes are what the takes had counted, and only the window's trades are valued
    assert trade_volume_eur(user_ids=users) == expected
    assert expected[alice.pk] == _values(kept[0])
    assert Trade.objects.get(pk=old.pk).value_eur is None


@pytest.mark.django_db(transaction=True)
def test_takes_racing_on_one_seller_add_up(alice):
    # given twelve takers of one seller's offer, all at once
    require_postgres()
    fund(alice, "BTC", "5")
    offer = make_offer(alice, price="85000")
    takers = [UserFactory(username=f"taker{i}") for i in range(12)]
    results = run_at_once(
        [
            lambda t=t: services.trade_open(offer_id=offer.pk, taker=t, fiat_amount="50")
            for t in takers
        ]
    )
    assert [outcome(r) for r in results] == ["ok"] * 12
    # then the seller's row holds every take's value, as the trades themselves say
    users = [alice.pk, *(t.pk for t in takers)]
    assert trade_volume_eur(user_ids=[alice.pk]) == {alice.pk: Decimal("600.00")}
    assert trade_volume_eur(user_ids=users) == trade_volume_eur_recount(user_ids=users)
