"""A real local Ethereum node for the tests: Foundry's Anvil (npm), one per test that asks.

`AnvilNode` starts the binary on a free 127.0.0.1 port and offers the node's own test methods
(anvil_mine, evm_snapshot / evm_revert). `ChainSetup` is what the `evm` fixture (conftest.py)
builds on it: TestUSD deployed, a funded hot wallet, deposit keys, and the settings and
environment that point this process, and the workers it starts, at that node."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from bip32 import BIP32
from eth_account import Account
from eth_account.hdaccount.mnemonic import Mnemonic
from web3 import Web3

ROOT = Path(__file__).resolve().parent.parent
ANVIL_BIN = os.environ.get("ANVIL_BIN") or str(
    ROOT / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
)
# Anvil's (and Hardhat's) public test mnemonic: its accounts m/44'/60'/0'/0/i hold 10,000 ETH.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
# Our own keys come from other accounts of the same seed, so nothing else funds or spends them.
DEPOSIT_ACCOUNT_PATH = "m/44'/60'/7'"
HOT_WALLET_PATH = "m/44'/60'/8'/0/0"

Account.enable_unaudited_hdwallet_features()


def dev_account(index: int = 0) -> Any:
    """Anvil's funded account `index` (the faucet, the token's minter, a user's own wallet)."""
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def deposit_keys() -> tuple[str, str]:
    """(xpub, xprv) of the deposit account."""
    root = BIP32.from_seed(Mnemonic.to_seed(DEV_MNEMONIC))
    return root.get_xpub_from_path(DEPOSIT_ACCOUNT_PATH), root.get_xpriv_from_path(
        DEPOSIT_ACCOUNT_PATH
    )


def hot_wallet() -> Any:
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=HOT_WALLET_PATH)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AnvilNode:
    def __init__(self, *, block_time: float | None = None) -> None:
        self.block_time = block_time
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.url = ""

    def start(self, timeout: float = 30.0) -> AnvilNode:
        for _ in range(3):
            self.port = _free_port()
            argv = [ANVIL_BIN, "--host", "127.0.0.1", "--port", str(self.port), "--silent"]
            argv += ["--chain-id", "31337"]
            if self.block_time:
                argv += ["--block-time", str(self.block_time)]
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            self.url = f"http://127.0.0.1:{self.port}"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self.w3.is_connected():  # False (not an error) while nothing listens
                    return self
                time.sleep(0.02)
            self.stop()  # the port was taken, or it died: another port
        raise RuntimeError(f"anvil did not start ({ANVIL_BIN})")

    @property
    def w3(self) -> Web3:
        return Web3(Web3.HTTPProvider(self.url, request_kwargs={"timeout": 10}))

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        response = self.w3.provider.make_request(method, params or [])  # type: ignore[arg-type]
        if "error" in response:
            raise RuntimeError(f"{method}: {response['error']}")
        return response.get("result")

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", [hex(blocks)])

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> None:
        assert self.rpc("evm_revert", [snapshot_id]) is True

    def set_automine(self, on: bool) -> None:
        self.rpc("evm_setAutomine", [on])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def deploy_contract(w3: Web3, name: str, deployer: Any) -> str:
    from ledger.evm.rpc import artifact

    data = artifact(name)
    contract = w3.eth.contract(abi=data["abi"], bytecode=data["bytecode"])
    tx = contract.constructor().build_transaction(
        {"from": deployer.address, "nonce": w3.eth.get_transaction_count(deployer.address)}
    )
    signed = deployer.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction)
    )
    return str(receipt["contractAddress"])


@dataclass
class ChainSetup:
    """A node with TestUSD deployed and a funded hot wallet; what the `evm` fixture returns."""

    node: AnvilNode
    token: str  # TestUSD's address (EIP-55)
    xpub: str
    xprv: str
    hot: Any  # the hot wallet's eth_account LocalAccount
    faucet: Any  # Anvil's account 0: it deployed TestUSD, so it mints

    @property
    def w3(self) -> Web3:
        return self.node.w3

    def env(self) -> dict[str, str]:
        """What a worker process needs to reach the same node with the same keys."""
        return {
            "EVM_TEST_RPC_URL": self.node.url,
            "EVM_USDT_CONTRACT": self.token,
            "EVM_XPUB": self.xpub,
            "EVM_HOT_WALLET_ADDRESS": self.hot.address,
            "EVM_HOT_WALLET_KEY": self.hot.key.hex(),
            "EVM_DEPOSIT_XPRV": self.xprv,
        }

    def send_eth(self, to: str, amount: Decimal | str, *, sender: Any = None) -> str:
        """Send ETH from `sender` (default: the faucet); returns once it is mined (automine)."""
        sender = sender or self.faucet
        w3 = self.w3
        tx = {
            "to": Web3.to_checksum_address(to),
            "value": Web3.to_wei(Decimal(amount), "ether"),
            "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
            "gas": 21_000,
            "maxFeePerGas": w3.to_wei(50, "gwei"),
            "maxPriorityFeePerGas": w3.to_wei(1, "gwei"),
            "chainId": 31337,
        }
        return self._mined(w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction))

    def send_token(self, to: str, amount: Decimal | str, *, sender: Any = None) -> str:
        """Send TestUSD (6 decimals): minted to `to` by the faucet, else transferred by `sender`."""
        from ledger.evm.rpc import erc20

        w3 = self.w3
        units = int(Decimal(amount) * 10**6)
        token = erc20(self.token, w3)
        who = sender or self.faucet
        call = (
            token.functions.transfer(Web3.to_checksum_address(to), units)
            if sender
            else token.functions.mint(Web3.to_checksum_address(to), units)
        )
        tx = call.build_transaction(
            {"from": who.address, "nonce": w3.eth.get_transaction_count(who.address, "pending")}
        )
        return self._mined(w3.eth.send_raw_transaction(who.sign_transaction(tx).raw_transaction))

    def _mined(self, tx_hash: Any) -> str:
        """The hash, once its block is in: with automine Anvil answers the send first and mines
        a moment later (a busy machine's watcher ran in between and saw nothing)."""
        self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        return "0x" + tx_hash.hex().removeprefix("0x")

    def eth_balance(self, address: str) -> Decimal:
        return Decimal(self.w3.eth.get_balance(Web3.to_checksum_address(address))) / 10**18

    def token_balance(self, address: str) -> Decimal:
        from ledger.evm.rpc import erc20

        units = (
            erc20(self.token, self.w3).functions.balanceOf(Web3.to_checksum_address(address)).call()
        )
        return Decimal(units) / 10**6


def chain_setup(node: AnvilNode) -> ChainSetup:
    xpub, xprv = deposit_keys()
    faucet = dev_account(0)
    token = deploy_contract(node.w3, "TestUSD", faucet)
    setup = ChainSetup(
        node=node, token=token, xpub=xpub, xprv=xprv, hot=hot_wallet(), faucet=faucet
    )
    node.w3.eth.wait_for_transaction_receipt(setup.send_eth(setup.hot.address, "100"))
    node.w3.eth.wait_for_transaction_receipt(setup.send_token(setup.hot.address, "1000000"))
    return setup
