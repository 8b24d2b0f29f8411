"""The ledger's canonical entry bytes and hash chain. Pure Python: no Django, so an auditor's
verifier can import it without the server.

Canonical bytes of an entry: UTF-8 JSON with sorted keys, no spaces, and only strings, small
integers and null as values (so RFC 8785 and plain `json.dumps(sort_keys=True)` agree):

    {"amount": "0.01000000", "asset": "BTC", "created_at": "2026-11-25T15:09:32.123456Z",
     "credit": "escrow:trade:7", "debit": "user:3:BTC", "flags": "pending", "id": 42,
     "key": "trade:7:hold", "kind": "escrow_hold", "pending_id": null, "seq": 1, "v": 1}

`amount` is the decimal string at the asset's precision. The chain:
    hash(seq) = SHA-256(bytes.fromhex(prev_hash) || canonical bytes), prev_hash(1) = 64 zeros.

`canonical_entry_bytes` is the definition, the one canonical encoder of an entry. The fast
paths give the same bytes with less work, and each says so in its docstring ("fast path:
byte-for-byte equal to canonical_entry_bytes"): `plain_fields_bytes` and `fields_bytes` (from
the fields, without a dict and without json.dumps when no string needs JSON escaping),
`fast_entry_bytes` (from an entry dict, through fields_bytes when it has the canonical shape),
and the f-string inlined in `scan_rows`. ledger/tests/test_canonical.py holds every one of them
equal to canonical_entry_bytes (hypothesis). `amount_text` / `timestamp_text` render PostgreSQL's
text of a NUMERIC / a UTC timestamp the way the sealer renders the Decimal / datetime it read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, cast

GENESIS_HASH = "0" * 64
ENTRY_VERSION = 1
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


# The fields of an entry, in the order the fast paths take them; with "v": ENTRY_VERSION, the keys.
FIELDS = (
    "seq",
    "id",
    "key",
    "kind",
    "flags",
    "asset",
    "debit",
    "credit",
    "amount",
    "pending_id",
    "created_at",
)


def canonical_entry_bytes(entry: dict[str, Any]) -> bytes:
    """The canonical bytes of an entry: UTF-8 JSON, sorted keys, no spaces (see above). The
    definition: every other encoder of an entry is a fast path held equal to this one."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# The former name of canonical_entry_bytes, the same function: ledger/services/sealing.py and
# ledger/selectors.py still call it.
entry_bytes = canonical_entry_bytes


def chain_hash(prev_hash: str, data: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + data).hexdigest()


# What json.dumps(ensure_ascii=False) escapes in a string: '"', '\\' and the C0 controls.
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]').search


def plain(text: str) -> bool:
    """json.dumps(text, ensure_ascii=False) is text in quotes: nothing to escape."""
    return _NEEDS_ESCAPE(text) is None


def plain_fields_bytes(
    seq: int,
    id: int,
    key: str,
    kind: str,
    flags: str,
    asset: str,
    debit: str,
    credit: str,
    amount: str,
    pending_id: int | None,
    created_at: str,
) -> bytes:
    """Fast path: byte-for-byte equal to canonical_entry_bytes; held equal by
    ledger/tests/test_canonical.py. Of the entry with these fields (amount and created_at
    already rendered), only when every string is plain(): one f-string, no dict, no json.dumps."""
    return (
        f'{{"amount":"{amount}","asset":"{asset}","created_at":"{created_at}",'
        f'"credit":"{credit}","debit":"{debit}","flags":"{flags}","id":{id},"key":"{key}",'
        f'"kind":"{kind}","pending_id":{"null" if pending_id is None else pending_id},'
        f'"seq":{seq},"v":{ENTRY_VERSION}}}'
    ).encode()


def fields_bytes(
    seq: int,
    id: int,
    key: str,
    kind: str,
    flags: str,
    asset: str,
    debit: str,
    credit: str,
    amount: str,
    pending_id: int | None,
    created_at: str,
) -> bytes:
    """Fast path: byte-for-byte equal to canonical_entry_bytes; held equal by
    ledger/tests/test_canonical.py. Of the entry with these fields (amount and created_at
    already rendered): plain_fields_bytes when every string is plain, canonical_entry_bytes of
    the entry's dict otherwise."""
    args = (seq, id, key, kind, flags, asset, debit, credit, amount, pending_id, created_at)
    if plain(f"{key}{kind}{flags}{asset}{debit}{credit}{amount}{created_at}"):
        return plain_fields_bytes(*args)
    return canonical_entry_bytes(dict(zip(FIELDS, args, strict=True), v=ENTRY_VERSION))


_ENTRY_KEYS = frozenset([*FIELDS, "v"])


def fast_entry_bytes(entry: dict[str, Any]) -> bytes:
    """Fast path: byte-for-byte equal to canonical_entry_bytes; held equal by
    ledger/tests/test_canonical.py. For any entry dict (the offline verifier's, read from an
    export): through fields_bytes (no json.dumps of a dict) when the entry has exactly the
    canonical keys, with strings, integers and null where they belong; canonical_entry_bytes
    otherwise."""
    if entry.keys() == _ENTRY_KEYS and entry["v"] == ENTRY_VERSION and type(entry["v"]) is int:
        values = [entry[name] for name in FIELDS]
        seq, id_, key, kind, flags, asset, debit, credit, amount, pending_id, created = values
        strings = (key, kind, flags, asset, debit, credit, amount, created)
        if (
            type(seq) is int
            and type(id_) is int
            and (pending_id is None or type(pending_id) is int)
            and all(type(v) is str for v in strings)
        ):
            return fields_bytes(*values)
    return canonical_entry_bytes(entry)


def decimal_text(amount: Decimal, precision: int) -> str:
    """The canonical decimal string of an amount at a precision: common.money.fmt, repeated here
    so that this module needs nothing from the server."""
    return format(amount.quantize(Decimal(1).scaleb(-precision)), "f")


_CONTEXT_DIGITS = 28  # decimal's default context precision: quantize() raises beyond it
# PostgreSQL's text of a NUMERIC with a scale, and of a timestamp (DateStyle ISO, years 1000-9999).
_PG_NUMERIC = re.compile(r"-?(?:0|[1-9][0-9]*)\.([0-9]+)").fullmatch
_PG_TIMESTAMP = re.compile(
    r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.([0-9]{1,6}))?"
).fullmatch


def amount_text(amount: str | Decimal, precision: int) -> str:
    """decimal_text(Decimal(amount), precision) for PostgreSQL's text of a NUMERIC ("-0.0100"):
    by slicing the string when that drops only zeros, else through Decimal. A Decimal passes
    through decimal_text."""
    if type(amount) is str:
        m = _PG_NUMERIC(amount)
        if m is not None:
            dot = m.start(1) - 1
            frac = m[1]
            if (
                precision <= len(frac)
                and dot + precision <= _CONTEXT_DIGITS
                and not frac[precision:].strip("0")
            ):
                return amount[: dot + 1 + precision] if precision else amount[:dot]
        try:
            amount = Decimal(amount)
        except InvalidOperation:
            raise ValueError(f"not a decimal: {amount!r}") from None
    return decimal_text(cast(Decimal, amount), precision)


def timestamp_text(created_at: str | dt.datetime) -> str | None:
    """created_at.astimezone(UTC).strftime(TIMESTAMP_FORMAT), as the sealer renders the datetime
    it read; from a datetime, or from PostgreSQL's text of `created_at AT TIME ZONE 'UTC'`
    ("2026-01-01 00:00:00.5", DateStyle ISO) by slicing. None for a text no Python datetime
    has (a year before 1 or after 9999): no sealer could have hashed it."""
    if type(created_at) is str:
        m = _PG_TIMESTAMP(created_at)
        if m is not None:
            t = created_at
            return f"{t[:10]}T{t[11:19]}.{m[1] or '':0<6}Z"
        try:
            created_at = dt.datetime.fromisoformat(created_at)
        except ValueError:
            return None
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=dt.UTC)
    return cast(dt.datetime, created_at).astimezone(dt.UTC).strftime(TIMESTAMP_FORMAT)


# --- checking stored entries ------------------------------------------------------------------

# What scan_rows reads per entry, in this order (the table's columns; the verifier's SQL renders
# amount as NUMERIC text and created_at as UTC timestamp text, the ORM gives Decimal/datetime).
ROW_COLUMNS = (
    "seq",
    "id",
    "idempotency_key",
    "kind",
    "flags",
    "asset_id",
    "debit_account_id",
    "credit_account_id",
    "amount",
    "pending_id",
    "created_at",
    "prev_hash",
    "hash",
    "leaf_hash",
)


@dataclass
class Scan:
    """What scan_rows found in the stored entries first_seq, first_seq + 1, ...: how many check
    out, the first that does not (seq, why), the stored prev_hash of the first one (to compare
    with the hash before it, which the caller knows), the stored hash of the last good one and
    at each seq asked for, and the leaf hashes of the good ones."""

    first_seq: int
    count: int = 0
    error: tuple[int, str] | None = None
    first_prev: str | None = None
    last_hash: str | None = None
    heads: dict[int, str] = field(default_factory=dict)
    leaves: list[bytes] = field(default_factory=list)


def amount_pattern(precision: int) -> Callable[[str], re.Match[str] | None]:
    """fullmatch of the PostgreSQL texts of a NUMERIC that amount_text renders at `precision`
    by dropping zeros only (group 1: the rendering); no match: ask amount_text."""
    digits = _CONTEXT_DIGITS - precision  # quantize() keeps at most _CONTEXT_DIGITS digits
    if digits < 1:
        return re.compile(r"(?!)").fullmatch  # never: amount_text decides
    kept = rf"-?(?:0|[1-9][0-9]{{0,{digits - 1}}})"
    if precision:
        return re.compile(rf"({kept}\.[0-9]{{{precision}}})0*").fullmatch
    return re.compile(rf"({kept})(?:\.0*)?").fullmatch


_TIMESTAMP_SPLIT = re.compile(
    r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
).fullmatch


def scan_rows(
    rows: Iterable[tuple[Any, ...]],
    first_seq: int,
    last_seq: int,
    assets: Mapping[int, tuple[str, int]],
    codes: Mapping[int, str],
    heads_at: Iterable[int] = (),
) -> Scan:
    """Re-compute the entries first_seq..last_seq from their stored fields: rows of ROW_COLUMNS
    in seq order, with amount as PostgreSQL's text of the NUMERIC and created_at as its text of
    `created_at AT TIME ZONE 'UTC'` (assets: id -> (code, precision); codes: account id ->
    code). Each must be the next seq, its prev_hash the stored hash before it (the first one's:
    see Scan.first_prev), its hash SHA-256(prev_hash || canonical bytes) and its leaf_hash
    SHA-256(0x00 || canonical bytes). Stops at the first one that is not.

    The canonical bytes are plain_fields_bytes() of the strings amount_text() and
    timestamp_text() render, inlined for the common case (the same functions otherwise). Fast
    path: byte-for-byte equal to canonical_entry_bytes; held equal by
    ledger/tests/test_canonical.py."""
    sha = hashlib.sha256
    escapes = _NEEDS_ESCAPE
    split_timestamp = _TIMESTAMP_SPLIT
    version = ENTRY_VERSION
    by_asset = {
        pk: (code, precision, amount_pattern(precision)) for pk, (code, precision) in assets.items()
    }
    known_plain: set[str] = set()  # kinds, flags and codes seen plain()
    scan = Scan(first_seq)
    leaves = scan.leaves
    heads = sorted(set(heads_at), reverse=True)
    next_head = heads.pop() if heads else 0
    expected = first_seq
    prev_hex: str | None = None
    prev_raw = b""
    error = None
    for (
        seq, id_, key, kind, flags, asset_id, debit, credit, amount, pending_id, created,
        stored_prev, stored_hash, stored_leaf,
    ) in rows:  # fmt: skip
        if seq != expected:
            error = (expected, f"seq {expected}: missing or out of order (found seq {seq} next)")
            break
        if stored_prev != prev_hex:
            if prev_hex is not None:
                error = (seq, f"seq {seq}: prev_hash does not match the hash of seq {seq - 1}")
                break
            scan.first_prev = stored_prev  # the first one: the caller compares it
            try:
                prev_raw = bytes.fromhex(stored_prev)
            except ValueError:
                error = (seq, f"seq {seq}: prev_hash is not hex")
                break
        try:
            asset, precision, amount_match = by_asset[asset_id]
            debit_code = codes[debit]
            credit_code = codes[credit]
            m = amount_match(amount)
            if m is not None:
                amount_s = m[1]
            else:
                amount_s = amount_text(amount, precision)
                if Decimal(amount) != Decimal(amount_s):
                    # The canonical bytes carry the asset's precision: a change below it
                    # would hash the same, so finer digits are themselves the tampering.
                    error = (
                        seq,
                        f"seq {seq}: entry was altered (amount {amount} is finer than {asset}'s "
                        f"{precision} decimals)",
                    )
                    break
            if split_timestamp(created) is None:
                created_s = timestamp_text(created)
                if created_s is None:
                    error = (seq, f"seq {seq}: entry was altered (created_at {created!r})")
                    break
            elif len(created) == 26:
                created_s = created.replace(" ", "T", 1) + "Z"
            else:
                created_s = f"{created[:10]}T{created[11:19]}.{created[20:]:0<6}Z"
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            error = (seq, f"seq {seq}: entry cannot be encoded ({type(exc).__name__}: {exc})")
            break
        if escapes(key) is None and (
            kind in known_plain
            and flags in known_plain
            and asset in known_plain
            and debit_code in known_plain
            and credit_code in known_plain
        ):
            # plain_fields_bytes(), inlined. Fast path: byte-for-byte equal to
            # canonical_entry_bytes; held equal by ledger/tests/test_canonical.py.
            data = (
                f'{{"amount":"{amount_s}","asset":"{asset}","created_at":"{created_s}",'
                f'"credit":"{credit_code}","debit":"{debit_code}","flags":"{flags}","id":{id_},'
                f'"key":"{key}","kind":"{kind}","pending_id":'
                f'{"null" if pending_id is None else pending_id},"seq":{seq},"v":{version}}}'
            ).encode()
        else:
            if len(known_plain) > 100_000:
                known_plain.clear()
            known_plain.update(s for s in (kind, flags, asset, debit_code, credit_code) if plain(s))
            data = fields_bytes(
                seq, id_, key, kind, flags, asset, debit_code, credit_code, amount_s,
                pending_id, created_s,
            )  # fmt: skip
        digest = sha(prev_raw + data).digest()
        if digest.hex() != stored_hash:
            error = (seq, f"seq {seq}: entry was altered (hash mismatch)")
            break
        leaf = sha(b"\x00" + data).digest()
        if leaf.hex() != stored_leaf:
            error = (seq, f"seq {seq}: stored Merkle leaf hash does not match the entry")
            break
        leaves.append(leaf)
        if seq == next_head:
            scan.heads[seq] = stored_hash
            next_head = heads.pop() if heads else 0
        prev_raw = digest
        prev_hex = stored_hash
        expected += 1
    if error is None and expected <= last_seq:
        error = (expected, f"seq {expected}: missing (no sealed entry until seq {last_seq})")
    scan.error = error
    scan.count = expected - first_seq
    scan.last_hash = prev_hex
    return scan
