"""The chain adapter for assets on the EVM chain (ETH natively, tokens as ERC-20)."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Any

from django.db import transaction

from common.outbox import publish_after_commit
from ledger.adapters import ChainAdapter, SubmitResult
from ledger.evm.addresses import checked_address, deposit_address_for
from ledger.evm.config import confirmations_required, evm_asset
from ledger.evm.fees import eth_withdrawal_fee_quote, token_withdrawal_fee

if TYPE_CHECKING:
    from ledger.models import Asset, Withdrawal


class EvmChainAdapter(ChainAdapter):
    """Deposits arrive at the user's own address and are credited by the watcher after
    EVM_CONFIRMATIONS blocks; withdrawals are sent by the chain's sequencer."""

    withdrawal_custody = "hot"

    def deposit_instructions(self, *, user_id: int, asset: Asset) -> str:
        config = evm_asset(asset.code)
        what = (
            f"{asset.code} (ERC-20 at {config.contract})"
            if config and config.contract
            else asset.code
        )
        return (
            f"Send {what} on Ethereum to your deposit address. It is credited after "
            f"{confirmations_required()} confirmations."
        )

    def deposit_address(self, *, user: Any, asset: Asset) -> str | None:
        return deposit_address_for(user=user).address

    def validate_address(self, *, asset: Asset, address: str) -> None:
        checked_address(address)

    def normalize_address(self, *, asset: Asset, address: str) -> str:
        return checked_address(address)

    def submit_withdrawal(self, *, withdrawal: Withdrawal) -> SubmitResult:
        # The chain's sequencer (one per chain, an advisory lock) signs and broadcasts it: woken
        # once this commits; its beat picks up whatever the wake-up missed.
        transaction.on_commit(_wake_sequencer)
        return SubmitResult(status="pending")

    def withdrawal_fee(self, *, asset: Asset, amount: Decimal) -> Decimal:
        """ETH: the gas of a transfer at the current quote (docs/chain.md); a token: the flat
        EVM_TOKEN_WITHDRAWAL_FEE, in the token."""
        config = evm_asset(asset.code)
        if config is None:
            return Decimal(0)
        if config.kind == "native":
            fee = eth_withdrawal_fee_quote()
            return fee.quantize(Decimal(1).scaleb(-asset.precision), rounding=ROUND_CEILING)
        return token_withdrawal_fee(asset.precision)


def _wake_sequencer() -> None:
    from ledger.evm.tasks import run_sequencer

    publish_after_commit(run_sequencer)
