"""common.prepared: a read built once per process gives what Django's queryset gives, for every
value, in one statement; it refuses what it cannot bind and a build whose shape follows its values;
it locks only inside a transaction, and its first calls may race. Its UPDATEs and INSERTs write
what Django's save(update_fields), QuerySet.update and bulk_create write (issue 17)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from django.db import DatabaseError, IntegrityError, connection, connections, transaction
from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Concat
from django.db.models.signals import post_save
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common.prepared import PreparedRead, PreparedRows, insert, save_fields, update_by_pk
from escrow import services
from escrow.models import EscrowEvent, Trade
from escrow.selectors import trade_for_answer
from ledger.models import Transfer
from marketplace.models import Offer
from marketplace.tests.factories import fund, make_offer, make_trade

pytestmark = pytest.mark.django_db

RELATED = ("asset", "fiat", "buyer", "seller", "payment_method")


def _trades(trade_id):
    return Trade.objects.select_related(*RELATED).filter(pk=trade_id)


def _snapshot(trade: Trade) -> dict:
    """Every column of the trade and of each row it joins, and whether each join is loaded."""
    shown = {f.attname: getattr(trade, f.attname) for f in Trade._meta.concrete_fields}
    for name in RELATED:
        field = Trade._meta.get_field(name)
        assert field.is_cached(trade), name
        related = getattr(trade, name)
        shown[name] = (
            None
            if related is None
            else {f.attname: getattr(related, f.attname) for f in related._meta.concrete_fields}
        )
    return shown


def test_it_gives_what_djangos_queryset_gives_for_each_value(alice, bob, carol):
    trades = [make_trade(alice, bob), make_trade(alice, carol), make_trade(carol, bob)]
    read = PreparedRead(_trades)
    for trade in trades + trades[::-1]:  # the second call onwards reuses the first's statement
        with CaptureQueriesContext(connection) as queries:
            (got,) = read(trade.pk)
        assert len(queries) == 1
        (expected,) = _trades(trade.pk)
        assert _snapshot(got) == _snapshot(expected)
        assert got._state.db == "default"
        assert not got._state.adding
        # Nothing left to read: the joins are loaded.
        with CaptureQueriesContext(connection) as queries:
            loaded = (got.buyer.username, got.asset.code, got.fiat.code)
        assert all(loaded)
        assert len(queries) == 0
    assert read(10**9) == []
    assert read.first(10**9) is None
    with pytest.raises(Trade.DoesNotExist):
        read.one(10**9)


def test_annotations_ordering_strings_and_several_rows(alice, bob):
    fund(alice)
    fund(bob)
    make_offer(alice, price="80000")
    make_offer(alice, price="81000")
    make_offer(bob, price="79000")

    def build(username, fiat_code):
        return (
            Offer.objects.filter(maker__username=username, fiat__code=fiat_code)
            .annotate(label=Concat(F("maker__username"), Value(":"), F("side")))
            .order_by("-price")
        )

    read = PreparedRead(build)
    for who in ("alice", "bob", "alice", "nobody"):
        got = read(who, "EUR")
        expected = list(build(who, "EUR"))
        assert [(o.pk, o.price, o.label) for o in got] == [
            (o.pk, o.price, o.label) for o in expected
        ]
    assert len(read("alice", "EUR")) == 2


def test_times_two_arguments_in_one_lookup_and_a_slice(alice, bob, carol):
    trades = [make_trade(alice, bob), make_trade(alice, carol), make_trade(carol, bob)]
    Trade.objects.filter(pk=trades[0].pk).update(created_at=timezone.now() - timedelta(hours=1))

    def build(first, second, since):
        return Trade.objects.filter(
            seller_id__in=[first, second], created_at__gte=since, updated_at__gte=since
        ).order_by("pk")[:2]

    read = PreparedRead(build)
    now = timezone.now()
    for args in (
        (alice.pk, carol.pk, now - timedelta(minutes=5)),
        (alice.pk, carol.pk, now - timedelta(days=1)),
        (bob.pk, carol.pk, now - timedelta(days=1)),
        (alice.pk, bob.pk, now + timedelta(minutes=1)),
    ):
        assert [t.pk for t in read(*args)] == [t.pk for t in build(*args)]
    assert [t.pk for t in read(alice.pk, carol.pk, now - timedelta(minutes=5))] == [
        trades[1].pk,
        trades[2].pk,
    ]


@pytest.mark.django_db(transaction=True)
def test_a_locking_read_needs_a_transaction(alice, bob):
    trade = make_trade(alice, bob)
    read = PreparedRead(lambda pk: Trade.objects.select_for_update().filter(pk=pk))
    with pytest.raises(TransactionManagementError):
        read(trade.pk)
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        assert read.one(trade.pk).pk == trade.pk
    assert "FOR UPDATE" in queries[0]["sql"]


def test_what_it_cannot_bind_is_refused(alice, bob):
    trade = make_trade(alice, bob)
    with pytest.raises(TypeError, match="ints, strings and aware datetimes only"):
        PreparedRead(lambda flag: Trade.objects.filter(cancel_counted=flag))(True)
    with pytest.raises(TypeError, match="ints, strings and aware datetimes only"):
        PreparedRead(lambda ids: Trade.objects.filter(pk__in=ids))([trade.pk])
    with pytest.raises(TypeError, match="ints, strings and aware datetimes only"):
        PreparedRead(lambda at: Trade.objects.filter(created_at__gte=at))(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="no prefetch_related"):
        PreparedRead(lambda pk: Trade.objects.prefetch_related("events").filter(pk=pk))(trade.pk)
    with pytest.raises(ValueError, match="not a whole parameter"):
        PreparedRead(lambda text: Trade.objects.filter(terms__contains=text))("x")
    read = PreparedRead(lambda pk: Trade.objects.filter(pk=pk))
    read(trade.pk)
    with pytest.raises(TypeError, match="int argument"):
        read(str(trade.pk))


def test_a_build_whose_shape_follows_its_values_fails_the_check(alice, bob, settings):
    trade = make_trade(alice, bob)
    settings.PREPARED_READS_CHECK = True  # as in every test (config/settings/test.py)

    def build(pk):
        qs = Trade.objects.filter(pk=pk)
        return qs.filter(amount__gt=0) if pk > 0 else qs

    read = PreparedRead(build)  # prepared with a negative stand-in: no amount filter
    with pytest.raises(AssertionError, match="depends on its values"):
        read(trade.pk)


def test_the_answer_of_a_trade_is_its_parties_only(alice, bob, carol):
    trade = make_trade(alice, bob)
    services.trade_mark_paid(trade_id=trade.pk, actor=bob)
    with CaptureQueriesContext(connection) as queries:
        got = trade_for_answer(trade_id=trade.pk, user=bob)
        events = list(got.events.all())
    assert len(queries) == 2  # the trade with its joins, its events with their actors
    assert [e.new_state for e in events] == ["funded", "paid"]
    assert [e.pk for e in events] == list(
        EscrowEvent.objects.filter(trade=trade)
        .order_by("created_at", "id")
        .values_list("pk", flat=True)
    )
    assert all(e.trade is got for e in events)
    with pytest.raises(Exception, match="not found"):
        trade_for_answer(trade_id=trade.pk, user=carol)


@pytest.mark.django_db(transaction=True)
def test_first_calls_racing_in_threads_each_get_their_own_rows(alice, bob, carol):
    trades = [make_trade(alice, bob), make_trade(alice, carol), make_trade(carol, bob)] * 3
    read = PreparedRead(_trades)
    start = threading.Barrier(len(trades))
    got: dict[int, int] = {}
    errors: list[BaseException] = []

    def run(i: int, trade_id: int) -> None:
        try:
            start.wait(timeout=10)
            got[i] = read.one(trade_id).pk
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, t.pk)) for i, t in enumerate(trades)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert got == {i: t.pk for i, t in enumerate(trades)}


def test_rows_of_a_values_read_are_tuples_in_select_order(alice, bob):
    trades = [make_trade(alice, bob, amount="0.01"), make_trade(alice, bob, amount="0.02")]

    def build(seller_id):
        return (
            Trade.objects.filter(seller_id=seller_id)
            .values("asset_id", "state")
            .annotate(total=Sum("amount"))
            .order_by()
        )

    read = PreparedRows(build)
    assert read(alice.pk) == [(r["asset_id"], r["state"], r["total"]) for r in build(alice.pk)]
    assert read(alice.pk)[0][2] == sum(t.amount for t in trades)
    assert read(bob.pk) == []
    with pytest.raises(TypeError, match="PreparedRows"):
        PreparedRead(build)(alice.pk)  # type: ignore[arg-type]


def test_an_int_the_backend_types_is_bound_and_a_union_is_one_statement(alice, bob, carol):
    # given a build whose int argument is compared to a subquery's count (psycopg's Int4: the
    # backend types it) inside both halves of a UNION ALL
    for seller in (alice, alice, bob):
        make_trade(seller, carol)

    def build(buyer_id, at_least):
        sellers = (
            Trade.objects.filter(buyer_id=OuterRef("buyer_id"), seller_id=OuterRef("seller_id"))
            .order_by()
            .values("buyer_id")
            .annotate(n=Count("*"))
            .values("n")
        )
        part = (
            Trade.objects.filter(buyer_id=buyer_id)
            .annotate(n=Subquery(sellers, output_field=IntegerField()))
            .filter(n__gte=at_least)
            .values_list("seller_id", flat=True)
            .order_by()
        )
        return part.union(part, all=True)

    read = PreparedRows(build)
    # then each call binds both values, as Django's own statement does
    for at_least, sellers in ((1, [alice.pk] * 2 + [bob.pk]), (2, [alice.pk] * 2), (3, [])):
        assert sorted(row[0] for row in read(carol.pk, at_least)) == sorted(sellers * 2)
        assert sorted(row[0] for row in read(carol.pk, at_least)) == sorted(
            build(carol.pk, at_least)
        )
    assert read(alice.pk, 1) == []


# --- writes: save_fields and update_by_pk ---


def test_save_fields_writes_those_fields_alone_as_djangos_save(alice, bob):
    trade = make_trade(alice, bob)
    before = Trade.objects.get(pk=trade.pk)
    trade.state = "paid"
    trade.terms = "not saved"
    with CaptureQueriesContext(connection) as queries:
        save_fields(trade, ["state", "updated_at"])
    assert len(queries) == 1
    assert queries[0]["sql"].startswith('UPDATE "escrow_trade" SET "state" = ')
    after = Trade.objects.get(pk=trade.pk)
    assert after.state == "paid"
    assert after.terms == before.terms  # not among the fields
    assert after.updated_at > before.updated_at  # auto_now, as save() sets it
    assert after.updated_at == trade.updated_at


def test_save_fields_takes_a_foreign_key_by_name_or_attname(alice, bob):
    trade = make_trade(alice, bob)
    hold = trade.escrow_hold
    trade.escrow_hold = None
    save_fields(trade, ["escrow_hold"])
    assert Trade.objects.get(pk=trade.pk).escrow_hold_id is None
    trade.escrow_hold_id = hold.pk
    save_fields(trade, ["escrow_hold_id"])
    assert Trade.objects.get(pk=trade.pk).escrow_hold_id == hold.pk
    with pytest.raises(ValueError, match="non-key"):
        save_fields(trade, ["id"])
    with pytest.raises(ValueError, match="non-key"):
        save_fields(trade, ["events"])


def test_save_fields_of_a_row_gone_fails_as_djangos(alice, bob):
    trade = make_trade(alice, bob)
    event = EscrowEvent.objects.filter(trade=trade).first()
    EscrowEvent.objects.filter(pk=event.pk).delete()
    event.reason = "gone"
    with pytest.raises(DatabaseError, match="did not affect any rows"):
        save_fields(event, ["reason"])


def test_a_model_with_save_receivers_is_saved_by_django(alice, bob):
    trade = make_trade(alice, bob)
    seen: list[tuple[str, object]] = []

    def receiver(sender, instance, update_fields, **kwargs):
        seen.append((instance.state, sorted(update_fields)))

    post_save.connect(receiver, sender=Trade, dispatch_uid="test-prepared")
    try:
        trade.state = "paid"
        save_fields(trade, ["state"])
    finally:
        post_save.disconnect(dispatch_uid="test-prepared", sender=Trade)
    assert seen == [("paid", ["state"])]
    assert Trade.objects.get(pk=trade.pk).state == "paid"


def test_update_by_pk_is_querysets_update(alice, bob):
    trade = make_trade(alice, bob)
    before = Trade.objects.get(pk=trade.pk)
    assert update_by_pk(Trade, trade.pk, terms="new terms", cancel_counted=True) == 1
    after = Trade.objects.get(pk=trade.pk)
    assert (after.terms, after.cancel_counted) == ("new terms", True)
    assert after.updated_at == before.updated_at  # as QuerySet.update: no auto_now
    assert update_by_pk(Trade, 10**9, terms="x") == 0


# --- writes: insert ---


def _columns(obj) -> dict:
    return {
        f.attname: getattr(obj, f.attname)
        for f in type(obj)._meta.concrete_fields
        if f.attname not in ("id", "created_at")
    }


def test_insert_writes_what_djangos_create_writes(alice, bob):
    trade = make_trade(alice, bob)
    mine = EscrowEvent(trade=trade, old_state="funded", new_state="paid", actor=bob, reason="r")
    with CaptureQueriesContext(connection) as queries:
        (got,) = insert([mine])
    assert got is mine
    assert len(queries) == 1
    assert queries[0]["sql"].startswith('INSERT INTO "escrow_escrowevent"')
    assert mine.pk is not None
    assert not mine._state.adding
    assert mine._state.db == "default"
    djangos = EscrowEvent.objects.create(
        trade=trade, old_state="funded", new_state="paid", actor=bob, reason="r"
    )
    stored, twin = EscrowEvent.objects.get(pk=mine.pk), EscrowEvent.objects.get(pk=djangos.pk)
    assert _columns(stored) == _columns(twin)
    assert stored.created_at is not None  # auto_now_add, as Django's pre_save sets it
    assert stored.created_at == mine.created_at


def test_insert_of_several_rows_sets_each_its_key_in_order(alice, bob):
    trade = make_trade(alice, bob)
    rows = [
        EscrowEvent(trade=trade, old_state="", new_state=str(i), actor=alice, reason=f"n{i}")
        for i in range(3)
    ]
    with CaptureQueriesContext(connection) as queries:
        insert(rows)
    assert len(queries) == 1
    for row in rows:
        assert EscrowEvent.objects.get(pk=row.pk).reason == row.reason
    assert insert([]) == []
    with pytest.raises(TypeError, match="one model"):
        insert([EscrowEvent(trade=trade, new_state="x"), Trade()])


def test_insert_breaking_a_unique_index_fails_as_djangos_and_changes_nothing(alice, bob):
    trade = make_trade(alice, bob)
    before = Transfer.objects.count()
    twin = Transfer.objects.get(pk=trade.escrow_hold_id)
    twin.pk = None
    twin._state.adding = True
    with pytest.raises(IntegrityError), transaction.atomic():
        insert([twin])  # the same idempotency key
    assert Transfer.objects.count() == before


def test_insert_leaves_to_django_what_django_must_write(alice, bob):
    trade = make_trade(alice, bob)
    seen: list[int] = []

    def receiver(sender, instance, created, **kwargs):
        seen.append(instance.pk)

    post_save.connect(receiver, sender=EscrowEvent, dispatch_uid="test-prepared-insert")
    try:
        (one,) = insert([EscrowEvent(trade=trade, new_state="x", actor=alice)])
    finally:
        post_save.disconnect(dispatch_uid="test-prepared-insert", sender=EscrowEvent)
    assert seen == [one.pk]  # one row: saved by Django, its receivers told
    # A value that is an expression: Django's bulk_create writes it.
    (expr,) = insert([EscrowEvent(trade=trade, new_state="y", reason=Value("from SQL"))])
    assert EscrowEvent.objects.get(pk=expr.pk).reason == "from SQL"


def test_loaded_events_keep_their_relation_for_later_filters(alice, bob, carol):
    mine = make_trade(alice, bob)
    make_trade(alice, carol)  # another trade's events must never show through mine
    services.trade_mark_paid(trade_id=mine.pk, actor=bob)
    got = trade_for_answer(trade_id=mine.pk, user=bob)
    with CaptureQueriesContext(connection) as queries:
        assert [e.new_state for e in got.events.all()] == ["funded", "paid"]
    assert len(queries) == 0  # loaded
    assert got.events.get(new_state="funded").trade_id == mine.pk
    assert got.events.filter(new_state="funded").count() == 1


def test_an_id_beyond_any_column_is_answered_as_django_answers(alice, bob):
    trade = make_trade(alice, bob)
    huge = 626440530711019782144  # what the schema fuzzer sent as a trade id
    read = PreparedRead(lambda pk: Trade.objects.filter(pk=pk))
    assert read(trade.pk) == [trade]
    assert read(huge) == []
    assert read.first(-huge) is None
    below = PreparedRead(lambda pk: Trade.objects.filter(pk__lt=pk).order_by("pk"))
    assert below(huge) == [trade]  # everything is below it, as Django says
    rows = PreparedRows(lambda pk: Trade.objects.filter(pk__lt=pk).values("pk", "state"))
    assert rows(huge) == [(trade.pk, trade.state)]
    with pytest.raises(Exception, match="not found"):
        trade_for_answer(trade_id=huge, user=bob)
