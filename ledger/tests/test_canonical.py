"""Every fast path gives exactly the canonical bytes (hypothesis).

ledger.chain.canonical_entry_bytes (json.dumps of a dict) is the definition; its fast paths
(plain_fields_bytes, fields_bytes, fast_entry_bytes and ledger.verify.entry_data through it, the
f-string inlined in scan_rows) must give the same bytes, and amount_text / amount_pattern
(PostgreSQL's NUMERIC text) and timestamp_text (its timestamp text) must agree with
common.money.fmt and strftime, for arbitrary values; the texts PostgreSQL really prints are
checked against the database too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from decimal import ROUND_DOWN, Decimal, InvalidOperation, getcontext, localcontext

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from common.money import fmt
from ledger import chain, merkle, verify
from ledger.services.sealing import entry_from_values

# Any text, including what JSON must escape ('"', '\\', controls), non-ASCII and lone surrogates.
texts = st.text(max_size=40) | st.sampled_from(['a"b', "a\\b", "a\nb", "\x00", "\x1f", "\x7f", "é"])
ints = st.integers(min_value=-(2**70), max_value=2**70)
precisions = st.integers(min_value=0, max_value=18)
# What PostgreSQL stores in NUMERIC(40, 18), as it prints it: 18 decimals.
amounts = st.decimals(
    min_value=Decimal("-9999999999999999999999.999999999999999999"),
    max_value=Decimal("9999999999999999999999.999999999999999999"),
    places=18,
    allow_nan=False,
    allow_infinity=False,
)
datetimes = st.datetimes(
    min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999999)
)


def pg_numeric(amount: Decimal) -> str:
    """How PostgreSQL prints a NUMERIC(40, 18)."""
    with localcontext(prec=60):
        return format(amount.quantize(Decimal("1E-18")), "f")


def pg_timestamp(moment: dt.datetime) -> str:
    """How PostgreSQL prints a timestamp (DateStyle ISO): trailing zeros of the fraction cut."""
    text = moment.isoformat(" ", timespec="seconds")  # years zero-padded to 4 digits
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    return text


def outcome(fn, *args):
    """fn(*args), or the type of what it raised."""
    try:
        return fn(*args)
    except (UnicodeEncodeError, InvalidOperation, ValueError) as exc:
        return type(exc)


def test_decimal_context_is_the_default():
    assert getcontext().prec == 28  # amount_pattern's digit limit assumes it


@given(texts)
@example('"')
@example("\\")
@example("\x7f\u2028")
def test_plain_means_json_leaves_the_string_alone(text):
    assert chain.plain(text) == (json.dumps(text, ensure_ascii=False) == f'"{text}"')


@settings(max_examples=500)
@given(
    seq=ints,
    id=ints,
    key=texts,
    kind=texts,
    flags=texts,
    asset=texts,
    debit=texts,
    credit=texts,
    amount=texts,
    pending_id=st.none() | ints,
    created_at=texts,
)
def test_every_fast_path_is_canonical_entry_bytes(**fields):
    # given an entry of the canonical shape, its fields in chain.FIELDS order
    entry = {**fields, "v": chain.ENTRY_VERSION}
    values = [fields[name] for name in chain.FIELDS]
    # when / then
    canonical = outcome(chain.canonical_entry_bytes, entry)
    assert outcome(chain.fields_bytes, *values) == canonical
    assert outcome(chain.fast_entry_bytes, entry) == canonical
    assert outcome(verify.entry_data, entry) == canonical
    if all(chain.plain(v) for v in values if isinstance(v, str)):
        assert outcome(chain.plain_fields_bytes, *values) == canonical
    # (the f-string inlined in scan_rows: test_scan_rows_inlined_bytes_are_canonical)


FAST_PATH_MARK = "fast path: byte-for-byte equal to canonical_entry_bytes"
# The functions that say FAST_PATH_MARK in their docstring, each held equal to
# canonical_entry_bytes by a test here: a new fast path must be added to this list and to a test.
FAST_PATHS = {
    "ledger.chain.plain_fields_bytes": "test_every_fast_path_is_canonical_entry_bytes",
    "ledger.chain.fields_bytes": "test_every_fast_path_is_canonical_entry_bytes",
    "ledger.chain.fast_entry_bytes": "test_fast_entry_bytes_of_any_dict_is_canonical",
    "ledger.verify.entry_data": "test_fast_entry_bytes_of_any_dict_is_canonical",
    "ledger.chain.scan_rows": "test_scan_rows_inlined_bytes_are_canonical",
}


def test_every_fast_path_is_listed():
    # given every function of the modules that encode entries
    marked = {
        f"{module.__name__}.{name}"
        for module in (chain, verify)
        for name, function in vars(module).items()
        if callable(function)
        and getattr(function, "__module__", None) == module.__name__
        and FAST_PATH_MARK in " ".join((function.__doc__ or "").split()).lower()
    }
    # then
    assert marked == set(FAST_PATHS)
    assert set(FAST_PATHS.values()) <= set(globals())
    assert chain.entry_bytes is chain.canonical_entry_bytes  # the old name, not another encoder


@settings(max_examples=500)
@given(amounts, precisions)
@example(Decimal("0.00001"), 8)
@example(Decimal("-0"), 2)
@example(Decimal("0.000000001"), 8)  # a digit beyond the precision: rounded by Decimal
@example(Decimal("1234567890123456789012"), 8)  # too many digits for quantize: it raises
@example(Decimal("12.5"), 0)
def test_amount_text_is_fmt(amount, precision):
    text = pg_numeric(amount)
    expected = outcome(fmt, Decimal(text), precision)
    assert outcome(chain.amount_text, text, precision) == expected
    assert outcome(chain.amount_text, Decimal(text), precision) == expected
    match = chain.amount_pattern(precision)(text)
    if match is not None:  # the inlined fast path in scan_rows
        assert match[1] == expected


@given(texts, precisions)
def test_amount_pattern_never_disagrees_on_any_text(text, precision):
    match = chain.amount_pattern(precision)(text)
    if match is not None:
        assert match[1] == fmt(Decimal(text), precision)


@settings(max_examples=500)
@given(datetimes, st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5))]))
@example(dt.datetime(999, 1, 1), dt.UTC)  # strftime prints year 999 without a leading 0
@example(dt.datetime(2026, 1, 1, 0, 0, 0, 500000), dt.UTC)
def test_timestamp_text_is_the_sealers_strftime(moment, zone):
    aware = moment.replace(tzinfo=dt.UTC).astimezone(zone)
    expected = aware.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert chain.timestamp_text(aware) == expected
    assert chain.timestamp_text(pg_timestamp(moment)) == expected


def test_timestamps_no_python_datetime_has():
    assert chain.timestamp_text("0044-03-15 12:00:00 BC") is None
    assert chain.timestamp_text("10000-01-01 00:00:00") is None


# --- against PostgreSQL's own output -----------------------------------------------------------


@pytest.mark.django_db
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(amount=amounts, precision=precisions, moment=datetimes)
def test_what_postgresql_prints(amount, precision, moment):
    from django.db import connection, transaction

    from conftest import require_postgres

    require_postgres()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL DateStyle = ISO")
        cursor.execute(
            "SELECT CAST(CAST(%s AS numeric(40, 18)) AS text),"
            " CAST(CAST(%s AS timestamptz) AT TIME ZONE 'UTC' AS text)",
            [amount, moment.replace(tzinfo=dt.UTC)],
        )
        amount_sql, moment_sql = cursor.fetchone()
    assert amount_sql == pg_numeric(amount)
    assert outcome(chain.amount_text, amount_sql, precision) == outcome(fmt, amount, precision)
    assert chain.timestamp_text(moment_sql) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- scan_rows, end to end -------------------------------------------------------------------

CODES = {1: "world:BTC", 2: "user:7:BTC", 3: 'odd"code', 4: "escrow:trade:9"}
ASSETS = {1: ("BTC", 8), 2: ("ETH", 18), 3: ("EUR\\", 2)}

entries = st.fixed_dictionaries(
    {
        "id": st.integers(min_value=1, max_value=2**40),
        "key": texts,
        "kind": st.sampled_from(["deposit", "escrow_hold", 'we"ird']),
        "flags": st.sampled_from(["single", "pending", "post_pending"]),
        "asset_id": st.sampled_from(sorted(ASSETS)),
        "debit": st.sampled_from(sorted(CODES)),
        "credit": st.sampled_from(sorted(CODES)),
        "amount": amounts.filter(lambda a: a > 0),
        "pending_id": st.none() | st.integers(min_value=1, max_value=2**40),
        "created_at": datetimes,
    }
)


def sealed_rows(items: list[dict], assets: dict = ASSETS, codes: dict = CODES) -> list[tuple]:
    """Rows as the verifier reads them, hashed the sealer's way (transfer_entry's fields through
    entry_from_values and canonical_entry_bytes)."""
    rows, prev = [], chain.GENESIS_HASH
    for seq, e in enumerate(items, start=1):
        code, precision = assets[e["asset_id"]]
        # The services store amounts at the asset's precision (finer digits are tampering).
        quantum = Decimal(1).scaleb(-precision)
        e = {**e, "amount": max(e["amount"].quantize(quantum, rounding=ROUND_DOWN), quantum)}
        created = e["created_at"].replace(tzinfo=dt.UTC)
        data = chain.canonical_entry_bytes(
            entry_from_values(
                seq=seq,
                id=e["id"],
                key=e["key"],
                kind=e["kind"],
                flags=e["flags"],
                asset_code=code,
                precision=precision,
                debit=codes[e["debit"]],
                credit=codes[e["credit"]],
                amount=e["amount"],
                pending_id=e["pending_id"],
                created_at=created,
            )
        )
        this = chain.chain_hash(prev, data)
        leaf = merkle.leaf_hash(data).hex()
        row = (seq, e["id"], e["key"], e["kind"], e["flags"], e["asset_id"], e["debit"])
        row += (e["credit"], pg_numeric(e["amount"]), e["pending_id"])
        row += (pg_timestamp(e["created_at"]), prev, this, leaf)
        rows.append(row)
        prev = this
    return rows


def encodable(e: dict) -> bool:
    return encodable_with(e, ASSETS)


def encodable_with(e: dict, assets: dict) -> bool:
    try:
        e["key"].encode()
        fmt(e["amount"], assets[e["asset_id"]][1])
    except (UnicodeEncodeError, InvalidOperation):
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(st.lists(entries.filter(encodable), min_size=1, max_size=12), st.data())
def test_scan_rows_recomputes_the_sealers_hashes(items, data):
    rows = sealed_rows(items)
    scan = chain.scan_rows(rows, 1, len(rows), ASSETS, CODES, [len(rows)])
    assert scan.error is None, scan.error
    assert scan.count == len(rows)
    assert [leaf.hex() for leaf in scan.leaves] == [row[13] for row in rows]
    assert scan.heads == {len(rows): rows[-1][12]}
    # Change one stored field of one entry: caught at that seq.
    seq = data.draw(st.integers(min_value=1, max_value=len(rows)))
    column = data.draw(st.sampled_from([1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 13]))
    row = list(rows[seq - 1])
    row[column] = {
        1: lambda v: v + 1,
        2: lambda v: v + "x",
        3: lambda v: "withdrawal",
        4: lambda v: "void_pending",
        5: lambda v: 2 if v != 2 else 1,
        6: lambda v: 4 if v != 4 else 1,
        # one unit at the asset's precision (below it, the canonical string is the same)
        8: lambda v: pg_numeric(Decimal(v) + Decimal(1).scaleb(-ASSETS[row[5]][1])),
        9: lambda v: 5 if v is None else None,
        10: lambda v: "2027" + v[4:],
        12: lambda v: "f" * 64,
        13: lambda v: "0" * 64,
    }[column](row[column])
    if tuple(row) == rows[seq - 1]:
        return
    bad = chain.scan_rows([*rows[: seq - 1], tuple(row), *rows[seq:]], 1, len(rows), ASSETS, CODES)
    assert bad.error is not None
    assert bad.error[0] == seq, bad.error


# Any text a sealer can encode (no lone surrogates), plain or not.
encodable_texts = st.text(
    st.characters(blacklist_categories=["Cs"]), max_size=12
) | st.sampled_from(['a"b', "a\\b", "a\nb", "é", "\u2028"])


@settings(max_examples=200, deadline=None)
@given(
    strings=st.fixed_dictionaries(
        {name: encodable_texts for name in ("key", "kind", "flags", "asset", "debit", "credit")}
    ),
    precision=precisions,
    entry=entries,
)
def test_scan_rows_inlined_bytes_are_canonical(strings, precision, entry):
    """The f-string inlined in scan_rows runs for an entry whose kind, flags, asset and account
    codes it has seen plain() before: the same strings three times, any of them."""
    # given
    assets = {1: (strings["asset"], precision)}
    codes = {1: strings["debit"], 2: strings["credit"]}
    e = {**entry, "key": strings["key"], "kind": strings["kind"], "flags": strings["flags"]}
    e |= {"asset_id": 1, "debit": 1, "credit": 2}
    assume(encodable_with(e, assets))
    items = [{**e, "id": e["id"] + i} for i in range(3)]
    rows = sealed_rows(items, assets, codes)
    # when
    scan = chain.scan_rows(rows, 1, len(rows), assets, codes)
    # then
    assert scan.error is None, scan.error
    assert [leaf.hex() for leaf in scan.leaves] == [row[13] for row in rows]


def _deposits(count: int) -> list[dict]:
    """count plain BTC deposits of 0.5, a second apart."""
    return [
        {
            "id": i,
            "key": f"k{i}",
            "kind": "deposit",
            "flags": "single",
            "asset_id": 1,
            "debit": 1,
            "credit": 2,
            "amount": Decimal("0.5"),
            "pending_id": None,
            "created_at": dt.datetime(2026, 1, 1, 0, 0, i),
        }
        for i in range(1, count + 1)
    ]


def test_scan_rows_refuses_digits_below_the_assets_precision():
    rows = sealed_rows(_deposits(3))
    assert chain.scan_rows(rows, 1, 3, ASSETS, CODES).error is None
    finer = list(rows[1])
    finer[8] = "0.500000000000000001"  # what the sealer would have hashed as 0.50000000
    bad = chain.scan_rows([rows[0], tuple(finer), rows[2]], 1, 3, ASSETS, CODES)
    assert bad.error == (
        2,
        "seq 2: entry was altered (amount 0.500000000000000001 is finer than BTC's 8 decimals)",
    )


def test_scan_rows_names_the_first_gap():
    items = _deposits(5)
    rows = sealed_rows(items)
    assert chain.scan_rows(rows, 1, 5, ASSETS, CODES).error is None
    assert chain.scan_rows(rows[:2] + rows[3:], 1, 5, ASSETS, CODES).error[0] == 3
    assert chain.scan_rows(rows[:4], 1, 5, ASSETS, CODES).error[0] == 5
    later = chain.scan_rows(rows[2:], 3, 5, ASSETS, CODES)  # a range: prev left to the caller
    assert later.error is None
    assert later.first_prev == rows[1][12]
    assert hashlib.sha256(bytes.fromhex(rows[1][12])).digest()  # hex, as stored


# --- the offline verifier's encoder ----------------------------------------------------------

values = st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=False), texts)


@settings(max_examples=300)
@given(
    st.fixed_dictionaries({name: values for name in chain.FIELDS}),
    st.sampled_from([1, True, 1.0, 2, None]),
    st.dictionaries(texts, values, max_size=2),
    st.sets(st.sampled_from(chain.FIELDS), max_size=2),
)
def test_fast_entry_bytes_of_any_dict_is_canonical(fields, version, extra, dropped):
    # given any dict an export could hold: wrong types, versions, extra and missing keys
    entry = {**fields, "v": version, **extra}
    for name in dropped:
        entry.pop(name, None)
    # when / then
    canonical = outcome(chain.canonical_entry_bytes, entry)
    assert outcome(chain.fast_entry_bytes, entry) == canonical
    assert outcome(verify.entry_data, entry) == canonical
