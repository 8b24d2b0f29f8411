"""Reads of balances and transfers."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, cast

from django.conf import settings
from django.db.models import Q, QuerySet, Sum
from django.utils import timezone
from django.utils.translation import gettext

from common.errors import Conflict, NotFound, ValidationFailed
from common.prepared import PreparedRead, PreparedRows
from ledger import chain, merkle
from ledger.models import (
    Asset,
    Checkpoint,
    LedgerAccount,
    OpenHold,
    SigningKey,
    Transfer,
    Withdrawal,
)
from ledger.services.sealing import entry_from_values, with_stored_tree


@dataclass(frozen=True)
class Wallet:
    asset: Asset
    available: Decimal
    escrow: Decimal
    pending_withdrawal: Decimal


# The wallets' three reads, built once per process (common.prepared): read after every trade.
_USER_ACCOUNTS = PreparedRead(
    lambda user_id: LedgerAccount.objects.filter(user_id=user_id, kind=LedgerAccount.Kind.USER)
)
# Holds not yet resolved on the user's accounts, summed by asset and by what they are for: from
# the open holds the database keeps (OpenHold), not from every hold the accounts ever had.
_HELD = PreparedRows(
    lambda user_id: (
        OpenHold.objects.filter(account__user_id=user_id, account__kind=LedgerAccount.Kind.USER)
        .values("asset_id", "kind")
        .annotate(total=Sum("amount"))
        .order_by()
    )
)
_ACTIVE_ASSETS = PreparedRead(lambda: Asset.objects.filter(is_active=True).order_by("code"))


def wallet_list_for_user(*, user: Any) -> list[Wallet]:
    """One wallet per active asset: available, held in escrow, being withdrawn."""
    accounts = {a.asset_id: a for a in _USER_ACCOUNTS(user.pk)}
    held: dict[tuple[int, str], Decimal] = {
        (asset_id, kind): total for asset_id, kind, total in _HELD(user.pk)
    }
    wallets = []
    for asset in _ACTIVE_ASSETS():
        account = accounts.get(asset.pk)
        wallets.append(
            Wallet(
                asset=asset,
                available=account.available if account else Decimal(0),
                escrow=held.get((asset.pk, Transfer.Kind.ESCROW_HOLD), Decimal(0)),
                pending_withdrawal=held.get((asset.pk, Transfer.Kind.WITHDRAWAL), Decimal(0)),
            )
        )
    return wallets


# --- what balances are worth, from the layer that owns prices ------------------------------------
# Prices (the index) are marketplace's, a layer above; marketplace registers its reader here in
# MarketplaceConfig.ready(). The wallet shows each balance's approximate fiat value through it.
WalletValuer = Callable[..., tuple[str, dict[int, Decimal]]]
_wallet_valuers: list[WalletValuer] = []
_wallet_fiats: list[Callable[[], list[str]]] = []


def wallet_valuer_register(
    valuer: WalletValuer, fiats: Callable[[], list[str]] | None = None
) -> None:
    """`valuer(user=, amounts=, fiat_code=)` values balances; `fiats()` lists the codes a user
    may pick to see them in."""
    _wallet_valuers[:] = [valuer]
    _wallet_fiats[:] = [fiats] if fiats is not None else []


def wallet_values(
    *, user: Any, wallets: list[Wallet], fiat_code: str | None = None
) -> tuple[str, dict[int, Decimal]]:
    """(the fiat code, each asset's available balance in that fiat: the one asked for if the
    index has it, else the user's own); empty when nothing is registered or the index has no
    price for an asset."""
    if not _wallet_valuers:
        return "", {}
    return _wallet_valuers[0](
        user=user, amounts={w.asset.pk: w.available for w in wallets}, fiat_code=fiat_code
    )


def wallet_value_fiats() -> list[str]:
    """The fiat codes balances can be shown in."""
    return _wallet_fiats[0]() if _wallet_fiats else []


def balance_available(*, user: Any, asset_code: str) -> Decimal:
    account = LedgerAccount.objects.filter(
        user=user, kind=LedgerAccount.Kind.USER, asset__code=asset_code
    ).first()
    return account.available if account else Decimal(0)


def transfer_list_for_user(
    *, user: Any, kind: str | None = None, reference: int | None = None
) -> QuerySet[Transfer]:
    rows = Transfer.objects.filter(Q(debit_account__user=user) | Q(credit_account__user=user))
    if kind is not None:
        rows = rows.filter(kind=kind)
    if reference is not None:
        rows = rows.filter(reference=reference)
    return rows.select_related("asset", "debit_account", "credit_account").order_by("-id")


# --- proofs -----------------------------------------------------------------------------------


class ProofState(StrEnum):
    UNSEALED = "unsealed"  # committed; the sequencer has not given it a seq yet
    WAITING = "waiting"  # sealed; no signed checkpoint holds it yet
    READY = "ready"  # a signed checkpoint holds it: its inclusion proof can be served


@dataclass(frozen=True)
class ProofStatus:
    state: ProofState
    transfer_id: int
    seq: int | None
    sealed_at: dt.datetime | None
    # Seconds from sealing to a signed checkpoint at most (0: checkpoints by count only).
    interval: int
    # WAITING: when a checkpoint holds it at the latest (None: checkpoints by count only), and
    # the whole seconds left until then (0: any moment now).
    ready_by: dt.datetime | None = None
    seconds_left: int | None = None


def checkpoint_ready_by(sealed_at: dt.datetime) -> dt.datetime | None:
    """When an entry sealed at `sealed_at` is in a signed checkpoint at the latest: the
    sequencer's clock (services.ledger_checkpoint_due) signs within LEDGER_CHECKPOINT_INTERVAL
    of sealing, while it runs; None when that clock is off."""
    interval = settings.LEDGER_CHECKPOINT_INTERVAL
    return sealed_at + dt.timedelta(seconds=interval) if interval else None


def _seconds_until(moment: dt.datetime) -> int:
    return max(0, math.ceil((moment - timezone.now()).total_seconds()))


def _ready_text(sealed_at: dt.datetime) -> str:
    ready_by = checkpoint_ready_by(sealed_at)
    if ready_by is None:
        return "retry shortly"
    when = ready_by.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    left = _seconds_until(ready_by)
    if not left:
        return f"one was due by {when}; retry shortly"
    return f"one is signed by {when} (in about {left} s); retry then"


def proof_status_for_entry(
    *, user: Any, seq: int | None = None, transfer_id: int | None = None
) -> ProofStatus:
    """Where one of the user's entries (by seq, or by transfer id before it has one) stands on
    its way to an inclusion proof: not sealed, sealed and waiting for a checkpoint (until when),
    or ready. Staff: any entry."""
    if (seq is None) == (transfer_id is None):
        raise TypeError("proof_status_for_entry: give seq or transfer_id")
    field, value = ("seq", seq) if seq is not None else ("transfer_id", transfer_id)
    row = (
        Transfer.objects.filter(**{"seq" if seq is not None else "pk": value})
        .values_list("pk", "seq", "sealed_at", "debit_account__user_id", "credit_account__user_id")
        .first()
    )
    if row is None:
        raise NotFound(
            gettext("{field}: no entry {value}.").format(field=field, value=value),
            fields={field: [gettext("No such entry.")]},
        )
    pk, seq, sealed_at, debit_user, credit_user = row
    interval = settings.LEDGER_CHECKPOINT_INTERVAL
    if user.pk not in (debit_user, credit_user) and not user.is_staff:
        raise NotFound(
            gettext("{field}: no entry {value} of yours.").format(field=field, value=value),
            fields={field: [gettext("Not one of your entries.")]},
        )
    known = {"transfer_id": pk, "seq": seq, "sealed_at": sealed_at, "interval": interval}
    if seq is None:
        return ProofStatus(ProofState.UNSEALED, **known)
    if Checkpoint.objects.filter(tree_size__gte=seq).exists():
        return ProofStatus(ProofState.READY, **known)
    ready_by = checkpoint_ready_by(cast(dt.datetime, sealed_at))  # sealed: it has a seq
    return ProofStatus(
        ProofState.WAITING,
        **known,
        ready_by=ready_by,
        seconds_left=_seconds_until(ready_by) if ready_by else None,
    )


def checkpoint_latest() -> Checkpoint | None:
    return Checkpoint.objects.order_by("-tree_size").first()


def checkpoint_out(checkpoint: Checkpoint) -> dict[str, Any]:
    return {**checkpoint.signed_fields(), "signature": checkpoint.signature}


_PROOF_ENTRY = (
    "id",
    "idempotency_key",
    "kind",
    "flags",
    "asset__code",
    "asset__precision",
    "debit_account__code",
    "debit_account__user_id",
    "credit_account__code",
    "credit_account__user_id",
    "amount",
    "pending_id",
    "created_at",
    "leaf_hash",
    "sealed_at",
)
_CHECKPOINT_FIELDS = ("tree_size", "root_hash", "chain_head", "timestamp", "key_id", "signature")


def inclusion_proof(*, seq: int, tree_size: int | None, user: Any) -> dict[str, Any]:
    """The RFC 9162 audit path of entry `seq` against a signed checkpoint (the latest that holds
    it, or the one at `tree_size`); only for the user's own entries (staff: any). Three queries:
    the entry with its asset and accounts, the checkpoint, every node of the path at once."""
    row = Transfer.objects.filter(seq=seq).values_list(*_PROOF_ENTRY).first()
    if row is None:
        raise NotFound(
            gettext("seq: no sealed entry {seq}.").format(seq=seq),
            fields={"seq": [gettext("No such entry.")]},
        )
    (tid, key, kind, flags, asset, precision, debit, debit_user, credit, credit_user) = row[:10]
    amount, pending_id, created_at, leaf_hash, sealed_at = row[10:]
    if user.pk not in (debit_user, credit_user) and not user.is_staff:
        raise NotFound(
            gettext("seq: no entry {seq} of yours.").format(seq=seq),
            fields={"seq": [gettext("Not one of your entries.")]},
        )
    checkpoints = Checkpoint.objects.filter(tree_size__gte=seq)
    if tree_size is not None:
        checkpoints = checkpoints.filter(tree_size=tree_size)
    checkpoint = checkpoints.order_by("-tree_size").values(*_CHECKPOINT_FIELDS).first()
    if checkpoint is None:
        if tree_size is None:
            raise Conflict(
                gettext("Entry {seq} is sealed but not yet in a signed checkpoint; {v1}.").format(
                    seq=seq, v1=_ready_text(sealed_at)
                ),
                code="not_checkpointed",
            )
        raise NotFound(
            gettext("tree_size: no checkpoint of size {tree_size} holding entry {seq}.").format(
                tree_size=tree_size, seq=seq
            ),
            fields={
                "tree_size": [gettext("Use the size of a checkpoint that includes the entry.")]
            },
        )
    size = checkpoint["tree_size"]
    path = with_stored_tree(lambda lookup: merkle.inclusion_path(seq - 1, size, lookup))
    entry = entry_from_values(
        seq=seq,
        id=tid,
        key=key,
        kind=kind,
        flags=flags,
        asset_code=asset,
        precision=precision,
        debit=debit,
        credit=credit,
        amount=amount,
        pending_id=pending_id,
        created_at=created_at,
    )
    return {
        "seq": seq,
        "leaf_index": seq - 1,
        "leaf": chain.entry_bytes(entry).hex(),
        "leaf_hash": leaf_hash,
        "tree_size": size,
        "path": [p.hex() for p in path],
        "checkpoint": checkpoint,
    }


def consistency_proof(*, first: int, second: int) -> dict[str, Any]:
    """The RFC 9162 proof that the tree of `second` entries extends the tree of `first`."""
    sealed = (
        Transfer.objects.filter(seq__isnull=False)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
        or 0
    )
    if not 0 < first <= second:
        raise ValidationFailed(
            gettext("first: need 0 < first <= second."),
            fields={"first": [gettext("Need 0 < first <= second.")]},
        )
    if second > sealed:
        raise ValidationFailed(
            gettext("second: only {sealed} entries are sealed.").format(sealed=sealed),
            fields={"second": [gettext("At most {sealed}.").format(sealed=sealed)]},
        )

    def compute(lookup: Any) -> tuple[bytes, bytes, list[bytes]]:
        return (
            merkle.range_hash(0, first, lookup),
            merkle.range_hash(0, second, lookup),
            merkle.consistency_path(first, second, lookup) if first < second else [],
        )

    first_root, second_root, path = with_stored_tree(compute)
    return {
        "first": first,
        "second": second,
        "first_root": first_root.hex(),
        "second_root": second_root.hex(),
        "path": [p.hex() for p in path],
    }


def public_keys() -> list[dict[str, str]]:
    return [
        {"key_id": k, "public_key": p}
        for k, p in SigningKey.objects.order_by("created_at").values_list("key_id", "public_key")
    ]


def asset_get(*, code: Any) -> Asset:
    """An active asset by its code, in any case: the one look-up of an asset a user names. An
    unknown code is bad input naming the field `asset` (400), wherever it was given."""
    asset = Asset.objects.filter(code=str(code or "").upper(), is_active=True).first()
    if asset is None:
        raise ValidationFailed(
            gettext("asset: unknown asset {code!r}.").format(code=code),
            fields={"asset": [gettext("Unknown asset.")]},
        )
    return asset


def transfer_effect_for_user(*, transfer: Transfer, user: Any) -> tuple[str, Decimal]:
    """What a transfer did to this user's available balance: ("+" or "-" or "", amount). A hold
    already left the available balance, so posting it changes nothing more there, except the
    unposted rest that comes back; voiding it gives the whole amount back."""
    outgoing = transfer.debit_account.user_id == user.pk
    flags = transfer.flags
    if flags == Transfer.Flags.POST_PENDING:
        back = transfer.pending.amount - transfer.amount if transfer.pending else Decimal(0)
        return ("+", back) if back > 0 else ("", transfer.amount)
    if flags == Transfer.Flags.VOID_PENDING:
        return ("+", transfer.amount) if outgoing else ("", transfer.amount)
    return ("-", transfer.amount) if outgoing else ("+", transfer.amount)


def withdrawal_list_recent(*, user: Any, limit: int = 10) -> list[Withdrawal]:
    """The user's latest withdrawals, newest first, with their status."""
    return list(Withdrawal.objects.filter(user=user).select_related("asset")[:limit])


# Withdrawals a moderator may have to act on: waiting for a worker, submitted to the (manual, by
# default) chain adapter and not yet confirmed, or held because the account is frozen.
QUEUED_WITHDRAWALS = (
    Withdrawal.Status.REQUESTED,
    Withdrawal.Status.SUBMITTED,
    Withdrawal.Status.HELD,
)


def withdrawal_queued_count() -> int:
    """Withdrawals not yet completed or failed (the admin index's count)."""
    return Withdrawal.objects.filter(status__in=QUEUED_WITHDRAWALS).count()


# --- withdrawal fees (the chain adapters' quotes) -------------------------------------------------


def withdrawal_fee_quotes(*, assets: list[Asset]) -> dict[str, Decimal | None]:
    """The network fee a withdrawal of each asset costs now, as the adapter quotes it (0: none;
    None: the node did not answer, and a request would be refused the same way). Shown before the
    person confirms; the request holds it with the amount (docs/chain.md)."""
    import logging

    from ledger.adapters import get_chain_adapter

    quotes: dict[str, Decimal | None] = {}
    for asset in assets:
        try:
            quotes[asset.code] = get_chain_adapter(asset).withdrawal_fee(
                asset=asset, amount=Decimal(0)
            )
        except Exception:
            logging.getLogger(__name__).warning(
                "no withdrawal fee quote for %s", asset.code, exc_info=True
            )
            quotes[asset.code] = None
    return quotes
