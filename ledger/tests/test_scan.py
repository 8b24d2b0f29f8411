"""verify_ledger's balance replay (ledger.scan.replay_rows): the four columns by name, across
ranges of transfer ids, and through the workers' pipe; the rows it reads, by column name."""

from __future__ import annotations

import pickle
from decimal import Decimal

from ledger.scan import Balances, replay_rows, resolve

WORLD, ALICE, ESCROW = 1, 2, 3


def test_a_single_posts_and_a_pending_holds():
    # given rows of TRANSFER_SQL: id, seq, flags, amount, debit, credit, pending_id
    rows = [
        (10, 1, "single", "5.00", WORLD, ALICE, None),
        (11, 2, "pending", "2.00", ALICE, ESCROW, None),
    ]
    # when
    part = replay_rows(rows, first_id=10)
    # then
    assert part["totals"][ALICE] == Balances(
        debits_pending=Decimal("2.00"), credits_posted=Decimal("5.00")
    )
    assert part["totals"][ESCROW] == Balances(credits_pending=Decimal("2.00"))
    assert part["totals"][WORLD] == Balances(debits_posted=Decimal("5.00"))
    assert part["holds"] == {11: Decimal("2.00")}
    assert part["failures"] == []


def test_a_post_pending_releases_the_hold_and_posts():
    # given
    rows = [
        (11, 2, "pending", "2.00", ALICE, ESCROW, None),
        (12, None, "post_pending", "1.50", ALICE, ESCROW, 11),
    ]
    # when
    part = replay_rows(rows, first_id=11)
    # then
    assert part["totals"][ALICE] == Balances(
        debits_pending=Decimal("0.00"), debits_posted=Decimal("1.50")
    )
    assert part["totals"][ESCROW] == Balances(
        credits_pending=Decimal("0.00"), credits_posted=Decimal("1.50")
    )
    assert part["holds"] == {}
    assert part["unsealed"] == 1


def test_a_hold_of_an_earlier_range_is_left_to_the_caller():
    # given the hold (id 11) in the range before this one
    earlier = replay_rows([(11, 2, "pending", "2.00", ALICE, ESCROW, None)], first_id=11)
    # when
    part = replay_rows([(12, 3, "void_pending", "2.00", ALICE, ESCROW, 11)], first_id=12)
    # then
    assert part["totals"] == {}
    ((_, _, flags, amount, debit, credit, pending_id),) = part["deferred"]
    assert (debit, credit) == (ALICE, ESCROW)
    alice, escrow = earlier["totals"][ALICE], earlier["totals"][ESCROW]
    resolve(alice, escrow, flags, earlier["holds"].pop(pending_id), amount)
    assert alice == Balances()
    assert escrow == Balances()


def test_a_resolution_of_no_open_hold_fails():
    part = replay_rows([(12, 3, "post_pending", "1", ALICE, ESCROW, 12)], first_id=12)
    assert part["failures"] == [(12, 3, 12)]


def test_balances_add_and_cross_the_workers_pipe():
    # given
    total = Balances(debits_posted=Decimal("1"), credits_pending=Decimal("2"))
    # when
    total.add(Balances(Decimal("3"), Decimal("4"), Decimal("5"), Decimal("6")))
    # then
    assert total.columns() == (Decimal("3"), Decimal("5"), Decimal("7"), Decimal("6"))
    assert pickle.loads(pickle.dumps(total, protocol=pickle.HIGHEST_PROTOCOL)) == total  # noqa: S301


def test_an_orm_row_reads_as_postgresqls_texts():
    """Off PostgreSQL the entries come through the ORM: amount and created_at become the texts
    ENTRY_SQL would give (chain.ROW_COLUMNS), every other column stays."""
    import datetime as dt

    from ledger import chain
    from ledger.replay_pool import _as_text

    # given
    values = {name: f"<{name}>" for name in chain.ROW_COLUMNS}
    values["amount"] = Decimal("0.50000000")
    values["created_at"] = dt.datetime(
        2026, 1, 2, 4, 5, 6, 7, tzinfo=dt.timezone(dt.timedelta(hours=3))
    )
    # when
    row = _as_text(tuple(values[name] for name in chain.ROW_COLUMNS))
    # then
    assert dict(zip(chain.ROW_COLUMNS, row, strict=True)) == {
        **values,
        "amount": "0.50000000",
        "created_at": "2026-01-02 01:05:06.000007",
    }
