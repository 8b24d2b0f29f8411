"""Posting many transfers at once (PostgreSQL): the balances come out as the single-transfer
services leave them, and a batch the database refuses leaves nothing behind."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from conftest import require_postgres
from ledger import services
from ledger.models import Asset, LedgerAccount, Transfer
from ledger.replay import verify_ledger
from ledger.services.transfers import transfers_post_select
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db
Flags = Transfer.Flags


@pytest.fixture(autouse=True)
def _postgres():
    require_postgres()


def _balances(*accounts: LedgerAccount) -> list[tuple[Decimal, Decimal, Decimal, Decimal]]:
    rows = LedgerAccount.objects.in_bulk([a.pk for a in accounts])
    return [
        (
            rows[a.pk].debits_pending,
            rows[a.pk].debits_posted,
            rows[a.pk].credits_pending,
            rows[a.pk].credits_posted,
        )
        for a in accounts
    ]


def _spec(key: str, debit: LedgerAccount, credit: LedgerAccount, amount: str, **kw):
    return services.TransferSpec(
        idempotency_key=key,
        asset_id=debit.asset_id,
        debit_account_id=debit.pk,
        credit_account_id=credit.pk,
        amount=Decimal(amount),
        kind=kw.pop("kind", "trade_payout"),
        flags=kw.pop("flags", Flags.SINGLE),
        **kw,
    )


def test_a_batch_moves_the_balances_the_single_services_move(alice, bob):
    # given two holds on alice's account, one to be posted in part and one voided
    fund(alice, "BTC", "1")
    btc = Asset.objects.get(code="BTC")
    a = services.account_for_user(user=alice, asset=btc)
    b = services.account_for_user(user=bob, asset=btc)
    e1 = services.account_escrow(trade_id=9001, asset=btc)
    e2 = services.account_escrow(trade_id=9002, asset=btc)
    with transaction.atomic():
        h1 = services.transfer_post(
            idempotency_key="h1",
            debit=a,
            credit=e1,
            amount=Decimal("0.3"),
            kind="escrow_hold",
            pending=True,
        )
        h2 = services.transfer_post(
            idempotency_key="h2",
            debit=a,
            credit=e2,
            amount=Decimal("0.2"),
            kind="escrow_hold",
            pending=True,
        )
    before = _balances(a, b, e1, e2)

    # when one batch posts 0.25 of h1 and pays it on to bob, voids h2 and holds 0.1 more
    specs = [
        _spec(
            "p1",
            a,
            e1,
            "0.25",
            kind="escrow_hold",
            flags=Flags.POST_PENDING,
            pending_id=h1.pk,
            pending_amount=h1.amount,
        ),
        _spec("pay1", e1, b, "0.25"),
        _spec(
            "v2",
            a,
            e2,
            "0.2",
            kind="escrow_hold",
            flags=Flags.VOID_PENDING,
            pending_id=h2.pk,
            pending_amount=h2.amount,
        ),
        _spec("h3", a, e2, "0.1", kind="escrow_hold", flags=Flags.PENDING),
    ]
    with transaction.atomic():
        posted = services.transfers_post_many(specs)
    # then
    assert posted == 4
    after = _balances(a, b, e1, e2)
    changes = [
        tuple(new - old for new, old in zip(n, o, strict=True))
        for n, o in zip(after, before, strict=True)
    ]
    d = Decimal
    # [debits_pending, debits_posted, credits_pending, credits_posted] changes, as _resolve and
    # transfer_post make them: a hold resolved releases its whole amount from both accounts
    assert changes == [
        (d("-0.5") + d("0.1"), d("0.25"), 0, 0),  # alice
        (0, 0, 0, d("0.25")),  # bob
        (0, d("0.25"), d("-0.3"), d("0.25")),  # escrow 1
        (0, 0, d("-0.2") + d("0.1"), 0),  # escrow 2
    ]
    assert list(
        Transfer.objects.filter(idempotency_key__in=["p1", "pay1", "v2", "h3"])
        .order_by("pk")
        .values_list("idempotency_key", "flags", "pending_id")
    ) == [
        ("p1", Flags.POST_PENDING, h1.pk),
        ("pay1", Flags.SINGLE, None),
        ("v2", Flags.VOID_PENDING, h2.pk),
        ("h3", Flags.PENDING, None),
    ], "inserted in the batch's order"
    services.ledger_seal_pending()
    assert verify_ledger().ok


def test_shared_accounts_are_updated_apart_with_the_same_result(alice, bob):
    # given ten payouts from alice, alternately to bob and to the fee account
    fund(alice, "BTC", "1")
    btc = Asset.objects.get(code="BTC")
    a = services.account_for_user(user=alice, asset=btc)
    b = services.account_for_user(user=bob, asset=btc)
    fees = services.account_fees(asset=btc)
    select = """
        SELECT 'batch:' || n AS idempotency_key, %(asset)s::bigint AS asset_id,
               %(a)s::bigint AS debit_account_id,
               CASE WHEN n % 2 = 0 THEN %(b)s ELSE %(fees)s END::bigint AS credit_account_id,
               0.01::numeric AS amount, 'trade_payout' AS kind, 'single' AS flags,
               NULL::bigint AS pending_id, NULL::bigint AS reference, '' AS memo,
               NULL::numeric AS released, n AS ord
        FROM generate_series(1, 10) AS n
    """.replace("n % 2", "n %% 2")
    # when the batch names alice's and the fee account as shared (updated last, apart)
    with transaction.atomic():
        posted = transfers_post_select(
            select,
            {"asset": btc.pk, "a": a.pk, "b": b.pk, "fees": fees.pk},
            shared_accounts={fees.pk, a.pk},
        )
    # then every balance is right all the same
    assert posted == 10
    a.refresh_from_db(), b.refresh_from_db(), fees.refresh_from_db()
    assert (a.available, b.available, fees.balance) == (
        Decimal("0.9"),
        Decimal("0.05"),
        Decimal("0.05"),
    )


def test_a_batch_the_database_refuses_leaves_nothing(alice, bob):
    fund(alice, "BTC", "0.5")
    btc = Asset.objects.get(code="BTC")
    a = services.account_for_user(user=alice, asset=btc)
    b = services.account_for_user(user=bob, asset=btc)
    before = _balances(a, b)
    # the second transfer overdraws alice (0.3 + 0.3 > 0.5): the account UPDATE is refused
    with transaction.atomic():
        with pytest.raises(IntegrityError, match="account_no_overdraft"), transaction.atomic():
            services.transfers_post_many([_spec("o1", a, b, "0.3"), _spec("o2", a, b, "0.3")])
        assert not Transfer.objects.filter(idempotency_key__in=["o1", "o2"]).exists()
        assert _balances(a, b) == before
        # a reused idempotency key is refused by the INSERT
        services.transfers_post_many([_spec("once", a, b, "0.1")])
        with pytest.raises(IntegrityError), transaction.atomic():
            services.transfers_post_many([_spec("other", a, b, "0.1"), _spec("once", a, b, "0.1")])
    assert Transfer.objects.filter(idempotency_key__in=["once", "other"]).count() == 1
    b.refresh_from_db()
    assert b.available == Decimal("0.1")
