"""The chain's private keys, read from the environment (or a file it names, for Docker secrets)
by the worker's code when it signs; never stored in settings, the database or the web process.

- EVM_HOT_WALLET_KEY / EVM_HOT_WALLET_KEY_FILE: the hot wallet's private key (hex).
- EVM_DEPOSIT_XPRV / EVM_DEPOSIT_XPRV_FILE: the deposit account's xprv (sweeps)."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


def secret(name: str) -> str:
    """The value of NAME, else the contents of the file NAME_FILE names, else ''."""
    value = os.environ.get(name, "").strip()
    if value:
        return value
    path = os.environ.get(f"{name}_FILE", "").strip()
    return Path(path).read_text().strip() if path else ""


def hot_wallet_key() -> str:
    key = secret("EVM_HOT_WALLET_KEY")
    if not key:
        raise ImproperlyConfigured("EVM_HOT_WALLET_KEY (or _FILE) is not set: nothing can be sent.")
    return key


def deposit_xprv() -> str:
    xprv = secret("EVM_DEPOSIT_XPRV")
    if not xprv:
        raise ImproperlyConfigured("EVM_DEPOSIT_XPRV (or _FILE) is not set: nothing can be swept.")
    return xprv
