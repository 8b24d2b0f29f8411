"""One web3.py client per process for EVM_RPC_URL, with a timeout on every call."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings
from web3 import Web3
from web3.contract import Contract

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@cache
def _client(url: str, timeout: float) -> Web3:
    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": timeout}))


def web3() -> Web3:
    """The node of EVM_RPC_URL (read each call, so a test's node replaces it)."""
    return _client(settings.EVM_RPC_URL, float(settings.EVM_RPC_TIMEOUT))


@cache
def artifact(name: str) -> dict[str, Any]:
    """A contract compiled by scripts/compile_contracts.js: {"abi", "bytecode", ...}."""
    data: dict[str, Any] = json.loads((ARTIFACTS / f"{name}.json").read_text())
    return data


def erc20(address: str, w3: Web3 | None = None) -> Contract:
    """The ERC-20 at `address` (TestUSD's ABI is the standard ERC-20's plus mint)."""
    return (w3 or web3()).eth.contract(
        address=Web3.to_checksum_address(address), abi=artifact("TestUSD")["abi"]
    )
