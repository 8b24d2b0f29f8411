"""The traders' counts the public stats read (TraderCount), kept by PostgreSQL's triggers on
escrow_trade and escrow_feedback and folded on the beat: equal to counting the trades and the
ratings, whatever moves them (the services, the settlement's batch SQL, a plain UPDATE), folded
or not, with a link found later; the migration's backfill; trades finishing at once between the
same two traders, next to a fold."""

from __future__ import annotations

import importlib
import itertools
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts import services as accounts
from accounts.tests.factories import UserFactory, complete
from conftest import require_postgres
from escrow import services, tasks
from escrow.models import Settlement, Trade, TraderCount, TraderCountChange
from escrow.selectors import trader_stats
from escrow.selectors.stats import (
    FINISHED,
    feedback_summary,
    feedback_summary_recount,
    trader_counts,
    trader_counts_recount,
)
from escrow.tests.test_concurrency import outcome, run_at_once
from marketplace.tests.factories import fund, make_offer, make_trade

MIGRATION = importlib.import_module("escrow.migrations.0010_trader_counts")
HOME = "203.0.113.7"


@pytest.fixture(autouse=True)
def _takes(settings):
    settings.TAKES_PER_MAKER_PER_MINUTE = 1000


def _same(*users) -> dict[int, tuple[int, int]]:
    """The kept counts, held to the recount; returned."""
    ids = [u.pk for u in users]
    kept = trader_counts(user_ids=ids)
    assert kept == trader_counts_recount(user_ids=ids)
    return kept


def test_the_migration_counts_the_states_the_stats_count():
    assert {s.strip(" '") for s in MIGRATION.FINISHED["buyer"].split(",")} == set(FINISHED["buyer"])
    assert {s.strip(" '") for s in MIGRATION.FINISHED["seller"].split(",")} == set(
        FINISHED["seller"]
    )


@pytest.mark.django_db
def test_every_way_a_trade_ends_is_counted_folded_or_not(settings, alice, bob, carol):
    # given trades between the three that complete, are cancelled, expire, or still run
    fund(alice, "BTC", "2")
    offer = make_offer(alice, payment_window_minutes=30)
    complete(services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01"))
    cancelled = services.trade_open(offer_id=offer.pk, taker=bob, amount="0.01")
    services.trade_cancel(trade_id=cancelled.pk, actor=bob, cancel_reason="changed_mind")
    expired = services.trade_open(offer_id=offer.pk, taker=carol, amount="0.01")
    Trade.objects.filter(pk=expired.pk).update(payment_deadline=timezone.now())
    assert services.trades_expire_overdue() == 1
    services.trade_open(offer_id=offer.pk, taker=carol, amount="0.01")
    complete(make_trade(carol, bob))
    # then the counts are the trades' own, before the fold and after it
    assert TraderCountChange.objects.exists()
    before = _same(alice, bob, carol)
    assert before[alice.pk] == (1, 1)  # a seller fails only by a split
    assert before[bob.pk] == (2, 3)  # his cancel counts against him
    assert before[carol.pk] == (1, 2)  # her expiry too; her sale to bob is done
    assert tasks.fold_trader_counts() > 0  # as the beat runs it
    assert settings.CELERY_BEAT_SCHEDULE["escrow-fold-trader-counts"]["task"] == (
        tasks.fold_trader_counts.name
    )
    assert not TraderCountChange.objects.exists()
    assert _same(alice, bob, carol) == before
    assert TraderCount.objects.filter(user=alice).count() == 1  # a row per counterparty
    assert trader_stats(user=bob).trades == 2


@pytest.mark.django_db
def test_any_statement_that_moves_a_trade_is_counted(alice, bob):
    # given trades the services opened; the states a dispute ends in, set by plain UPDATEs
    trades = [make_trade(alice, bob) for _ in range(4)]
    ids = [t.pk for t in trades]
    for state in ("refunded", "split", "completed", "cancelled", "funded"):
        Trade.objects.filter(pk__in=ids[:2]).update(state=state)
        Trade.objects.filter(pk=ids[3]).update(state="split")
        _same(alice, bob)
    services.trader_counts_fold()
    Trade.objects.filter(pk__in=ids).update(state="completed")
    assert _same(alice, bob)[alice.pk] == (4, 4)
    # and a deleted trade leaves the counts with it
    Trade.objects.filter(pk=ids[0]).delete()
    assert _same(alice, bob)[bob.pk] == (3, 3)


@pytest.mark.django_db
def test_a_settlement_batch_is_counted_in_one_statement(alice, bob, carol):
    trades = [make_trade(alice, buyer) for buyer in (bob, carol, bob)]
    for trade in trades:
        services.trade_mark_paid(trade_id=trade.pk, actor=trade.buyer)
        services.escrow_release(trade_id=trade.pk, actor=alice)
    assert (
        services.settlements_execute_many(
            settlement_ids=list(Settlement.objects.values_list("pk", flat=True)), batch_size=10
        )
        == 3
    )
    assert _same(alice, bob, carol) == {alice.pk: (3, 3), bob.pk: (2, 2), carol.pk: (1, 1)}


@pytest.mark.django_db
def test_a_link_found_later_takes_the_pairs_trades_out(settings, alice, bob, carol):
    complete(make_trade(alice, bob))
    services.trader_counts_fold()
    complete(make_trade(alice, bob))  # one folded, one not
    complete(make_trade(alice, carol))
    assert trader_counts(user_ids=[alice.pk]) == {alice.pk: (3, 3)}
    accounts.account_links_record(user=alice, ip=HOME, device=None)
    accounts.account_links_record(user=bob, ip=HOME, device=None)
    assert _same(alice, bob, carol) == {alice.pk: (1, 1), bob.pk: (0, 0), carol.pk: (1, 1)}
    assert trader_stats(user=alice).trades == 1  # one trader's stats: a statement built once
    # and an address shared by more accounts than LINK_IP_MAX_USERS links nobody: read again
    settings.LINK_IP_MAX_USERS = 1
    assert trader_stats(user=alice).trades == 3
    assert _same(alice, bob) == {alice.pk: (3, 3), bob.pk: (2, 2)}


@pytest.mark.django_db
def test_ratings_are_counted_folded_or_not_and_a_linked_authors_left_out(alice, bob, carol):
    # given alice's sales to bob (two) and carol (one), each rated by the buyer
    trades = [make_trade(alice, buyer) for buyer in (bob, bob, carol)]
    for trade, rating in zip(trades, ("positive", "negative", "positive"), strict=True):
        complete(trade)
        services.feedback_leave(trade_id=trade.pk, actor=trade.buyer, rating=rating)
    services.feedback_leave(trade_id=trades[2].pk, actor=alice, rating="negative")
    # then each trader's ratings are the feedback's own, before and after the fold
    for fold in (False, True):
        if fold:
            services.trader_counts_fold()
        for user in (alice, bob, carol):
            assert feedback_summary(user=user) == feedback_summary_recount(user=user)
        assert feedback_summary(user=alice) == {"positive": 2, "negative": 1}
        assert feedback_summary(user=carol) == {"positive": 0, "negative": 1}
    # and a reply changes no count
    reply = trades[1].feedback.get()
    services.feedback_reply(feedback_id=reply.pk, actor=alice, text="You never paid on time.")
    assert not TraderCountChange.objects.exists()
    # and once bob turns out to share alice's address, his ratings of her leave her summary
    accounts.account_links_record(user=alice, ip=HOME, device=None)
    accounts.account_links_record(user=bob, ip=HOME, device=None)
    assert feedback_summary(user=alice) == {"positive": 1, "negative": 0}
    assert feedback_summary(user=alice) == feedback_summary_recount(user=alice)


@pytest.mark.django_db
def test_the_stats_read_the_counts_in_one_query(alice, bob, django_assert_num_queries):
    complete(make_trade(alice, bob))
    with django_assert_num_queries(1):
        trader_counts(user_ids=[alice.pk, bob.pk])
    assert trader_counts(user_ids=[]) == {}


@pytest.mark.django_db
def test_the_migrations_backfill_counts_the_trades_before_it(alice, bob, carol):
    # given finished trades and a rating, as before the counts were kept
    rated = make_trade(alice, bob)
    complete(rated)
    services.feedback_leave(trade_id=rated.pk, actor=alice, rating="positive")
    services.trade_cancel(trade_id=make_trade(carol, bob).pk, actor=bob)
    make_trade(carol, alice)
    old = make_trade(alice, carol)
    Trade.objects.filter(pk=old.pk).update(
        state="completed", created_at=timezone.now() - timedelta(days=900)
    )
    expected = trader_counts_recount(user_ids=[alice.pk, bob.pk, carol.pk])
    TraderCount.objects.all().delete()
    TraderCountChange.objects.all().delete()
    # when the migration's SQL runs
    with connection.cursor() as cursor:
        cursor.execute(MIGRATION.BACKFILL_SQL)
    # then the counts are the trades' and the ratings the feedback's
    assert _same(alice, bob, carol) == expected
    assert expected[alice.pk] == (2, 2)
    assert feedback_summary(user=bob) == {"positive": 1, "negative": 0}


@pytest.mark.django_db(transaction=True)
def test_trades_of_two_traders_ending_at_once_beside_a_fold_add_up(alice, bob):
    # given eight trades between alice and bob: four paid and released, four still funded
    require_postgres()
    trades = [make_trade(alice, bob) for _ in range(8)]
    for trade in trades[:4]:
        services.trade_mark_paid(trade_id=trade.pk, actor=bob)
        services.escrow_release(trade_id=trade.pk, actor=alice)
    settlements = list(Settlement.objects.values_list("pk", flat=True))
    # when the four settle in one batch, the others are cancelled one by one, and the counts
    # are folded, all at once (the batch locks trades and then accounts; a cancel the seller's
    # account and then its trade)
    results = run_at_once(
        [
            lambda: services.settlements_execute_many(settlement_ids=settlements, batch_size=10),
            *(lambda t=t: services.trade_cancel(trade_id=t.pk, actor=bob) for t in trades[4:]),
            services.trader_counts_fold,
        ]
    )
    # then nothing deadlocked and every trade is counted once
    assert [outcome(r) for r in results] == ["ok"] * 6
    assert _same(alice, bob) == {alice.pk: (4, 4), bob.pk: (4, 8)}
    services.trader_counts_fold()
    assert _same(alice, bob) == {alice.pk: (4, 4), bob.pk: (4, 8)}


@pytest.mark.django_db(transaction=True)
def test_many_pairs_finishing_at_once_add_up(alice):
    require_postgres()
    buyers = [UserFactory(username=f"buyer{i}") for i in range(6)]
    trades = [make_trade(alice, b) for b, _ in itertools.product(buyers, range(2))]
    results = run_at_once(
        [lambda t=t: complete(t) for t in trades] + [services.trader_counts_fold] * 2
    )
    assert [outcome(r) for r in results] == ["ok"] * (len(trades) + 2)
    assert _same(alice, *buyers)[alice.pk] == (12, 12)
