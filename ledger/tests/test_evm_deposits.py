"""The deposit watcher against a real local node (Anvil): ETH and token deposits credited once
after EVM_CONFIRMATIONS blocks, runs repeated at will, reorgs before the confirmations dropping
the deposit, unknown addresses ignored, and the wallet page and API showing it all."""

from __future__ import annotations

import threading
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from eth_account import Account

from ledger.evm.addresses import deposit_address_for
from ledger.evm.deposits import _amount, _watcher_lock, deposits_watch
from ledger.models import ChainBlock, ChainDeposit, Deposit, LedgerAccount, Transfer
from notifications.models import Notification

# Transactional: the watcher commits as it does in production, and the users' and moderators'
# news is delivered after those commits.
pytestmark = pytest.mark.django_db(transaction=True)


def _balance(user, code: str) -> Decimal:
    account = LedgerAccount.objects.filter(user=user, asset__code=code).first()
    return account.credits_posted - account.debits_posted if account else Decimal(0)


def _ledger_state() -> tuple:
    """Everything a watcher run could change: the deposits, their ledger entries, the balances."""
    return (
        sorted(ChainDeposit.objects.values_list("tx_hash", "log_index", "status", "amount")),
        Transfer.objects.count(),
        Deposit.objects.count(),
        sorted(LedgerAccount.objects.values_list("code", "credits_posted", "debits_posted")),
    )


def test_an_eth_deposit_is_seen_then_credited_once_after_the_confirmations(evm, alice, settings):
    # given alice's deposit address and 1.5 ETH sent to it (mined in one block)
    assert settings.EVM_CONFIRMATIONS == 2
    address = deposit_address_for(user=alice).address
    tx_hash = evm.send_eth(address, "1.5")
    # when the watcher runs: seen, one confirmation, nothing credited yet
    first = deposits_watch()
    deposit = ChainDeposit.objects.get()
    assert (deposit.status, deposit.tx_hash, deposit.log_index) == ("seen", tx_hash, -1)
    assert deposit.amount == Decimal("1.5")
    assert deposit.units == 1_500_000_000_000_000_000
    assert deposit.address == address
    assert deposit.user == alice
    assert first.seen == 1
    assert first.credited == 0
    assert _balance(alice, "ETH") == 0
    # then one more block: two confirmations, credited
    evm.node.mine(1)
    second = deposits_watch()
    deposit.refresh_from_db()
    assert second.credited == 1
    assert deposit.status == "credited"
    assert _balance(alice, "ETH") == Decimal("1.5")
    transfer = deposit.deposit.transfer
    assert transfer.debit_account.code == "custody:ETH:deposits"
    assert transfer.idempotency_key == f"chain-deposit:eth:{tx_hash}:-1"
    assert Notification.objects.filter(user=alice, text__contains="credited").exists()
    # and running it again, and again after more blocks, changes nothing
    state = _ledger_state()
    for _ in range(2):
        assert deposits_watch().credited == 0
    evm.node.mine(5)
    assert deposits_watch().credited == 0
    assert _ledger_state() == state


def test_a_token_deposit_is_credited_once(evm, alice, bob):
    # given USDT sent to alice's address by a transfer and one minted straight to bob's
    alice_address = deposit_address_for(user=alice).address
    bob_address = deposit_address_for(user=bob).address
    evm.send_token(evm.faucet.address, "1000")  # the faucet holds some to transfer
    evm.send_token(alice_address, "250.125", sender=evm.faucet)
    evm.send_token(bob_address, "7")
    # when the watcher runs (bob's in the last block: one confirmation) and a block follows
    deposits_watch()
    assert ChainDeposit.objects.get(user=bob).status == "seen"
    evm.node.mine(1)
    deposits_watch()
    deposits_watch()
    # then each is credited once, with its Transfer log's index
    alice_deposit = ChainDeposit.objects.get(user=alice)
    assert alice_deposit.status == "credited"
    assert alice_deposit.log_index >= 0
    assert alice_deposit.sender == evm.faucet.address
    assert _balance(alice, "USDT") == Decimal("250.125")
    assert _balance(bob, "USDT") == Decimal("7")
    assert Transfer.objects.filter(kind="deposit").count() == 2


def test_a_reorg_before_the_confirmations_drops_the_deposit(evm, alice):
    # given a deposit mined in a block the watcher saw
    address = deposit_address_for(user=alice).address
    snapshot = evm.node.snapshot()
    evm.send_eth(address, "2")
    deposits_watch()
    deposit = ChainDeposit.objects.get()
    assert deposit.status == "seen"
    orphan_hash = deposit.block_hash
    # when the chain reorganises: back before it, and other (longer) blocks instead
    evm.node.revert(snapshot)
    evm.node.mine(4)
    result = deposits_watch()
    # then the deposit is dropped, the orphaned block forgotten, nothing credited, ever
    deposit.refresh_from_db()
    assert deposit.status == "dropped"
    assert "reorg" in deposit.note
    assert result.reorg_depth >= 1
    assert result.dropped == 1
    assert not ChainBlock.objects.filter(hash=orphan_hash).exists()
    evm.node.mine(3)
    deposits_watch()
    assert _balance(alice, "ETH") == 0
    assert not Transfer.objects.filter(kind="deposit").exists()
    assert Notification.objects.filter(user=alice, text__contains="left the chain").exists()


def test_a_deposit_mined_again_on_the_new_branch_is_credited_once(evm, alice):
    # given a deposit seen in a block that is then reorged out
    address = deposit_address_for(user=alice).address
    evm.node.mine(1)
    deposits_watch()
    snapshot = evm.node.snapshot()
    w3 = evm.w3
    tx = {
        "to": address,
        "value": w3.to_wei(1, "ether"),
        "nonce": w3.eth.get_transaction_count(evm.faucet.address),
        "gas": 21_000,
        "maxFeePerGas": w3.to_wei(50, "gwei"),
        "maxPriorityFeePerGas": w3.to_wei(1, "gwei"),
        "chainId": 31337,
    }
    raw = evm.faucet.sign_transaction(tx).raw_transaction
    # Anvil answers before it has mined the block: wait for it (a busy machine lost this race).
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw), timeout=30)
    deposits_watch()
    evm.node.revert(snapshot)
    evm.node.mine(2)
    deposits_watch()
    assert ChainDeposit.objects.get().status == "dropped"
    # when the same signed transaction is mined again, on the new branch
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw), timeout=30)
    deposits_watch()
    deposit = ChainDeposit.objects.get()
    assert deposit.status == "seen"
    evm.node.mine(1)
    deposits_watch()
    deposits_watch()
    # then it is credited once (one row: the same transaction, a new block)
    deposit.refresh_from_db()
    assert deposit.status == "credited"
    assert deposit.block_hash == ChainBlock.objects.get(number=deposit.block_number).hash
    assert _balance(alice, "ETH") == Decimal(1)


def test_a_reorg_deeper_than_the_confirmations_alerts_the_moderators(evm, alice, moderator):
    # given a credited deposit
    address = deposit_address_for(user=alice).address
    snapshot = evm.node.snapshot()
    evm.send_eth(address, "3")
    evm.node.mine(2)
    deposits_watch()
    deposit = ChainDeposit.objects.get()
    assert deposit.status == "credited"
    # when a reorg deeper than EVM_CONFIRMATIONS (which by assumption never happens) removes it
    evm.node.revert(snapshot)
    evm.node.mine(5)
    deposits_watch()
    # then it stays credited, and the moderators hear of it
    deposit.refresh_from_db()
    assert deposit.status == "credited"
    assert "reorged out after crediting" in deposit.note
    assert _balance(alice, "ETH") == Decimal(3)
    assert Notification.objects.filter(user=moderator, text__contains=deposit.tx_hash).exists()


@pytest.fixture
def moderator(refdata):
    from accounts.tests.factories import UserFactory

    return UserFactory(username="mod", is_staff=True, is_superuser=True)


def test_a_transfer_to_an_unknown_address_is_ignored(evm, alice):
    # given alice has an address, and coins go elsewhere
    deposit_address_for(user=alice)
    evm.send_eth(Account.create().address, "1")
    evm.send_token(Account.create().address, "5")
    evm.node.mine(3)
    # when the watcher runs
    result = deposits_watch()
    # then it scanned the blocks and recorded nothing
    assert result.scanned > 0
    assert result.seen == 0
    assert not ChainDeposit.objects.exists()


def test_amounts_below_the_precision_are_not_credited():
    # 18-decimal units into a 6-place asset: the dust stays uncredited, and says so
    assert _amount(1_500_000_000_000_000_000, decimals=18, precision=18) == (Decimal("1.5"), "")
    amount, note = _amount(1_234_567_890_000_000_000, decimals=18, precision=6)
    assert amount == Decimal("1.234567")
    assert "0.00000089" in note
    assert _amount(999, decimals=18, precision=6)[0] == 0
    amount, note = _amount(10**60, decimals=18, precision=18)
    assert amount == 0
    assert "too large" in note


def test_a_second_watcher_waits_its_turn(evm, alice):
    # given a watcher holding the lock (this connection)
    deposit_address_for(user=alice)
    results = []
    with _watcher_lock() as held:
        assert held
        # when another process's watcher runs meanwhile (a thread: its own connection)

        def other() -> None:
            try:
                results.append(deposits_watch())
            finally:
                connection.close()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(30)
    # then it did nothing, and the next run does the work
    assert results
    assert results[0].busy
    assert not deposits_watch().busy


def test_the_wallet_page_shows_the_address_qr_and_confirmations(evm, alice, client):
    # given alice's deposit on the chain, one confirmation deep
    address = deposit_address_for(user=alice).address
    evm.send_token(address, "12.5")
    deposits_watch()
    client.force_login(alice)
    # when she opens her wallet
    page = client.get("/wallet/").content.decode()
    # then her EIP-55 address with its QR code, the token's contract and the confirmations show
    assert f'data-copy="{address}"' in page
    assert 'class="deposit-qr"' in page
    assert 'class="segno"' in page
    assert evm.token in page
    assert 'data-testid="deposit-confirmations">2<' in page
    assert "seen, 1/2 confirmations" in page
    assert 'hx-trigger="every 3s"' in page
    # and the polled part says credited once the next block is in
    evm.node.mine(1)
    deposits_watch()
    part = client.get("/wallet/chain-deposits/").content.decode()
    assert 'data-status="credited"' in part
    assert "Credited" in part


def test_the_api_gives_the_deposit_address_and_the_deposits(evm, alice, client):
    address = deposit_address_for(user=alice).address
    evm.send_eth(address, "0.25")
    deposits_watch()
    client.force_login(alice)
    body = client.get("/api/v1/wallets/USDT/deposit-address/").json()
    assert body["address"] == address
    assert body["contract"] == evm.token
    assert body["confirmations_required"] == 2
    assert body["chain"] == "eth"
    eth = client.get("/api/v1/wallets/eth/deposit-address/").json()
    assert eth["address"] == address
    assert eth["contract"] is None
    btc = client.get("/api/v1/wallets/BTC/deposit-address/").json()
    assert btc["address"] is None
    assert btc["instructions"]
    rows = client.get("/api/v1/deposits/").json()["results"]
    assert [(r["amount"], r["status"], r["confirmations"]) for r in rows] == [
        ("0.250000000000000000", "seen", 1)
    ]


def test_the_faucet_sends_to_the_users_address_and_the_watcher_credits_it(evm, alice):
    # given the local node's faucet (Anvil's account 0, TestUSD's deployer)
    address = deposit_address_for(user=alice).address
    out = StringIO()
    # when it sends alice ETH and USDT
    call_command("faucet", "alice", "ETH", "0.75", stdout=out)
    call_command("faucet", "alice", "usdt", "100", stdout=out)
    # then they are on her address, and credited after the confirmations
    assert evm.eth_balance(address) == Decimal("0.75")
    assert evm.token_balance(address) == Decimal(100)
    assert address in out.getvalue()
    evm.node.mine(1)
    deposits_watch()
    assert _balance(alice, "ETH") == Decimal("0.75")
    assert _balance(alice, "USDT") == Decimal(100)


def test_evm_setup_deploys_the_token_once(evm, tmp_path):
    state = tmp_path / "evm.env"
    first, second = StringIO(), StringIO()
    call_command("evm_setup", state_file=str(state), stdout=first)
    address = state.read_text().strip().split("=", 1)[1]
    assert evm.w3.eth.get_code(address)
    call_command("evm_setup", state_file=str(state), stdout=second)
    assert f"already at {address}" in second.getvalue()


def test_the_admin_lists_chain_deposits_with_their_chain_state(evm, alice, client):
    from accounts.tests.factories import UserFactory

    address = deposit_address_for(user=alice).address
    tx_hash = evm.send_eth(address, "1")
    deposits_watch()
    client.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    page = client.get("/admin/ledger/chaindeposit/").content.decode()
    assert tx_hash in page
    assert "1/2" in page
    assert "seen" in page
