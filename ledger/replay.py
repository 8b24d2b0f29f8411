"""Re-computing the ledger from its transfers: the hash chain and the balances.

Streaming: transfers are read in chunks in seq order; memory holds one chunk plus one running
total per account and the still-pending holds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Count

from ledger import chain, merkle, signing
from ledger.models import Checkpoint, LedgerAccount, SigningKey, Transfer
from ledger.services.sealing import ENTRY_COLUMNS, entry_rows
from marketplace.models import Asset

CHUNK = 5000


@dataclass
class Report:
    entries: int = 0
    unsealed: int = 0
    accounts: int = 0
    errors: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def fail(self, message: str, seq: int | None = None) -> None:
        self.errors.append(message)
        if seq is not None and self.first_bad_seq is None:
            self.first_bad_seq = seq


def _sealed() -> Iterator[tuple]:
    """Sealed entries in seq order as plain tuples: ENTRY_COLUMNS, then seq, prev_hash, hash,
    leaf_hash (a server-side cursor: constant memory)."""
    qs = Transfer.objects.filter(seq__isnull=False).order_by("seq")
    return qs.values_list(*ENTRY_COLUMNS, "seq", "prev_hash", "hash", "leaf_hash").iterator(
        chunk_size=CHUNK
    )


def verify_chain(report: Report, progress: Callable[[int], None] | None = None) -> None:
    """Each sealed entry must follow the previous one (seq without gaps, prev_hash, its own hash),
    and the Merkle root at every checkpoint must be the one it signed."""
    expected_seq, prev_hash = 1, chain.GENESIS_HASH
    tree = merkle.StreamingRoot()
    checkpoints = list(Checkpoint.objects.order_by("tree_size"))
    keys = dict(SigningKey.objects.values_list("key_id", "public_key"))
    for checkpoint in checkpoints:
        public = keys.get(checkpoint.key_id)
        if public is None or not signing.verify_signature(
            public, checkpoint.signed_fields(), checkpoint.signature
        ):
            report.fail(
                f"checkpoint {checkpoint.tree_size}: signature does not verify",
                checkpoint.tree_size,
            )
    pending_checkpoints = iter(checkpoints)
    next_checkpoint = next(pending_checkpoints, None)
    for row, data in entry_rows(_sealed(), 1):
        seq, stored_prev, stored_hash, stored_leaf = row[-4:]
        if seq != expected_seq:
            report.fail(
                f"seq {expected_seq}: missing or out of order (found seq {seq} next)", expected_seq
            )
            return
        if stored_prev != prev_hash:
            report.fail(f"seq {seq}: prev_hash does not match the hash of seq {seq - 1}", seq)
            return
        computed = chain.chain_hash(prev_hash, data)
        if stored_hash != computed:
            report.fail(f"seq {seq}: entry was altered (hash mismatch)", seq)
            return
        leaf = merkle.leaf_hash(data)
        if stored_leaf != leaf.hex():
            report.fail(f"seq {seq}: stored Merkle leaf hash does not match the entry", seq)
            return
        tree.append(leaf)
        while next_checkpoint is not None and next_checkpoint.tree_size == seq:
            if (
                next_checkpoint.root_hash != tree.root().hex()
                or next_checkpoint.chain_head != stored_hash
            ):
                report.fail(
                    f"checkpoint {seq}: signed root or chain head differs from the entries", seq
                )
                return
            next_checkpoint = next(pending_checkpoints, None)
        prev_hash = stored_hash
        expected_seq += 1
        report.entries += 1
        if progress:
            progress(1)
    if next_checkpoint is not None:
        report.fail(
            f"checkpoint {next_checkpoint.tree_size}: covers entries that are missing", expected_seq
        )


def verify_balances(report: Report) -> None:
    """Replaying every transfer must give each account's stored columns; each asset sums to zero."""
    totals: dict[int, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 4)  # dp, dpo, cp, cpo
    holds: dict[int, Decimal] = {}
    first_seq_of: dict[int, int | None] = {}
    rows = Transfer.objects.order_by("id").values_list(
        "id", "seq", "flags", "amount", "debit_account_id", "credit_account_id", "pending_id"
    )
    for tid, seq, flags, amount, debit, credit, pending_id in rows.iterator(chunk_size=CHUNK):
        dr, cr = totals[debit], totals[credit]
        if flags == Transfer.Flags.SINGLE:
            dr[1] += amount
            cr[3] += amount
        elif flags == Transfer.Flags.PENDING:
            dr[0] += amount
            cr[2] += amount
            holds[tid] = amount
        else:
            held = holds.pop(pending_id, None)
            if held is None:
                report.fail(
                    f"transfer {tid}: resolves hold {pending_id}, which is not an open hold", seq
                )
                continue
            dr[0] -= held
            cr[2] -= held
            if flags == Transfer.Flags.POST_PENDING:
                dr[1] += amount
                cr[3] += amount
        for account_id in (debit, credit):
            first_seq_of.setdefault(account_id, seq)
        if seq is None:
            report.unsealed += 1
    per_asset: dict[int, Decimal] = defaultdict(Decimal)
    for account in LedgerAccount.objects.order_by("pk").iterator(chunk_size=CHUNK):
        report.accounts += 1
        dp, dpo, cp, cpo = totals.get(account.pk, [Decimal(0)] * 4)
        stored = (
            account.debits_pending,
            account.debits_posted,
            account.credits_pending,
            account.credits_posted,
        )
        if stored != (dp, dpo, cp, cpo):
            report.fail(
                f"account {account.code}: stored balances {tuple(map(str, stored))} differ from the "
                f"replayed transfers {(str(dp), str(dpo), str(cp), str(cpo))}",
                first_seq_of.get(account.pk),
            )
        if account.kind != LedgerAccount.Kind.WORLD and dpo + dp > cpo:
            report.fail(f"account {account.code}: overdrawn", first_seq_of.get(account.pk))
        per_asset[account.asset_id] += account.credits_posted - account.debits_posted
    codes = dict(Asset.objects.values_list("pk", "code"))
    for asset_id, total in per_asset.items():
        if total != 0:
            report.fail(f"asset {codes.get(asset_id)}: balances sum to {total}, not zero")


def sealed_count() -> int:
    return Transfer.objects.filter(seq__isnull=False).aggregate(n=Count("id"))["n"]


def verify_ledger(progress: Callable[[int], None] | None = None) -> Report:
    report = Report()
    verify_chain(report, progress)
    verify_balances(report)
    return report
