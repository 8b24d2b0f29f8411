"""Double entry, holds resolved once, idempotency, no overdraft: in code and in the database."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import IntegrityError, transaction

from common.errors import Conflict, InsufficientFunds, InvalidTransition, ValidationFailed
from ledger import services
from ledger.adapters import ChainAdapter
from ledger.models import Asset, Deposit, LedgerAccount, Transfer, Withdrawal
from ledger.selectors import wallet_list_for_user
from marketplace.tests.factories import fund

pytestmark = pytest.mark.django_db


def _btc() -> Asset:
    return Asset.objects.get(code="BTC")


def test_deposit_credits_from_the_world(alice):
    fund(alice, "ETH", "1.000000000000000001")  # 18 decimals, exact
    account = services.account_for_user(user=alice, asset=Asset.objects.get(code="ETH"))
    assert account.available == Decimal("1.000000000000000001")
    assert LedgerAccount.objects.get(code="world:ETH").balance == Decimal("-1.000000000000000001")


def test_moderator_confirms_a_pending_deposit_once(alice):
    deposit = Deposit.objects.create(
        user=alice, asset=_btc(), amount=Decimal("0.5"), reference="tx1"
    )
    services.deposit_confirm(deposit_id=deposit.pk, actor=None)
    with pytest.raises(InvalidTransition):
        services.deposit_confirm(deposit_id=deposit.pk, actor=None)
    assert services.account_for_user(user=alice, asset=_btc()).available == Decimal("0.5")


def test_same_idempotency_key_posts_once(alice, bob):
    fund(alice, "BTC", "1")
    a = services.account_for_user(user=alice, asset=_btc())
    b = services.account_for_user(user=bob, asset=_btc())
    for _ in range(3):
        with transaction.atomic():
            services.transfer_post(
                idempotency_key="k1", debit=a, credit=b, amount=Decimal("0.1"), kind="trade_payout"
            )
    assert Transfer.objects.filter(idempotency_key="k1").count() == 1
    b.refresh_from_db()
    assert b.available == Decimal("0.1")
    with pytest.raises(Conflict, match="different transfer"), transaction.atomic():
        services.transfer_post(
            idempotency_key="k1", debit=a, credit=b, amount=Decimal("0.2"), kind="trade_payout"
        )


def test_overdraft_refused_in_code_and_in_the_database(alice, bob):
    fund(alice, "BTC", "0.1")
    a = services.account_for_user(user=alice, asset=_btc())
    b = services.account_for_user(user=bob, asset=_btc())
    with pytest.raises(InsufficientFunds), transaction.atomic():
        services.transfer_post(
            idempotency_key="x", debit=a, credit=b, amount=Decimal("0.2"), kind="trade_payout"
        )
    # the CHECK constraint holds even for code that bypasses the service
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerAccount.objects.filter(pk=a.pk).update(debits_posted=Decimal("0.2"))


def test_a_hold_is_resolved_once_even_bypassing_the_service(alice, bob):
    fund(alice, "BTC", "1")
    a = services.account_for_user(user=alice, asset=_btc())
    b = services.account_for_user(user=bob, asset=_btc())
    with transaction.atomic():
        hold = services.transfer_post(
            idempotency_key="h",
            debit=a,
            credit=b,
            amount=Decimal("0.3"),
            kind="escrow_hold",
            pending=True,
        )
        services.transfer_post_pending(
            idempotency_key="h:post", pending=hold, amount=Decimal("0.1")
        )
    with pytest.raises(InvalidTransition, match="already resolved"), transaction.atomic():
        services.transfer_void_pending(idempotency_key="h:void", pending=hold)
    with pytest.raises(IntegrityError), transaction.atomic():
        Transfer.objects.create(
            idempotency_key="h:void2",
            asset=hold.asset,
            debit_account=a,
            credit_account=b,
            amount=hold.amount,
            kind="escrow_hold",
            flags="void_pending",
            pending=hold,
        )
    a.refresh_from_db()
    b.refresh_from_db()
    # partial post: 0.1 moved, the other 0.2 back to alice
    assert a.available == Decimal("0.9")
    assert a.debits_pending == 0
    assert b.available == Decimal("0.1")
    assert b.credits_pending == 0


def test_withdrawal_holds_at_once_then_posts(alice):
    fund(alice, "BTC", "1")
    w = services.withdrawal_request(
        user=alice, asset_code="BTC", amount="0.4", address="bc1qdestination"
    )
    wallet = wallet_list_for_user(user=alice)[0]
    assert (wallet.asset.code, wallet.available, wallet.pending_withdrawal) == (
        "BTC",
        Decimal("0.6"),
        Decimal("0.4"),
    )
    services.withdrawal_process(withdrawal_id=w.pk)  # the manual adapter: waits for a moderator
    assert Withdrawal.objects.get(pk=w.pk).status == Withdrawal.Status.SUBMITTED
    services.withdrawal_confirm(withdrawal_id=w.pk, txid="chain-tx", actor=None)
    wallet = wallet_list_for_user(user=alice)[0]
    assert (wallet.available, wallet.pending_withdrawal) == (Decimal("0.6"), 0)
    assert LedgerAccount.objects.get(code="world:BTC").balance == Decimal("-0.6")
    with pytest.raises(InvalidTransition):
        services.withdrawal_reject(withdrawal_id=w.pk, reason="late", actor=None)


def test_rejected_withdrawal_returns_the_hold(alice):
    fund(alice, "BTC", "1")
    w = services.withdrawal_request(
        user=alice, asset_code="BTC", amount="0.4", address="bc1qdestination"
    )
    services.withdrawal_reject(withdrawal_id=w.pk, reason="address blacklisted", actor=None)
    assert services.account_for_user(user=alice, asset=_btc()).available == Decimal("1")


class SentAdapter(ChainAdapter):
    def validate_address(self, *, asset, address):
        pass

    def submit_withdrawal(self, *, withdrawal):
        from ledger.adapters import SubmitResult

        return (
            SubmitResult(status="sent", txid="0xabc")
            if withdrawal.amount < 1
            else SubmitResult(status="failed", reason="node refused")
        )


def test_an_automatic_adapter_posts_or_voids(alice, monkeypatch):
    monkeypatch.setattr("ledger.services.funds.get_chain_adapter", lambda asset=None: SentAdapter())
    fund(alice, "BTC", "3")
    ok = services.withdrawal_request(user=alice, asset_code="BTC", amount="0.5", address="a")
    bad = services.withdrawal_request(user=alice, asset_code="BTC", amount="2", address="a")
    assert services.withdrawal_process(withdrawal_id=ok.pk).status == Withdrawal.Status.COMPLETED
    assert services.withdrawal_process(withdrawal_id=bad.pk).status == Withdrawal.Status.FAILED
    assert services.account_for_user(user=alice, asset=_btc()).available == Decimal("2.5")


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"amount": "2"}, InsufficientFunds, "amount"),
        ({"amount": "0"}, ValidationFailed, "amount"),
        ({"amount": "0.123456789"}, ValidationFailed, "amount"),
        ({"amount": "0.1", "address": ""}, ValidationFailed, "address"),
        ({"amount": "0.1", "address": "bad address!"}, ValidationFailed, "address"),
        ({"amount": "0.1", "asset_code": "NOPE"}, ValidationFailed, "asset"),
    ],
)
def test_bad_withdrawals_change_nothing(alice, kwargs, error, field):
    fund(alice, "BTC", "1")
    args = {"asset_code": "BTC", "address": "bc1qdestination", **kwargs}
    with pytest.raises(error) as err:
        services.withdrawal_request(user=alice, **args)
    assert field in err.value.fields
    assert not Withdrawal.objects.exists()
    assert services.account_for_user(user=alice, asset=_btc()).available == Decimal("1")


def test_credit_command(alice, capsys):
    call_command("credit", "alice", "usdt", "250.5")
    assert "credited 250.5 USDT to alice" in capsys.readouterr().out
    assert services.account_for_user(
        user=alice, asset=Asset.objects.get(code="USDT")
    ).available == Decimal("250.5")


def test_accounts_ensure_creates_what_is_missing_and_reads_the_rest_in_one_query(alice, bob):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    btc, eth = _btc(), Asset.objects.get(code="ETH")
    LedgerAccount.objects.filter(code__in=["fees:BTC", "fees:ETH"]).delete()
    fund(alice, "BTC", "1")  # alice has a BTC account; bob none, and no fee accounts yet
    # when a release makes sure of bob's BTC account and the BTC fee account
    services.accounts_ensure(users={(bob.pk, btc.pk), (alice.pk, btc.pk)}, fees={btc.pk})
    # then both exist (alice's untouched), and nothing else was made
    assert LedgerAccount.objects.filter(kind="user", user=bob, asset=btc).count() == 1
    assert LedgerAccount.objects.filter(kind="fees", code="fees:BTC").count() == 1
    assert not LedgerAccount.objects.filter(code="fees:ETH").exists()
    assert LedgerAccount.objects.filter(kind="user", user=alice, asset=btc).count() == 1
    # and once they all exist, making sure of them again is one query, creating nothing
    before = LedgerAccount.objects.count()
    with CaptureQueriesContext(connection) as queries:
        services.accounts_ensure(users={(bob.pk, btc.pk)}, fees={btc.pk})
        services.accounts_ensure(users={(alice.pk, btc.pk)}, fees=set())
    assert len(queries) == 2
    assert LedgerAccount.objects.count() == before
    # another asset's are told apart: bob's ETH account is made, not confused with his BTC one
    services.accounts_ensure(users={(bob.pk, eth.pk)}, fees=set())
    assert LedgerAccount.objects.filter(kind="user", user=bob, asset=eth).count() == 1


def test_a_transfer_with_a_new_key_is_not_looked_up_but_its_key_stays_unique(alice):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    fund(alice, "BTC", "1")
    btc = _btc()
    debit = services.account_for_user(user=alice, asset=btc)
    credit = services.account_fees(asset=btc)

    def post() -> None:
        services.transfer_post(
            idempotency_key="new:1",
            debit=debit,
            credit=credit,
            amount=Decimal("0.1"),
            kind="trade_fee",
            new_key=True,
        )

    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            post()
        assert not [q for q in queries if 'FROM "ledger_transfer"' in q["sql"]]
    # a caller wrong about its key: the unique index refuses the second one
    with pytest.raises(IntegrityError), transaction.atomic():
        post()
    assert Transfer.objects.filter(idempotency_key="new:1").count() == 1
