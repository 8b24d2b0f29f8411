"""The ledger's canonical entry bytes and hash chain. Pure Python: no Django, so an auditor's
verifier can import it without the server.

Canonical bytes of an entry: UTF-8 JSON with sorted keys, no spaces, and only strings, small
integers and null as values (so RFC 8785 and plain `json.dumps(sort_keys=True)` agree):

    {"amount": "0.01000000", "asset": "BTC", "created_at": "2026-11-25T15:09:32.123456Z",
     "credit": "escrow:trade:7", "debit": "user:3:BTC", "flags": "pending", "id": 42,
     "key": "trade:7:hold", "kind": "escrow_hold", "pending_id": null, "seq": 1, "v": 1}

`amount` is the decimal string at the asset's precision. The chain:
    hash(seq) = SHA-256(bytes.fromhex(prev_hash) || canonical bytes), prev_hash(1) = 64 zeros.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

GENESIS_HASH = "0" * 64
ENTRY_VERSION = 1


def entry_bytes(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, data: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + data).hexdigest()
