"""Which assets live on the EVM chain, and how: settings.EVM_ASSETS maps an asset code to
{"kind": "native"} (ETH) or {"kind": "erc20", "contract": "0x..."} (a token). An asset absent
from it, or every asset while EVM_RPC_URL is empty, stays on the manual adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from django.conf import settings
from eth_utils import to_checksum_address

CHAIN = "eth"  # the chain's name in the database (one EVM chain per deployment today)


@dataclass(frozen=True)
class EvmAsset:
    code: str
    kind: Literal["native", "erc20"]
    contract: str = ""  # EIP-55; "" for the native coin


def enabled() -> bool:
    return bool(settings.EVM_RPC_URL)


def evm_asset(code: str) -> EvmAsset | None:
    """The chain configuration of an asset, or None when it is not on the chain."""
    if not enabled():
        return None
    entry = settings.EVM_ASSETS.get(code)
    if not entry:
        return None
    if entry.get("kind") == "erc20":
        contract = entry.get("contract") or ""
        if not contract:
            return None  # a token whose contract is not configured is not on the chain here
        return EvmAsset(code=code, kind="erc20", contract=to_checksum_address(contract))
    return EvmAsset(code=code, kind="native")


def evm_assets() -> list[EvmAsset]:
    return [a for code in settings.EVM_ASSETS if (a := evm_asset(code))]


def confirmations_required() -> int:
    return int(settings.EVM_CONFIRMATIONS)
