"""Withdrawals on a real local Ethereum node (Anvil): the sequencer signs once, broadcasts,
follows to EVM_CONFIRMATIONS and posts; survives a SIGKILL after signing; replaces a stuck
transaction; waits for a hot wallet that is too low; and racing requests never overdraw."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connection, connections
from eth_account import Account

from common.errors import InsufficientFunds, ValidationFailed
from common.transactions import durable_atomic
from ledger import alerts, services
from ledger.evm import adapter as evm_adapter
from ledger.evm.fees import ETH_TRANSFER_GAS, gas_quote, wei_to_eth
from ledger.evm.models import ChainTransaction
from ledger.evm.sequencer import replace, sequencer_run
from ledger.models import Asset, LedgerAccount, Transfer, Withdrawal
from ledger.services import funds

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
TX = ChainTransaction


@pytest.fixture
def chain(evm, refdata, monkeypatch, settings):
    """The node, with the sequencer run by the test itself (no broker message is sent)."""
    monkeypatch.setattr(funds, "_queue_withdrawal", lambda withdrawal_id: None)
    monkeypatch.setattr(evm_adapter, "_wake_sequencer", lambda: None)
    settings.EVM_STUCK_AFTER_SECONDS = 3600
    for code in ("ETH", "USDT"):
        alerts.moderators_alert_clear(key=f"hot-wallet-low:{code}")
    cache.clear()
    return evm


def credit(user, code: str, amount: str) -> None:
    """What the deposit watcher posts for a confirmed deposit: custody:X:deposits -> the user."""
    asset = Asset.objects.get(code=code)
    with durable_atomic():
        services.transfer_post(
            idempotency_key=f"test-deposit:{uuid.uuid4().hex}",
            debit=services.account_custody(asset=asset, place="deposits"),
            credit=services.account_for_user(user=user, asset=asset),
            amount=Decimal(amount),
            kind=Transfer.Kind.DEPOSIT,
        )


def request(user, code: str, amount: str, address: str) -> Withdrawal:
    """The user asks; the withdrawal worker hands it to the adapter (SUBMITTED, queued)."""
    withdrawal = services.withdrawal_request(
        user=user, asset_code=code, amount=amount, address=address
    )
    return services.withdrawal_process(withdrawal_id=withdrawal.pk)


def available(user, code: str) -> Decimal:
    return LedgerAccount.objects.get(user=user, asset__code=code).available


def account(code: str) -> LedgerAccount:
    return LedgerAccount.objects.get(code=code)


def fresh_address() -> str:
    return Account.create().address


def test_an_eth_withdrawal_is_broadcast_mined_confirmed_and_posted(chain, alice):
    # given alice holds 2 ETH and the hot wallet 100
    credit(alice, "ETH", "2")
    dest = fresh_address()
    hot_before = chain.eth_balance(chain.hot.address)
    nonce_before = chain.w3.eth.get_transaction_count(chain.hot.address)
    # when she withdraws 1.5 ETH: amount + the quoted gas are held at once
    quote = gas_quote()
    w = request(alice, "ETH", "1.5", dest.lower())
    assert w.status == Withdrawal.Status.SUBMITTED
    assert w.fee == wei_to_eth(ETH_TRANSFER_GAS * quote.max_fee_per_gas) > 0
    assert available(alice, "ETH") == Decimal("0.5") - w.fee
    # and the sequencer signs and broadcasts it (the node mines it at once)
    report = sequencer_run()
    tx = ChainTransaction.objects.get(withdrawal=w)
    assert report.sent == [tx.pk]
    assert tx.status == TX.Status.BROADCAST
    assert tx.raw_tx.startswith("0x02")  # an EIP-1559 transaction, stored
    assert chain.eth_balance(dest) == Decimal("1.5")
    # then it is not posted before EVM_CONFIRMATIONS (2) blocks hold it
    sequencer_run()
    tx.refresh_from_db()
    assert tx.status == TX.Status.MINED
    assert Withdrawal.objects.get(pk=w.pk).status == Withdrawal.Status.SUBMITTED
    chain.node.mine(1)
    report = sequencer_run()
    assert report.confirmed == [tx.pk]
    tx.refresh_from_db()
    w.refresh_from_db()
    assert (tx.status, w.status, w.txid) == (TX.Status.CONFIRMED, "completed", tx.tx_hash)
    # and the books agree with the chain
    gas = wei_to_eth(tx.fee_paid_wei)
    assert chain.eth_balance(chain.hot.address) == hot_before - Decimal("1.5") - gas
    assert chain.w3.eth.get_transaction_count(chain.hot.address) == nonce_before + 1
    assert available(alice, "ETH") == Decimal("0.5") - w.fee
    assert LedgerAccount.objects.get(user=alice, asset__code="ETH").debits_pending == 0
    assert account("fees:ETH").balance == w.fee
    assert -account("custody:ETH:hot").balance == -(Decimal("1.5") + gas)
    assert account("world:ETH").balance == -gas
    assert Transfer.objects.filter(idempotency_key=f"withdrawal:{w.pk}:post").count() == 1
    # a further run changes nothing
    sequencer_run()
    assert Transfer.objects.filter(kind=Transfer.Kind.CHAIN_GAS).count() == 1


def test_a_token_withdrawal_pays_a_flat_fee_in_the_token_and_gas_from_the_hot_wallet(
    chain, alice, settings
):
    settings.EVM_TOKEN_WITHDRAWAL_FEE = "1.5"
    credit(alice, "USDT", "100")
    dest = fresh_address()
    w = request(alice, "USDT", "60", dest)
    assert w.fee == Decimal("1.5")
    assert available(alice, "USDT") == Decimal("38.5")
    sequencer_run()
    chain.node.mine(1)
    sequencer_run()
    w.refresh_from_db()
    tx = ChainTransaction.objects.get(withdrawal=w)
    assert (w.status, tx.status) == ("completed", TX.Status.CONFIRMED)
    assert chain.token_balance(dest) == Decimal(60)
    assert chain.token_balance(chain.hot.address) == Decimal(1_000_000 - 60)
    assert account("fees:USDT").balance == Decimal("1.5")
    assert account("custody:USDT:hot").balance == Decimal(60)
    assert account("custody:ETH:hot").balance == wei_to_eth(tx.fee_paid_wei)


def _sequencer_process(chain, mode: str) -> subprocess.CompletedProcess[bytes]:
    db = connection.settings_dict
    env = {
        **os.environ,
        **chain.env(),
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}:{db.get('PASSWORD') or ''}@{db['HOST']}:"
        f"{db['PORT']}/{db['NAME']}",
    }
    return subprocess.run(
        [sys.executable, "-m", "ledger.tests.evm_sequencer_process", mode],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("moment", ["kill-before-broadcast", "kill-after-broadcast"])
def test_a_sequencer_killed_right_after_signing_sends_one_transaction(chain, alice, moment):
    # given a queued withdrawal
    credit(alice, "ETH", "1")
    dest = fresh_address()
    w = request(alice, "ETH", "0.4", dest)
    nonce_before = chain.w3.eth.get_transaction_count(chain.hot.address)
    # when the sequencer process is SIGKILLed right after the signed transaction is committed
    crashed = _sequencer_process(chain, moment)
    assert crashed.returncode == -9, crashed.stderr.decode()[-2000:]
    signed = ChainTransaction.objects.get(withdrawal=w)
    assert signed.status == TX.Status.SIGNED
    sent_before_restart = chain.w3.eth.get_transaction_count(chain.hot.address) - nonce_before
    assert sent_before_restart == (1 if moment == "kill-after-broadcast" else 0)
    # and a new process runs it again, then the blocks come
    restarted = _sequencer_process(chain, "run")
    assert restarted.returncode == 0, restarted.stderr.decode()[-2000:]
    chain.node.mine(2)
    sequencer_run()
    # then exactly one transaction went out: the one signed before the crash
    assert ChainTransaction.objects.filter(withdrawal=w).count() == 1
    tx = ChainTransaction.objects.get(withdrawal=w)
    assert (tx.tx_hash, tx.status) == (signed.tx_hash, TX.Status.CONFIRMED)
    assert chain.w3.eth.get_transaction_count(chain.hot.address) == nonce_before + 1
    assert chain.eth_balance(dest) == Decimal("0.4")
    w.refresh_from_db()
    assert w.status == Withdrawal.Status.COMPLETED
    assert (
        Transfer.objects.filter(idempotency_key__startswith=f"withdrawal:{w.pk}:")
        .filter(flags=Transfer.Flags.POST_PENDING)
        .count()
        == 2
    )  # the amount and the fee, once each


def test_a_stuck_transaction_is_replaced_and_only_one_is_mined(chain, alice, settings):
    credit(alice, "ETH", "1")
    dest = fresh_address()
    nonce_before = chain.w3.eth.get_transaction_count(chain.hot.address)
    # given a withdrawal broadcast while the node mines nothing
    chain.node.set_automine(False)
    w = request(alice, "ETH", "0.3", dest)
    sequencer_run()
    first = ChainTransaction.objects.get(withdrawal=w)
    assert first.status == TX.Status.BROADCAST
    # when it is older than EVM_STUCK_AFTER_SECONDS
    settings.EVM_STUCK_AFTER_SECONDS = 0
    report = sequencer_run()
    settings.EVM_STUCK_AFTER_SECONDS = 3600
    # then it is replaced: same nonce, at least +10% on both fees
    assert report.replaced == [first.pk]
    first.refresh_from_db()
    second = first.replaced_by
    assert second is not None
    assert second.nonce == first.nonce
    assert second.max_fee_per_gas >= first.max_fee_per_gas * Decimal("1.1")
    assert second.max_priority_fee_per_gas >= first.max_priority_fee_per_gas * Decimal("1.1")
    # and once blocks come, exactly one of the two is mined, confirmed and posted
    chain.node.set_automine(True)
    chain.node.mine(3)
    sequencer_run()
    statuses = sorted(
        ChainTransaction.objects.filter(withdrawal=w).values_list("status", flat=True)
    )
    assert statuses == [TX.Status.CONFIRMED, TX.Status.REPLACED]
    assert chain.w3.eth.get_transaction_count(chain.hot.address) == nonce_before + 1
    assert chain.eth_balance(dest) == Decimal("0.3")
    w.refresh_from_db()
    assert w.status == Withdrawal.Status.COMPLETED
    assert Transfer.objects.filter(kind=Transfer.Kind.CHAIN_GAS).count() == 1


def test_a_replacement_that_loses_to_the_original_is_dropped(chain, alice):
    # given a withdrawal the node mined before the sequencer noticed
    credit(alice, "ETH", "1")
    dest = fresh_address()
    w = request(alice, "ETH", "0.2", dest)
    sequencer_run()
    original = ChainTransaction.objects.get(withdrawal=w)
    assert chain.w3.eth.get_transaction_receipt(original.tx_hash)["status"] == 1
    # when the sequencer replaces it all the same (it looked stuck a moment before)
    replacement = replace(chain.w3, original.pk)
    assert replacement is not None
    # then the node refuses the replacement's used nonce, and the original wins
    original.refresh_from_db()
    replacement.refresh_from_db()
    assert (original.status, replacement.status) == (TX.Status.MINED, TX.Status.REPLACED)
    chain.node.mine(2)
    sequencer_run()
    w.refresh_from_db()
    assert (w.status, w.txid) == (Withdrawal.Status.COMPLETED, original.tx_hash)
    assert chain.eth_balance(dest) == Decimal("0.2")


def test_a_hot_wallet_too_low_keeps_withdrawals_queued_and_alerts_once(chain, alice, monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(alerts, "moderator_alert_listeners", [lambda key, text: said.append(key)])
    # given alice withdraws more ETH than the hot wallet holds (100)
    credit(alice, "ETH", "150")
    dest = fresh_address()
    w = request(alice, "ETH", "120", dest)
    nonce_before = chain.w3.eth.get_transaction_count(chain.hot.address)
    # when the sequencer runs, twice
    first = sequencer_run()
    second = sequencer_run()
    # then nothing is sent, it stays queued, and the moderators heard of it once
    assert first.waiting == second.waiting == [w.pk]
    assert not ChainTransaction.objects.exists()
    assert chain.w3.eth.get_transaction_count(chain.hot.address) == nonce_before
    assert Withdrawal.objects.get(pk=w.pk).status == Withdrawal.Status.SUBMITTED
    assert said == ["hot-wallet-low:ETH"]
    # when the hot wallet is topped up, it goes, and the alert is over
    chain.w3.eth.wait_for_transaction_receipt(chain.send_eth(chain.hot.address, "50"))
    report = sequencer_run()
    assert len(report.sent) == 1
    assert not report.waiting
    chain.node.mine(2)
    sequencer_run()
    assert Withdrawal.objects.get(pk=w.pk).status == Withdrawal.Status.COMPLETED
    assert chain.eth_balance(dest) == Decimal(120)
    assert cache.get("ledger-alert:hot-wallet-low:ETH") is None


def test_a_token_withdrawal_waits_for_tokens_in_the_hot_wallet(chain, alice, monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(alerts, "moderator_alert_listeners", [lambda key, text: said.append(key)])
    credit(alice, "USDT", "2000000")
    w = request(alice, "USDT", "1500000", fresh_address())
    assert sequencer_run().waiting == [w.pk]
    assert said == ["hot-wallet-low:USDT"]


@pytest.mark.parametrize(
    "address",
    [
        "0x12",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",  # EIP-55 checksum broken
        "0x0000000000000000000000000000000000000000",
        "",
    ],
)
def test_a_bad_address_is_refused_and_nothing_is_held(chain, alice, address):
    credit(alice, "ETH", "1")
    with pytest.raises(ValidationFailed) as refused:
        services.withdrawal_request(user=alice, asset_code="ETH", amount="0.5", address=address)
    assert "address" in refused.value.fields
    assert not Withdrawal.objects.exists()
    assert available(alice, "ETH") == Decimal(1)


def test_an_over_balance_withdrawal_is_refused_also_when_only_the_fee_tips_it(chain, alice):
    credit(alice, "ETH", "1")
    with pytest.raises(InsufficientFunds):
        services.withdrawal_request(
            user=alice, asset_code="ETH", amount="1.01", address=fresh_address()
        )
    # the whole balance is the amount, but the network fee comes on top
    with pytest.raises(InsufficientFunds, match="network fee"):
        services.withdrawal_request(
            user=alice, asset_code="ETH", amount="1", address=fresh_address()
        )
    assert not Withdrawal.objects.exists()
    assert available(alice, "ETH") == Decimal(1)


def test_a_fee_higher_than_the_one_shown_is_refused(chain, alice):
    credit(alice, "ETH", "1")
    with pytest.raises(ValidationFailed) as refused:
        services.withdrawal_request(
            user=alice, asset_code="ETH", amount="0.1", address=fresh_address(), max_fee="0"
        )
    assert "max_fee" in refused.value.fields
    assert not Withdrawal.objects.exists()


def test_thirty_racing_withdrawals_of_the_whole_balance_one_succeeds(chain, alice):
    # given alice holds 1 ETH, and the fee quote of the moment
    credit(alice, "ETH", "1")
    fee = evm_adapter.EvmChainAdapter().withdrawal_fee(
        asset=Asset.objects.get(code="ETH"), amount=Decimal(1)
    )
    whole = str(Decimal(1) - fee)
    dest = fresh_address()
    # when 30 threads ask for all of it at once
    barrier = threading.Barrier(30)
    outcomes: list[object] = []

    def withdraw() -> None:
        try:
            barrier.wait(timeout=30)
            outcomes.append(
                services.withdrawal_request(
                    user=alice, asset_code="ETH", amount=whole, address=dest
                )
            )
        except Exception as exc:
            outcomes.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=withdraw) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # then exactly one is held, the others refused for the balance, and nothing went negative
    held = [o for o in outcomes if isinstance(o, Withdrawal)]
    refused = [o for o in outcomes if isinstance(o, InsufficientFunds)]
    assert (len(held), len(refused)) == (1, 29), outcomes
    mine = LedgerAccount.objects.get(user=alice, asset__code="ETH")
    assert mine.available == 0
    assert (
        not LedgerAccount.objects.exclude(kind=LedgerAccount.Kind.WORLD)
        .filter(credits_posted__lt=0)
        .exists()
    )
    # and the one that was held goes out once
    services.withdrawal_process(withdrawal_id=held[0].pk)
    sequencer_run()
    chain.node.mine(2)
    sequencer_run()
    assert Withdrawal.objects.get().status == Withdrawal.Status.COMPLETED
    assert chain.eth_balance(dest) == Decimal(whole)
    mine.refresh_from_db()
    assert mine.balance == 0
    assert mine.debits_pending == 0


def test_the_wallet_page_and_the_api_show_the_fee_before_confirming(chain, alice, admin_client):
    from django.urls import reverse
    from rest_framework.test import APIClient

    credit(alice, "ETH", "2")
    eth = Asset.objects.get(code="ETH")
    fee = evm_adapter.EvmChainAdapter().withdrawal_fee(asset=eth, amount=Decimal(0))
    shown = format(fee.normalize(), "f")
    # the page shows it (and hands it to the form's script as the accepted fee)
    from django.test import Client

    browser = Client()
    browser.force_login(alice)
    page = browser.get(reverse("wallet")).content.decode()
    assert f"ETH network fee: {shown} ETH" in page
    assert f'"ETH": "{shown}"' in page
    # the API too; a withdrawal that sends it back as max_fee holds amount + fee
    api = APIClient()
    api.force_login(alice)
    wallets = {w["asset"]: w for w in api.get("/api/v1/wallets/").json()["results"]}
    assert Decimal(wallets["ETH"]["withdrawal_fee"]) == fee
    assert Decimal(wallets["USDT"]["withdrawal_fee"]) == Decimal("1")
    assert Decimal(wallets["BTC"]["withdrawal_fee"]) == 0  # manual: no network fee
    made = api.post(
        "/api/v1/wallets/ETH/withdrawals/",
        {
            "amount": "1",
            "address": fresh_address(),
            "max_fee": wallets["ETH"]["withdrawal_fee"],
            "password": "demo-pass-123",
        },
        format="json",
    )
    assert made.status_code == 201, made.json()
    assert Decimal(made.json()["fee"]) == fee
    assert available(alice, "ETH") == Decimal(1) - fee
    # and once sent, the admin shows its chain state: nonce, hash, status, confirmations
    w = Withdrawal.objects.get()
    services.withdrawal_process(withdrawal_id=w.pk)
    sequencer_run()
    chain.node.mine(1)
    sequencer_run()
    tx = ChainTransaction.objects.get(withdrawal=w)
    listing = admin_client.get("/admin/ledger/withdrawal/").content.decode()
    assert f"nonce {tx.nonce}" in listing
    assert tx.tx_hash in listing
    assert "Confirmed" in listing
    assert "2/2 conf." in listing
    assert admin_client.get("/admin/ledger/chaintransaction/").status_code == 200


def test_a_signed_transaction_whose_nonce_went_elsewhere_fails_and_refunds(
    chain, alice, monkeypatch, admin_client
):
    from ledger.evm import sequencer

    # given a withdrawal signed and stored while the node could not be reached
    credit(alice, "ETH", "1")
    dest = fresh_address()
    w = request(alice, "ETH", "0.5", dest)
    monkeypatch.setattr(sequencer, "_send_raw", lambda w3, tx: "connection refused")
    sequencer_run()
    monkeypatch.undo()
    tx = ChainTransaction.objects.get(withdrawal=w)
    assert (tx.status, tx.error) == (TX.Status.SIGNED, "connection refused")
    # and a moderator can't confirm or reject it by hand: the chain decides
    admin_client.post("/admin/ledger/withdrawal/", {"action": "reject", "_selected_action": [w.pk]})
    assert Withdrawal.objects.get(pk=w.pk).status == Withdrawal.Status.SUBMITTED
    # when the hot wallet's key spends that nonce elsewhere meanwhile
    other = chain.hot.sign_transaction(
        {
            "type": 2,
            "chainId": 31337,
            "nonce": tx.nonce,
            "to": fresh_address(),
            "value": 1,
            "gas": 21_000,
            "maxFeePerGas": 10**11,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    chain.w3.eth.wait_for_transaction_receipt(
        chain.w3.eth.send_raw_transaction(other.raw_transaction)
    )
    # then the stored transaction can never be mined: it failed, nothing was sent, refunded
    sequencer_run()
    tx.refresh_from_db()
    w.refresh_from_db()
    assert (tx.status, w.status) == (TX.Status.FAILED, Withdrawal.Status.FAILED)
    assert chain.eth_balance(dest) == 0
    assert available(alice, "ETH") == Decimal(1)
