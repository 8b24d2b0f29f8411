"""The sequencer: seals committed transfers into one hash chain and one Merkle tree, in batches,
and signs checkpoints (tree heads). Settlements never wait on it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connection, transaction
from django.utils import timezone

from common.money import fmt
from ledger import chain, merkle, signing
from ledger.models import Checkpoint, MerkleNode, SigningKey, Transfer

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# pg_advisory_xact_lock key of the one sequencer ("LEDGER" in ASCII).
SEQUENCER_LOCK = 0x4C4544474552


def _sequencer_lock() -> None:
    """Only one sequencer: a second one waits here until the first one's transaction ends, then
    sees its work. Held by sealing and by signing checkpoints alike."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCER_LOCK])


def transfer_entry(transfer: Transfer, *, seq: int) -> dict[str, Any]:
    """The fields of a transfer that the chain hashes (see ledger.chain for the encoding)."""
    return entry_from_values(
        seq=seq,
        id=transfer.pk,
        key=transfer.idempotency_key,
        kind=transfer.kind,
        flags=transfer.flags,
        asset_code=transfer.asset.code,
        precision=transfer.asset.precision,
        debit=transfer.debit_account.code,
        credit=transfer.credit_account.code,
        amount=transfer.amount,
        pending_id=transfer.pending_id,
        created_at=transfer.created_at,
    )


def entry_from_values(
    *,
    seq: int,
    id: int,
    key: str,
    kind: str,
    flags: str,
    asset_code: str,
    precision: int,
    debit: str,
    credit: str,
    amount: Any,
    pending_id: int | None,
    created_at: dt.datetime,
) -> dict[str, Any]:
    return {
        "v": chain.ENTRY_VERSION,
        "seq": seq,
        "id": id,
        "key": key,
        "kind": kind,
        "flags": flags,
        "asset": asset_code,
        "debit": debit,
        "credit": credit,
        "amount": fmt(amount, precision),
        "pending_id": pending_id,
        "created_at": created_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


# The columns entry_rows reads, in order: what the chain hashes plus what sealing and
# verification compare.
ENTRY_COLUMNS = (
    "id",
    "idempotency_key",
    "kind",
    "flags",
    "asset_id",
    "debit_account__code",
    "credit_account__code",
    "amount",
    "pending_id",
    "created_at",
)


def entry_rows(
    rows: Iterable[tuple[Any, ...]], first_seq: int
) -> Iterator[tuple[tuple[Any, ...], bytes]]:
    """(row, canonical bytes) for rows of ENTRY_COLUMNS (+ anything after them) read as plain
    tuples in seq order starting at first_seq: no model objects, asset codes from one dict."""
    assets = {pk: (code, precision) for pk, code, precision in _asset_rows()}
    seq = first_seq
    for row in rows:
        code, precision = assets[row[4]]
        entry = entry_from_values(
            seq=seq,
            id=row[0],
            key=row[1],
            kind=row[2],
            flags=row[3],
            asset_code=code,
            precision=precision,
            debit=row[5],
            credit=row[6],
            amount=row[7],
            pending_id=row[8],
            created_at=row[9],
        )
        yield row, chain.entry_bytes(entry)
        seq += 1


def _asset_rows() -> list[tuple[int, str, int]]:
    from ledger.models import Asset

    return list(Asset.objects.values_list("pk", "code", "precision"))


# --- reading the stored tree ------------------------------------------------------------------


def fetch_subtrees(keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The stored hashes of complete subtrees (level, index) in one query however many keys:
    leaves (level 0) are the entries' leaf_hash, the others MerkleNode rows, found through
    their unique index."""
    keys = sorted(set(keys))
    seqs = [index + 1 for level, index in keys if level == 0]
    upper = [(level, index) for level, index in keys if level > 0]
    parts: list[str] = []
    params: list[Any] = []
    if seqs:
        marks = ", ".join(["%s"] * len(seqs))
        parts.append(f"SELECT 0, seq - 1, leaf_hash FROM ledger_transfer WHERE seq IN ({marks})")  # noqa: S608 - placeholders
        params += seqs
    if upper:
        if connection.vendor == "postgresql":  # one statement text whatever the path
            wanted = "SELECT * FROM unnest(%s::smallint[], %s::bigint[])"
            params += [[level for level, _ in upper], [index for _, index in upper]]
        else:
            wanted = "VALUES " + ", ".join(["(%s, %s)"] * len(upper))
            params += [x for key in upper for x in key]
        nodes = 'SELECT level, "index", hash FROM ledger_merklenode WHERE (level, "index") IN '
        parts.append(f"{nodes}({wanted})")
    if not parts:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), params)
        return {(level, index): bytes.fromhex(h) for level, index, h in cursor.fetchall()}


_T = TypeVar("_T")


def with_stored_tree(compute: Callable[[Callable[[int, int], bytes]], _T]) -> _T:
    """Run compute(lookup) twice: once to learn which subtrees it needs, then with them fetched
    in one go, so a proof costs a constant number of queries, not O(log n) round trips."""
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return b"\0" * 32

    compute(record)
    found = fetch_subtrees(wanted)
    missing = wanted - found.keys()
    if missing:
        raise LookupError(
            f"Merkle nodes missing for {sorted(missing)[:3]}: is the tree sealed that far?"
        )
    return compute(lambda level, index: found[(level, index)])


def tree_root(tree_size: int) -> bytes:
    return with_stored_tree(lambda lookup: merkle.range_hash(0, tree_size, lookup))


def _frontier(size: int) -> dict[tuple[int, int], bytes]:
    """The right edge of a tree of `size` leaves: the complete subtrees new leaves pair with."""
    keys = [(level, (size >> level) - 1) for level in range(size.bit_length()) if size >> level & 1]
    return fetch_subtrees(keys)


# --- sealing ----------------------------------------------------------------------------------


def ledger_seal_pending(*, batch_size: int | None = None) -> int:
    """Give committed, unsealed transfers the next seq, chain hash and Merkle leaf; one sequencer
    at a time; checkpoint every LEDGER_CHECKPOINT_EVERY entries."""
    batch_size = batch_size or settings.LEDGER_SEAL_BATCH
    sealed = 0
    while True:
        with transaction.atomic(durable=True):
            _sequencer_lock()
            head = (
                Transfer.objects.filter(seq__isnull=False)
                .order_by("-seq")
                .values("seq", "hash")
                .first()
            )
            # seq__isnull=False: a sealed head has a seq
            seq, prev_hash = (
                (cast(int, head["seq"]), head["hash"]) if head else (0, chain.GENESIS_HASH)
            )
            batch = list(
                Transfer.objects.filter(seq__isnull=True)
                .order_by("id")
                .values_list(*ENTRY_COLUMNS)[:batch_size]
            )
            if not batch:
                return sealed
            start_size = seq
            nodes = _frontier(start_size)
            new_nodes: list[MerkleNode] = []
            sealed_ids: list[int] = []
            hashes: list[tuple[str, str, str]] = []  # prev_hash, hash, leaf_hash
            for row, data in entry_rows(batch, start_size + 1):
                seq += 1
                leaf = merkle.leaf_hash(data)
                this_hash = chain.chain_hash(prev_hash, data)
                sealed_ids.append(row[0])
                hashes.append((prev_hash, this_hash, leaf.hex()))
                prev_hash = this_hash
                # Pair the new leaf upwards while it completes a subtree.
                level, index, node = 0, seq - 1, leaf
                nodes[(0, index)] = leaf
                while index & 1:
                    node = merkle.node_hash(nodes[(level, index - 1)], node)
                    level, index = level + 1, index >> 1
                    nodes[(level, index)] = node
                    new_nodes.append(MerkleNode(level=level, index=index, hash=node.hex()))
            _write_seals(sealed_ids, start_size + 1, hashes, timezone.now())
            MerkleNode.objects.bulk_create(new_nodes)
            every = settings.LEDGER_CHECKPOINT_EVERY
            if every and seq // every > start_size // every:
                _checkpoint(seq - seq % every)
            sealed += len(batch)
        if len(batch) < batch_size:
            return sealed


def _write_seals(
    ids: list[int], first_seq: int, hashes: list[tuple[str, str, str]], now: dt.datetime
) -> None:
    """One UPDATE for the whole batch on PostgreSQL (bulk_update's CASE WHEN per row costs
    O(batch^2) there); bulk_update elsewhere."""
    seqs = list(range(first_seq, first_seq + len(ids)))
    if connection.vendor == "postgresql":
        prevs, own, leaves = (list(col) for col in zip(*hashes, strict=True))
        with connection.cursor() as cursor:
            cursor.execute(
                """
                UPDATE ledger_transfer t SET seq = u.seq, prev_hash = u.prev, hash = u.hash,
                    leaf_hash = u.leaf, sealed_at = %s
                FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[])
                     AS u(id, seq, prev, hash, leaf)
                WHERE t.id = u.id AND t.seq IS NULL
                """,
                [now, ids, seqs, prevs, own, leaves],
            )
            if cursor.rowcount != len(ids):
                raise RuntimeError("sealing: a transfer of the batch was sealed meanwhile")
        return
    rows = [
        Transfer(id=pk, seq=seq, prev_hash=p, hash=h, leaf_hash=leaf, sealed_at=now)
        for pk, seq, (p, h, leaf) in zip(ids, seqs, hashes, strict=True)
    ]
    Transfer.objects.bulk_update(rows, ["seq", "prev_hash", "hash", "leaf_hash", "sealed_at"])


def _checkpoint(tree_size: int) -> Checkpoint:
    existing = Checkpoint.objects.filter(tree_size=tree_size).first()
    if existing:
        return existing
    key_id, key = signing.current_key()
    _key_publish(key_id, key.public_key())
    checkpoint = Checkpoint(
        tree_size=tree_size,
        root_hash=tree_root(tree_size).hex(),
        chain_head=Transfer.objects.values_list("hash", flat=True).get(seq=tree_size),
        timestamp=timezone.now().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        key_id=key_id,
    )
    checkpoint.signature = key.sign(signing.signed_bytes(checkpoint.signed_fields())).hex()
    checkpoint.save()
    return checkpoint


def checkpoint_create() -> Checkpoint | None:
    """On demand: seal what is committed, then sign a tree head over everything sealed."""
    ledger_seal_pending()
    with transaction.atomic(durable=True):
        _sequencer_lock()
        size = _sealed_size()
        return _checkpoint(size) if size else None


def _sealed_size() -> int:
    """How many entries are sealed: the newest seq (seqs have no gaps)."""
    return (
        Transfer.objects.filter(seq__isnull=False)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
        or 0
    )


# --- checkpoints on a clock -------------------------------------------------------------------


def seal_period() -> float:
    """Seconds between two runs of the sequencer task: its beat schedule's ("ledger-seal"); 0 if
    it has none that is a plain interval."""
    schedule = settings.CELERY_BEAT_SCHEDULE.get("ledger-seal", {}).get("schedule")
    if isinstance(schedule, dt.timedelta):
        return schedule.total_seconds()
    return float(schedule) if isinstance(schedule, int | float) else 0.0


def ledger_checkpoint_due() -> Checkpoint | None:
    """Sign a checkpoint over everything sealed once the oldest entry no checkpoint holds has
    waited LEDGER_CHECKPOINT_INTERVAL less one sequencer period; none while nothing is new."""
    interval = settings.LEDGER_CHECKPOINT_INTERVAL
    if not interval:
        return None
    # One period early: the task runs every `period` seconds, so some run falls between
    # sealed_at + interval - period and sealed_at + interval, and that run signs. Waiting for the
    # full interval instead could overshoot it by up to a period.
    wait = dt.timedelta(seconds=max(interval - seal_period(), 0))
    with transaction.atomic(durable=True):
        _sequencer_lock()
        covered = (
            Checkpoint.objects.order_by("-tree_size").values_list("tree_size", flat=True).first()
            or 0
        )
        # Seqs have no gaps, so the oldest entry no checkpoint holds is the next one.
        oldest = (
            Transfer.objects.filter(seq=covered + 1).values_list("sealed_at", flat=True).first()
        )
        if oldest is None:
            return None  # nothing sealed since the last checkpoint: no second one of that size
        if oldest > timezone.now() - wait:
            return None
        return _checkpoint(_sealed_size())


# --- the public key ---------------------------------------------------------------------------


def signing_key_publish(*, using: str = DEFAULT_DB_ALIAS) -> SigningKey | None:
    """List the current checkpoint key from the start, before it has signed anything, so a fresh
    site already serves it; quietly nothing when no key is configured (LEDGER_SIGNING_KEY)."""
    try:
        key_id, key = signing.current_key()
    except ImproperlyConfigured:
        return None
    return _key_publish(key_id, key.public_key(), using=using)


def _key_publish(
    key_id: str, public_key: Ed25519PublicKey, *, using: str = DEFAULT_DB_ALIAS
) -> SigningKey:
    # get_or_create: two processes publishing at once meet at key_id's unique index.
    row, _ = SigningKey.objects.db_manager(using).get_or_create(
        key_id=key_id, defaults={"public_key": signing.raw_public(public_key).hex()}
    )
    return row
