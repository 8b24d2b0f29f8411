"""The chain adapter for assets on the EVM chain (ETH natively, tokens as ERC-20)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledger.adapters import ChainAdapter, SubmitResult
from ledger.evm.addresses import checked_address, deposit_address_for
from ledger.evm.config import confirmations_required, evm_asset

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
        # The chain's sequencer (one per chain, an advisory lock) signs and broadcasts it.
        return SubmitResult(status="pending")
