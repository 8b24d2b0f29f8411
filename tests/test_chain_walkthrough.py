"""Issue 19's newcomer, end to end on a real local node (Anvil): test ETH from the faucet is
seen, then credited after the confirmations; it is sold to another trader through escrow; the
buyer withdraws it to an address of their own on the node and the coins arrive there; the
deposit is swept to the hot wallet; the reserves reconcile with no shortfall and the buyer's
inclusion proof in the signed proof of reserves verifies offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from eth_account import Account

from escrow import services as escrow
from escrow.models import Settlement
from ledger import services as ledger
from ledger.evm import adapter as evm_adapter
from ledger.evm import deposits, reserves, sweeps
from ledger.evm.addresses import deposit_address_for
from ledger.evm.models import ChainDeposit, ReserveReconciliation
from ledger.evm.sequencer import sequencer_run
from ledger.models import Asset, Withdrawal
from ledger.services import funds
from marketplace.tests.factories import make_offer

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


def balance(user, code: str) -> Decimal:
    return ledger.account_for_user(user=user, asset=Asset.objects.get(code=code)).available


def test_faucet_credit_trade_withdraw_sweep_and_reserves(
    evm, alice, bob, client, monkeypatch, tmp_path
):
    # The test runs the workers' services itself: nothing goes through the broker.
    monkeypatch.setattr(funds, "_queue_withdrawal", lambda withdrawal_id: None)
    monkeypatch.setattr(evm_adapter, "_wake_sequencer", lambda: None)
    monkeypatch.setattr("escrow.services.transitions.publish_after_commit", lambda *a: None)

    # given alice, new, with test ETH from the local node's faucet
    call_command("faucet", "alice", "ETH", "1.5")
    deposits.deposits_watch()
    seen = ChainDeposit.objects.get(user=alice)
    assert seen.status == ChainDeposit.Status.SEEN
    assert balance(alice, "ETH") == 0
    # when the chain has moved on by the confirmations, it is credited, once
    evm.node.mine(2)
    deposits.deposits_watch()
    deposits.deposits_watch()
    seen.refresh_from_db()
    assert seen.status == ChainDeposit.Status.CREDITED
    assert balance(alice, "ETH") == Decimal("1.5")

    # and she sells 1 ETH to bob through escrow
    offer = make_offer(alice, asset="ETH", price="3000", amount="1.2", max_fiat="5000")
    trade = escrow.trade_open(offer_id=offer.pk, taker=bob, amount="1")
    escrow.trade_mark_paid(trade_id=trade.pk, actor=bob)
    escrow.escrow_release(trade_id=trade.pk, actor=alice)
    escrow.settlement_execute(settlement_id=Settlement.objects.get(trade=trade).pk)
    trade.refresh_from_db()
    assert trade.state == "completed"
    received = balance(bob, "ETH")
    assert received > Decimal("0.99")

    # when bob withdraws it to his own address on the node
    own = Account.create()
    fee = evm_adapter.EvmChainAdapter().withdrawal_fee(
        asset=Asset.objects.get(code="ETH"), amount=Decimal("0.5")
    )
    withdrawal = ledger.withdrawal_request(
        user=bob, asset_code="ETH", amount="0.5", address=own.address.lower()
    )
    ledger.withdrawal_process(withdrawal_id=withdrawal.pk)
    sequencer_run()
    evm.node.mine(2)
    sequencer_run()
    # then the coins are there, and the ledger posted it once
    withdrawal.refresh_from_db()
    assert withdrawal.status == Withdrawal.Status.COMPLETED
    assert evm.eth_balance(own.address) == Decimal("0.5")
    assert balance(bob, "ETH") == received - Decimal("0.5") - fee

    # and alice's deposit address is swept to the hot wallet
    address = deposit_address_for(user=alice).address
    assert evm.eth_balance(address) == Decimal("1.5")
    assert sweeps.sweeps_run().sweeps
    evm.node.mine(2)
    sweeps.sweeps_run()
    assert evm.eth_balance(address) < Decimal("0.001")

    # and the reserves cover what is owed: no shortfall
    runs = reserves.reserves_reconcile(asset_code="ETH")
    assert [r.status for r in runs] == [ReserveReconciliation.Status.COVERED]

    # and bob's inclusion proof in the signed proof of reserves verifies offline
    (proof,) = reserves.reserves_proof_publish(asset_code="ETH")
    client.force_login(bob)
    mine = client.get(f"/api/v1/reserves/{proof.pk}/proof/").json()
    keys = client.get("/api/v1/ledger/public-key/").json()
    assert Decimal(mine["leaf"]["balance"]) == balance(bob, "ETH")
    (tmp_path / "mine.json").write_text(json.dumps(mine))
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    env = {
        k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")
    }
    run = subprocess.run(
        [sys.executable, "-m", "ledger.verify", "reserves", str(tmp_path / "mine.json"),
         "--keys", str(tmp_path / "keys.json"), "--balance", mine["leaf"]["balance"]],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("OK:")


def test_make_run_backs_the_demo_balances_on_chain(evm, alice, bob):
    """seed_demo credits balances by hand; `evm_setup` gives the dev hot wallet what the chain
    lacks of them, so make run's proof of reserves covers what the ledger owes."""
    from ledger.evm import devchain
    from marketplace.tests.factories import fund

    fund(alice, "ETH", "150")
    fund(bob, "USDT", "2000000")
    assert devchain.dev_hot_wallet().address == evm.hot.address
    (short_eth, short_usdt) = reserves.reserves_reconcile()
    assert short_eth.status == short_usdt.status == ReserveReconciliation.Status.SHORTFALL
    # when
    sent = devchain.hot_wallet_back_liabilities(token=evm.token)
    # then
    assert [line.split()[0] for line in sent] == ["ETH", "USDT"]
    runs = reserves.reserves_reconcile()
    assert [r.status for r in runs] == [ReserveReconciliation.Status.COVERED] * 2
    # and a second run has nothing left to send
    assert devchain.hot_wallet_back_liabilities(token=evm.token) == []
