"""The chain-adapter interface: how crypto enters and leaves the platform.

The default ManualChainAdapter is moderator-driven: deposits are credited when a moderator
confirms them in the admin, withdrawals wait for a moderator to confirm they were sent. An asset
on the EVM chain (settings.EVM_ASSETS, with EVM_RPC_URL set) gets ledger.evm's adapter; every
other asset the one named in settings.CHAIN_ADAPTER (BTC has no node here: manual).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, cast

from django.conf import settings
from django.utils.module_loading import import_string
from django.utils.translation import gettext

from common.errors import ValidationFailed

if TYPE_CHECKING:
    from ledger.models import Asset, Withdrawal


@dataclass(frozen=True)
class SubmitResult:
    status: Literal["sent", "pending", "failed"]
    txid: str = ""
    reason: str = ""


class ChainAdapter:
    # Where the coins of a withdrawal leave from on the ledger: None, the outside world (manual);
    # else a custody place (ledger.services.account_custody), e.g. the EVM chain's "hot" wallet.
    withdrawal_custody: str | None = None

    def deposit_instructions(self, *, user_id: int, asset: Asset) -> str:
        raise NotImplementedError

    def deposit_address(self, *, user: Any, asset: Asset) -> str | None:
        """The user's own deposit address, where the chain has one per user; else None (the
        instructions say where to send)."""
        return None

    def validate_address(self, *, asset: Asset, address: str) -> None:
        raise NotImplementedError

    def normalize_address(self, *, asset: Asset, address: str) -> str:
        """The address as it is stored (validated first)."""
        self.validate_address(asset=asset, address=address)
        return address

    def submit_withdrawal(self, *, withdrawal: Withdrawal) -> SubmitResult:
        raise NotImplementedError

    def withdrawal_fee(self, *, asset: Asset, amount: Decimal) -> Decimal:
        """The network fee a withdrawal of `amount` costs the user now, in `asset`: held with
        the amount, posted to the platform's fees when it is sent (0: none)."""
        return Decimal(0)


class ManualChainAdapter(ChainAdapter):
    _address = re.compile(r"^[A-Za-z0-9:_\-]{8,128}$")

    def deposit_instructions(self, *, user_id: int, asset: Asset) -> str:
        return gettext(
            "Send {asset} to the platform's {asset} address with the memo U{user_id}. "
            "A moderator credits it once the transaction is confirmed."
        ).format(asset=asset.code, user_id=user_id)

    def validate_address(self, *, asset: Asset, address: str) -> None:
        if not self._address.match(address):
            raise ValidationFailed(
                gettext("address: 8-128 letters, digits, ':', '_' or '-'."),
                fields={
                    "address": [
                        gettext("Not a valid address: 8-128 letters, digits, ':', '_' or '-'.")
                    ]
                },
            )

    def submit_withdrawal(self, *, withdrawal: Withdrawal) -> SubmitResult:
        # A moderator sends it by hand and confirms (or rejects) it in the admin.
        return SubmitResult(status="pending")


@cache
def _adapter_class(path: str) -> type[ChainAdapter]:
    return cast(type[ChainAdapter], import_string(path))


def get_chain_adapter(asset: Asset | None = None) -> ChainAdapter:
    """The adapter of `asset`: the EVM chain's for an asset on it, else settings.CHAIN_ADAPTER."""
    from ledger.evm.config import evm_asset

    if asset is not None and evm_asset(asset.code):
        return _adapter_class("ledger.evm.adapter.EvmChainAdapter")()
    return _adapter_class(settings.CHAIN_ADAPTER)()
