"""Gas prices (EIP-1559) from the node's fee history, and the withdrawal fee users are quoted.

The next block's base fee is the last entry of `eth_feeHistory`'s baseFeePerGas; a transaction
offers that times EVM_BASE_FEE_MARGIN (the base fee rises at most 12.5% a block, so a margin of 2
survives about six full blocks) plus a priority fee: the EVM_PRIORITY_FEE_PERCENTILE of what the
last EVM_FEE_HISTORY_BLOCKS blocks' transactions tipped, at least EVM_MIN_PRIORITY_FEE_GWEI."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache

from ledger.evm.rpc import web3

if TYPE_CHECKING:
    from web3 import Web3

ETH_TRANSFER_GAS = 21_000
GWEI = 10**9
WEI_PER_ETH = 10**18
QUOTE_CACHE_SECONDS = 15  # what the wallet page shows need not ask the node on every view


@dataclass(frozen=True)
class GasQuote:
    base_fee: int  # the next block's, wei
    max_priority_fee_per_gas: int  # wei
    max_fee_per_gas: int  # wei

    def cost(self, gas_limit: int) -> int:
        """The most `gas_limit` gas can cost at this quote, in wei."""
        return gas_limit * self.max_fee_per_gas


def gas_quote(w3: Web3 | None = None) -> GasQuote:
    """What a transaction sent now offers per gas, from the node's fee history."""
    w3 = w3 or web3()
    percentile = float(settings.EVM_PRIORITY_FEE_PERCENTILE)
    history = w3.eth.fee_history(int(settings.EVM_FEE_HISTORY_BLOCKS), "latest", [percentile])
    base_fee = int(history["baseFeePerGas"][-1])
    tips = [int(r[0]) for r in history.get("reward") or [] if r]
    floor = int(Decimal(str(settings.EVM_MIN_PRIORITY_FEE_GWEI)) * GWEI)
    priority = max(int(statistics.median(tips)) if tips else 0, floor)
    margin = Decimal(str(settings.EVM_BASE_FEE_MARGIN))
    max_fee = int((base_fee * margin).to_integral_value(ROUND_CEILING)) + priority
    return GasQuote(base_fee=base_fee, max_priority_fee_per_gas=priority, max_fee_per_gas=max_fee)


def bumped(old_max_fee: int, old_priority: int, now: GasQuote) -> tuple[int, int]:
    """The fees of a replacement: at least +12.5% on both (nodes refuse a replacement below
    +10%), and at least what a new transaction would offer now. (max_fee, priority)."""
    priority = max(-(-old_priority * 9 // 8), now.max_priority_fee_per_gas)
    max_fee = max(-(-old_max_fee * 9 // 8), now.max_fee_per_gas, priority)
    return max_fee, priority


def wei_to_eth(wei: int) -> Decimal:
    return Decimal(wei) / WEI_PER_ETH


def eth_withdrawal_fee_quote() -> Decimal:
    """An ETH withdrawal's fee now: 21,000 gas at the quote's max fee per gas (cached briefly,
    so that the page and the request a moment later agree)."""
    key = f"evm-eth-withdrawal-fee:{settings.EVM_RPC_URL}"
    cached = cache.get(key)
    if cached is not None:
        return Decimal(cached)
    fee = wei_to_eth(gas_quote().cost(ETH_TRANSFER_GAS))
    cache.set(key, str(fee), QUOTE_CACHE_SECONDS)
    return fee


def token_withdrawal_fee(precision: int) -> Decimal:
    """A token withdrawal's fee: a flat EVM_TOKEN_WITHDRAWAL_FEE in the token (the gas is paid in
    ETH, and the price that would convert it lives in marketplace, above the ledger)."""
    fee = Decimal(str(settings.EVM_TOKEN_WITHDRAWAL_FEE))
    return fee.quantize(Decimal(1).scaleb(-precision), rounding=ROUND_CEILING)
