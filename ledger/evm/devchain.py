"""LOCAL DEVELOPMENT ONLY: keys from the public test mnemonic of Anvil and Hardhat.

Everyone knows these keys; coins sent to them on a real chain are stolen within seconds. They
serve `make run` (config/settings/local.py, scripts/run.sh) and the local node's faucet, and each
user refuses to run against a chain other than the local node's (chain id 31337). Production
reads EVM_XPUB, EVM_HOT_WALLET_ADDRESS and the worker's keys from its environment.

`python -m ledger.evm.devchain worker-env` prints the worker's dev keys as NAME=value lines
(scripts/run.sh passes them to the Celery worker only, never to the web server)."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_CHAIN_ID = 31337
# The deposit account and the hot wallet: accounts of the same public seed that nothing else
# funds or spends (the tests use the same paths: tests/anvil.py).
DEPOSIT_ACCOUNT_PATH = "m/44'/60'/7'"
HOT_WALLET_PATH = "m/44'/60'/8'/0/0"


def dev_account(index: int = 0) -> Any:
    """Anvil's funded account `index` (account 0: the faucet and TestUSD's deployer)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def dev_hot_wallet() -> Any:
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=HOT_WALLET_PATH)


def dev_deposit_keys() -> tuple[str, str]:
    """(xpub, xprv) of the dev deposit account."""
    from bip32 import BIP32
    from eth_account.hdaccount.mnemonic import Mnemonic

    root = BIP32.from_seed(Mnemonic.to_seed(DEV_MNEMONIC))
    return (
        root.get_xpub_from_path(DEPOSIT_ACCOUNT_PATH),
        root.get_xpriv_from_path(DEPOSIT_ACCOUNT_PATH),
    )


def worker_env() -> dict[str, str]:
    return {
        "EVM_HOT_WALLET_KEY": dev_hot_wallet().key.hex(),
        "EVM_DEPOSIT_XPRV": dev_deposit_keys()[1],
    }


def _local_node() -> Any:
    """The node of EVM_RPC_URL, refused unless it is a local development chain."""
    from django.core.exceptions import ImproperlyConfigured

    from ledger.evm.rpc import web3

    w3 = web3()
    if int(w3.eth.chain_id) != DEV_CHAIN_ID:
        raise ImproperlyConfigured(
            f"EVM_RPC_URL is chain {w3.eth.chain_id}, not the local node ({DEV_CHAIN_ID}): the "
            "development keys are public and are never used there."
        )
    return w3


def _send(w3: Any, sender: Any, tx: dict[str, Any]) -> str:
    tx = {
        **tx,
        "from": sender.address,
        "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
        "chainId": DEV_CHAIN_ID,
    }
    if "gas" not in tx:
        tx["gas"] = w3.eth.estimate_gas(tx)
    latest = w3.eth.get_block("latest")
    tx.setdefault("maxPriorityFeePerGas", w3.to_wei(1, "gwei"))
    tx.setdefault("maxFeePerGas", 2 * int(latest.get("baseFeePerGas") or 0) + w3.to_wei(1, "gwei"))
    tx_hash = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    if receipt["status"] != 1:
        raise RuntimeError(f"transaction {tx_hash.hex()} failed")
    return "0x" + bytes(tx_hash).hex()


def testusd_deploy(state_file: Path) -> tuple[str, bool]:
    """TestUSD on the local node, deployed by account 0 once: the address recorded in
    `state_file` is reused while the node still has its code. (address, deployed now)."""
    from ledger.evm.rpc import artifact

    w3 = _local_node()
    recorded = ""
    if state_file.exists():
        for line in state_file.read_text().splitlines():
            if line.startswith("EVM_USDT_CONTRACT="):
                recorded = line.split("=", 1)[1].strip()
    if recorded and w3.eth.get_code(w3.to_checksum_address(recorded)):
        return w3.to_checksum_address(recorded), False
    data = artifact("TestUSD")
    deploy = w3.eth.contract(abi=data["abi"], bytecode=data["bytecode"]).constructor()
    deployer = dev_account(0)
    tx = deploy.build_transaction({"from": deployer.address})
    tx_hash = _send(w3, deployer, {k: v for k, v in tx.items() if k in ("data", "gas")})
    address = str(w3.eth.get_transaction_receipt(tx_hash)["contractAddress"])
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(f"EVM_USDT_CONTRACT={address}\n")
    return address, True


def hot_wallet_fund(minimum_eth: Decimal = Decimal(10)) -> str | None:
    """Gas money for the dev hot wallet (sweeps and withdrawals pay fees from it): topped up to
    `minimum_eth` from account 0 when below."""
    w3 = _local_node()
    hot = dev_hot_wallet().address
    have = w3.eth.get_balance(hot)
    want = w3.to_wei(minimum_eth, "ether")
    if have >= want:
        return None
    return _send(w3, dev_account(0), {"to": hot, "value": want - have, "gas": 21_000})


def faucet_send(*, to: str, asset_code: str, amount: Decimal) -> str:
    """Send `amount` of an asset on the local node to `to`: ETH from account 0, the token minted
    by account 0 (its deployer). The transaction's hash, once mined."""
    from common.errors import ValidationFailed
    from ledger.evm.config import evm_asset
    from ledger.evm.rpc import erc20

    config = evm_asset(asset_code)
    if config is None:
        raise ValidationFailed(f"asset: {asset_code} is not on the chain here (EVM_ASSETS).")
    w3 = _local_node()
    faucet = dev_account(0)
    if config.kind == "native":
        return _send(w3, faucet, {"to": to, "value": w3.to_wei(amount, "ether"), "gas": 21_000})
    token = erc20(config.contract, w3)
    units = amount.scaleb(int(token.functions.decimals().call()))
    if units != units.to_integral_value():
        raise ValidationFailed("amount: more decimal places than the token has.")
    tx = token.functions.mint(w3.to_checksum_address(to), int(units)).build_transaction(
        {"from": faucet.address}
    )
    return _send(w3, faucet, {"to": tx["to"], "data": tx["data"]})


if __name__ == "__main__":
    if sys.argv[1:] != ["worker-env"]:
        sys.exit("usage: python -m ledger.evm.devchain worker-env")
    for name, value in worker_env().items():
        print(f"{name}={value}")
