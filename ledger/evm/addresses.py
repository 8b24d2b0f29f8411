"""Deposit addresses: one per user per chain, derived by BIP-32 public derivation from the
account-level extended public key (EVM_XPUB, the xpub of m/44'/60'/0'): user N's address is
xpub/0/N (BIP-44's external chain). The web process holds only the xpub, never a private key;
the sweeper derives the matching keys from EVM_DEPOSIT_XPRV, which only the worker has.

Addresses are EIP-55 checksummed everywhere; a mixed-case address whose checksum is wrong is
refused, as wallets do."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from bip32 import BIP32
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext
from eth_keys import keys
from eth_utils import is_checksum_address, is_hex_address, to_checksum_address

from common.errors import ValidationFailed
from ledger.evm.config import CHAIN

if TYPE_CHECKING:
    from ledger.evm.models import DepositAddress

MAX_INDEX = 2**31 - 1  # non-hardened child indexes


@cache
def _account_node(xpub: str) -> BIP32:
    try:
        return BIP32.from_xpub(xpub)
    except Exception as exc:
        raise ImproperlyConfigured(f"EVM_XPUB is not an extended public key: {exc}") from exc


def derive_address(index: int, *, xpub: str | None = None) -> str:
    """The EIP-55 address of xpub/0/index."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"deposit index out of range: {index}")
    xpub = xpub if xpub is not None else settings.EVM_XPUB
    if not xpub:
        raise ImproperlyConfigured("EVM_XPUB is not set: no deposit addresses can be derived.")
    compressed = _account_node(xpub).get_pubkey_from_path(f"m/0/{index}")
    return str(keys.PublicKey.from_compressed_bytes(compressed).to_checksum_address())


def derive_private_key(index: int, *, xprv: str) -> bytes:
    """The private key of xprv/0/index (the sweeper only: xprv never reaches the web process)."""
    key: bytes = BIP32.from_xpriv(xprv).get_privkey_from_path(f"m/0/{index}")
    return key


def checked_address(address: str, *, field: str = "address") -> str:
    """`address` as EIP-55, or a ValidationFailed naming the field: not 0x + 40 hex digits, or
    mixed case with a wrong checksum (all-lower or all-upper carries no checksum)."""
    value = (address or "").strip()
    if not is_hex_address(value):
        message = gettext("Not an Ethereum address: 0x followed by 40 hexadecimal digits.")
        raise ValidationFailed(f"{field}: {message}", fields={field: [message]})
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        message = gettext("The address's checksum (its mix of capitals, EIP-55) is wrong: a typo?")
        raise ValidationFailed(f"{field}: {message}", fields={field: [message]})
    checksummed: str = to_checksum_address(value)
    if int(checksummed, 16) == 0:
        message = gettext("The zero address burns what is sent to it.")
        raise ValidationFailed(f"{field}: {message}", fields={field: [message]})
    return checksummed


def deposit_address_for(*, user: Any) -> DepositAddress:
    """The user's deposit address on the chain, created on first ask (index = the user's id, so
    it is the same on every host and needs no counter)."""
    from ledger.evm.models import DepositAddress

    existing = DepositAddress.objects.filter(user=user, chain=CHAIN).first()
    if existing:
        return existing
    index = int(user.pk)
    address, _ = DepositAddress.objects.get_or_create(
        user=user, chain=CHAIN, defaults={"index": index, "address": derive_address(index)}
    )
    return address
