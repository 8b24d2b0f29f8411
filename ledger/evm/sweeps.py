"""Sweeps: what users deposited moves from their deposit addresses to the hot wallet, which pays
withdrawals. A worker (task run_sweeps) reads each deposit address's balances from the chain (at
the block EVM_CONFIRMATIONS deep, so coins not yet confirmed stay where they are) and, above
EVM_SWEEP_MIN:

- a token: the address needs ETH for the transfer's gas, and has none of its own. The hot wallet
  first sends it just enough (a `gas_topup`, a hot-wallet transaction with the sequencer's
  nonces); once that is confirmed, the next run sends the tokens to the hot wallet;
- ETH: the balance less the transfer's most gas (21,000 x the quote's max fee) goes to the hot
  wallet; what the gas did not use stays behind as dust.

Each is a ChainTransaction that the sequencer follows like a withdrawal; once final, its custody
moves and gas are posted (ledger.evm.custody). One sweep in flight per address at a time."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from web3 import Web3

from common.transactions import durable_atomic
from ledger.evm.config import CHAIN, EvmAsset, confirmations_required, evm_asset, evm_assets
from ledger.evm.fees import ETH_TRANSFER_GAS, GasQuote, gas_quote
from ledger.evm.models import ChainTransaction, DepositAddress
from ledger.evm.rpc import erc20, web3
from ledger.evm.sequencer import (
    HotWalletBudget,
    SequencerReport,
    broadcast,
    gas_limit_for,
    hot_account,
    sequencer_lock,
    sign_and_store,
    transactions_follow,
)
from ledger.selectors import asset_get

TX = ChainTransaction


@dataclass
class SweepReport:
    skipped: bool = False
    sweeps: list[int] = field(default_factory=list)  # ChainTransaction ids signed this run
    topups: list[int] = field(default_factory=list)
    short: list[str] = field(default_factory=list)  # top-ups the hot wallet could not pay


def sweeps_run() -> SweepReport:
    """Follow what is in flight, then start a sweep (or its gas top-up) for each address that
    holds enough and has nothing in flight."""
    with sequencer_lock() as got:
        if not got:
            return SweepReport(skipped=True)
        w3 = web3()
        transactions_follow(w3, SequencerReport())
        report = SweepReport()
        busy = set(
            ChainTransaction.objects.filter(
                chain=CHAIN,
                kind__in=(TX.Kind.SWEEP, TX.Kind.GAS_TOPUP),
                status__in=(TX.Status.SIGNED, TX.Status.BROADCAST, TX.Status.MINED),
            ).values_list("deposit_index", flat=True)
        )
        addresses = DepositAddress.objects.filter(chain=CHAIN).exclude(index__in=busy)
        quote = gas_quote(w3)
        safe_block = max(int(w3.eth.block_number) - confirmations_required() + 1, 0)
        budget: HotWalletBudget | None = None
        for address in addresses.order_by("index"):
            if budget is None:
                budget = HotWalletBudget.read(w3, hot_account().address)
            _sweep_address(w3, address, quote, safe_block, budget, report)
        return report


def _settled_balance(w3: Web3, address: str, safe_block: int, token: EvmAsset | None) -> int:
    """What the address held both at the confirmed block and now (the lesser)."""

    def at(block: Any) -> int:
        if token is None:
            return int(w3.eth.get_balance(address, block))  # type: ignore[arg-type]
        return int(
            erc20(token.contract, w3).functions.balanceOf(address).call(block_identifier=block)
        )

    return min(at(safe_block), at("latest"))


def _minimum(code: str, precision: int) -> int:
    return int(Decimal(str(settings.EVM_SWEEP_MIN.get(code, "0"))).scaleb(precision))


def _sweep_address(
    w3: Web3,
    address: DepositAddress,
    quote: GasQuote,
    safe_block: int,
    budget: HotWalletBudget,
    report: SweepReport,
) -> None:
    eth_balance = _settled_balance(w3, address.address, safe_block, None)
    hot = budget.address
    for token in (a for a in evm_assets() if a.kind == "erc20"):
        asset = asset_get(code=token.code)
        held = _settled_balance(w3, address.address, safe_block, token)
        if held <= 0 or held < _minimum(token.code, asset.precision):
            continue
        gas_limit = gas_limit_for(w3, token, address.address, hot, held)
        gas_cost = quote.cost(gas_limit)
        if eth_balance < gas_cost:
            topup = gas_cost - eth_balance
            topup_gas = quote.cost(ETH_TRANSFER_GAS)
            if budget.eth_wei < topup + topup_gas:
                report.short.append(address.address)
                return
            eth = asset_get(code="ETH")
            with durable_atomic():
                tx = sign_and_store(
                    w3,
                    kind=TX.Kind.GAS_TOPUP,
                    asset=eth,
                    to=address.address,
                    amount=Decimal(topup).scaleb(-eth.precision),
                    gas_limit=ETH_TRANSFER_GAS,
                    max_fee=quote.max_fee_per_gas,
                    priority=quote.max_priority_fee_per_gas,
                    deposit_index=address.index,
                )
            budget.eth_wei -= topup + topup_gas
            report.topups.append(tx.pk)
        else:
            _sweep(w3, report, asset=asset, to=hot, units=held, gas_limit=gas_limit, quote=quote,
                   index=address.index)  # fmt: skip
            return
        broadcast(w3, tx.pk)
        return  # one transaction per address at a time
    eth = asset_get(code="ETH")
    if evm_asset("ETH") is None:
        return
    value = eth_balance - quote.cost(ETH_TRANSFER_GAS)
    if value <= 0 or value < _minimum("ETH", eth.precision):
        return
    _sweep(w3, report, asset=eth, to=hot, units=value, gas_limit=ETH_TRANSFER_GAS, quote=quote,
           index=address.index)  # fmt: skip


def _sweep(
    w3: Any, report: SweepReport, *, asset: Any, to: str, units: int, gas_limit: int, quote: Any,
    index: int,
) -> None:  # fmt: skip
    """Sign, store and broadcast one sweep of `units` (the asset's smallest units) to `to`."""
    with durable_atomic():
        tx = sign_and_store(
            w3,
            kind=TX.Kind.SWEEP,
            asset=asset,
            to=to,
            amount=Decimal(units).scaleb(-asset.precision),
            gas_limit=gas_limit,
            max_fee=quote.max_fee_per_gas,
            priority=quote.max_priority_fee_per_gas,
            deposit_index=index,
        )
    report.sweeps.append(tx.pk)
    broadcast(w3, tx.pk)
