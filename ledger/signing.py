"""The platform's Ed25519 checkpoint key. The private key comes from settings
(LEDGER_SIGNING_KEY: the 32-byte seed in hex); key ids are derived from the public key, so a
rotated key gets a new id and old checkpoints keep verifying against the old public key."""

from __future__ import annotations

import hashlib
import json
from functools import cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def signed_bytes(fields: dict[str, object]) -> bytes:
    """What a checkpoint's signature covers: its fields but `signature`, sorted-key compact JSON."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id_for(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:16]


def raw_public(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


@cache
def _private(seed_hex: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))


def current_key() -> tuple[str, Ed25519PrivateKey]:
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    seed = (settings.LEDGER_SIGNING_KEY or "").strip()
    if len(seed) != 64:
        raise ImproperlyConfigured("LEDGER_SIGNING_KEY must be a 32-byte Ed25519 seed in hex")
    key = _private(seed)
    return key_id_for(raw_public(key)), key


def verify_signature(public_key_hex: str, fields: dict[str, object], signature_hex: str) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex)).verify(
            bytes.fromhex(signature_hex), signed_bytes(fields)
        )
    except (InvalidSignature, ValueError):
        return False
    return True
