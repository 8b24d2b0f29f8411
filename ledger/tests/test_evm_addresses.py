"""Deposit addresses derived from the xpub alone, EIP-55 everywhere, and the EVM adapter chosen
per asset, against a real local node (Anvil)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from eth_account import Account
from eth_utils import is_checksum_address

from common.errors import ValidationFailed
from ledger import services
from ledger.adapters import ManualChainAdapter, get_chain_adapter
from ledger.evm.adapter import EvmChainAdapter
from ledger.evm.addresses import (
    checked_address,
    deposit_address_for,
    derive_address,
    derive_private_key,
)
from ledger.models import Asset, LedgerAccount, Withdrawal
from marketplace.tests.factories import fund
from tests.anvil import DEPOSIT_ACCOUNT_PATH, DEV_MNEMONIC, deposit_keys

pytestmark = pytest.mark.django_db


def test_an_address_from_the_xpub_is_the_one_the_private_key_controls():
    xpub, xprv = deposit_keys()
    for index in (0, 1, 7, 2**31 - 1):
        from_xpub = derive_address(index, xpub=xpub)
        assert is_checksum_address(from_xpub)
        # the same address from the private key (what the sweeper signs with)
        assert Account.from_key(derive_private_key(index, xprv=xprv)).address == from_xpub
        # and from the mnemonic through eth-account's own HD path (BIP-44 external chain)
        Account.enable_unaudited_hdwallet_features()
        account = Account.from_mnemonic(
            DEV_MNEMONIC, account_path=f"{DEPOSIT_ACCOUNT_PATH}/0/{index}"
        )
        assert account.address == from_xpub


def test_each_user_has_one_address_per_chain(evm, alice, bob):
    a1 = deposit_address_for(user=alice)
    a2 = deposit_address_for(user=alice)
    b = deposit_address_for(user=bob)
    assert a1.pk == a2.pk
    assert a1.address != b.address
    assert a1.address == derive_address(alice.pk, xpub=evm.xpub)


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("0x12", "40 hexadecimal digits"),
        ("bc1qdestination000000000", "40 hexadecimal digits"),
        ("0xZZ3456789012345678901234567890123456789A", "40 hexadecimal digits"),
        # EIP-55's own example with its last letter raised: a typo the checksum catches
        ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", "checksum"),
        ("0x0000000000000000000000000000000000000000", "zero address"),
    ],
)
def test_a_malformed_or_miss_checksummed_address_is_refused(address, rule):
    with pytest.raises(ValidationFailed) as refused:
        checked_address(address)
    assert rule in str(refused.value)
    assert "address" in refused.value.fields


def test_a_lower_case_address_is_stored_checksummed():
    assert (
        checked_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
        == "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    )


def test_assets_on_the_chain_get_its_adapter_and_btc_stays_manual(evm, refdata):
    assert isinstance(get_chain_adapter(Asset.objects.get(code="ETH")), EvmChainAdapter)
    assert isinstance(get_chain_adapter(Asset.objects.get(code="USDT")), EvmChainAdapter)
    assert isinstance(get_chain_adapter(Asset.objects.get(code="BTC")), ManualChainAdapter)


def test_without_a_node_every_asset_is_manual(refdata):
    assert isinstance(get_chain_adapter(Asset.objects.get(code="ETH")), ManualChainAdapter)


def test_a_withdrawal_to_a_bad_address_changes_nothing(evm, alice):
    fund(alice, "ETH", "1")
    with pytest.raises(ValidationFailed, match="checksum"):
        services.withdrawal_request(
            user=alice,
            asset_code="ETH",
            amount="0.5",
            address="0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
        )
    assert not Withdrawal.objects.exists()
    eth = Asset.objects.get(code="ETH")
    assert services.account_for_user(user=alice, asset=eth).available == Decimal(1)


def test_an_evm_withdrawal_holds_against_the_hot_wallet_custody(evm, alice):
    fund(alice, "ETH", "1")
    w = services.withdrawal_request(
        user=alice,
        asset_code="ETH",
        amount="0.25",
        address="0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
    )
    assert w.address == "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    hold = w.hold
    assert hold is not None
    assert LedgerAccount.objects.get(pk=hold.credit_account_id).code == "custody:ETH:hot"


def test_the_node_is_real_and_the_token_has_six_decimals(evm):
    from ledger.evm.rpc import erc20, web3

    assert web3().eth.chain_id == 31337
    token = erc20(evm.token)
    assert token.functions.decimals().call() == 6
    assert evm.token_balance(evm.hot.address) == Decimal(1_000_000)
    assert evm.eth_balance(evm.hot.address) == Decimal(100)
