"""Sweeps on a real local Ethereum node (Anvil): deposited ETH and tokens move from the deposit
addresses to the hot wallet (a token after a gas top-up), and the custody accounts say where the
coins are, as the chain does."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.core.cache import cache

from common.transactions import durable_atomic
from ledger import services
from ledger.evm.addresses import deposit_address_for
from ledger.evm.models import ChainTransaction
from ledger.evm.sequencer import sequencer_run
from ledger.evm.sweeps import sweeps_run
from ledger.models import Asset, LedgerAccount, Transfer

pytestmark = pytest.mark.django_db(transaction=True)

TX = ChainTransaction


@pytest.fixture
def chain(evm, refdata):
    cache.clear()
    return evm


def deposited(chain, user, code: str, amount: str) -> str:
    """Coins arrive at the user's deposit address and, confirmed, are credited (what the deposit
    watcher posts: custody:X:deposits -> the user). Returns the address."""
    address = deposit_address_for(user=user).address
    send = chain.send_eth if code == "ETH" else chain.send_token
    chain.w3.eth.wait_for_transaction_receipt(send(address, amount))
    asset = Asset.objects.get(code=code)
    with durable_atomic():
        services.transfer_post(
            idempotency_key=f"test-deposit:{uuid.uuid4().hex}",
            debit=services.account_custody(asset=asset, place="deposits"),
            credit=services.account_for_user(user=user, asset=asset),
            amount=Decimal(amount),
            kind=Transfer.Kind.DEPOSIT,
        )
    return address


def custody(code: str, place: str) -> Decimal:
    """What the ledger says sits there (minus the custody account's balance)."""
    found = LedgerAccount.objects.filter(code=f"custody:{code}:{place}").first()
    return -found.balance if found else Decimal(0)


def test_an_eth_sweep_moves_the_balance_less_gas_to_the_hot_wallet(chain, alice, bob):
    # given two users' confirmed ETH deposits
    a = deposited(chain, alice, "ETH", "0.5")
    b = deposited(chain, bob, "ETH", "0.25")
    hot_before = chain.eth_balance(chain.hot.address)
    chain.node.mine(2)
    # when the sweeper runs, and the sweeps are confirmed
    report = sweeps_run()
    assert len(report.sweeps) == 2
    assert not report.topups
    chain.node.mine(2)
    sequencer_run()
    # then both are swept, each recorded, confirmed once
    sweeps = ChainTransaction.objects.filter(kind=TX.Kind.SWEEP)
    assert set(sweeps.values_list("status", flat=True)) == {TX.Status.CONFIRMED}
    assert {s.from_address for s in sweeps} == {a, b}
    swept = sum(s.amount for s in sweeps)
    gas = sum(Decimal(s.fee_paid_wei) / 10**18 for s in sweeps)
    assert swept + gas <= Decimal("0.75")
    # and the custody accounts match the chain: what is left behind, and what reached the hot
    left = chain.eth_balance(a) + chain.eth_balance(b)
    assert left == Decimal("0.75") - swept - gas
    assert custody("ETH", "deposits") == left
    assert chain.eth_balance(chain.hot.address) - hot_before == swept
    assert custody("ETH", "hot") == swept
    # a second run has nothing left worth sweeping
    assert sweeps_run().sweeps == []


def test_a_token_sweep_first_tops_up_gas_then_moves_the_tokens(chain, alice):
    # given a confirmed deposit of 250 USDT at an address with no ETH
    address = deposited(chain, alice, "USDT", "250")
    assert chain.eth_balance(address) == 0
    hot_eth_before = chain.eth_balance(chain.hot.address)
    hot_usdt_before = chain.token_balance(chain.hot.address)
    chain.node.mine(2)
    # when the sweeper runs: a gas top-up from the hot wallet first
    first = sweeps_run()
    assert len(first.topups) == 1
    assert not first.sweeps
    topup = ChainTransaction.objects.get(pk=first.topups[0])
    assert (topup.kind, topup.from_address, topup.to_address) == (
        TX.Kind.GAS_TOPUP,
        chain.hot.address,
        address,
    )
    assert chain.eth_balance(address) == topup.amount
    # and, once the top-up is confirmed, the tokens
    chain.node.mine(2)
    second = sweeps_run()
    assert len(second.sweeps) == 1
    chain.node.mine(2)
    sequencer_run()
    sweep = ChainTransaction.objects.get(pk=second.sweeps[0])
    topup.refresh_from_db()
    assert (topup.status, sweep.status) == (TX.Status.CONFIRMED, TX.Status.CONFIRMED)
    # then the tokens are in the hot wallet and the ledger's custody says so
    assert chain.token_balance(address) == 0
    assert chain.token_balance(chain.hot.address) - hot_usdt_before == Decimal(250)
    assert custody("USDT", "deposits") == 0
    assert custody("USDT", "hot") == Decimal(250)
    # and the ETH: the top-up less the sweep's gas is what the deposit address still holds
    assert custody("ETH", "deposits") == chain.eth_balance(address)
    assert chain.eth_balance(address) == topup.amount - Decimal(sweep.fee_paid_wei) / 10**18
    hot_eth_spent = hot_eth_before - chain.eth_balance(chain.hot.address)
    assert -custody("ETH", "hot") == hot_eth_spent
    # nothing more to do
    chain.node.mine(2)
    later = sweeps_run()
    assert later.sweeps == []
    assert later.topups == []
