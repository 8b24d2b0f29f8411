"""Reconciliation and the proof of reserves (docs/chain.md "Reserves").

What the platform owes its users in an asset (its *liabilities*) is the posted balance of every
user account plus every escrow-kind account of that asset:

    liabilities = sum(user accounts) + sum(escrow-kind accounts)
                = -(world + custody accounts) - fees          (an asset's balances sum to zero)

A user's posted balance still holds what is reserved from it (a trade's hold, a loan's
collateral hold, a withdrawal not yet sent: pending transfers are not posted), so holds are in
it once; an escrow-kind account (a trade's escrow, loan collateral) holds what was posted to it
and is owed to the parties. The fee accounts are the platform's own income: not owed, so they
are part of the surplus. What the platform holds is what the chain says at one block: the hot
wallet plus every deposit address (coins seen but not yet credited are there too: surplus).

A withdrawal whose transaction is mined but not yet posted (the sequencer posts it after
EVM_CONFIRMATIONS blocks) has left the chain's addresses while the ledger still owes it:
`in_transit` counts those (SUBMITTED, one of its transactions, a replacement included, with a
successful receipt at or before the block).

    difference = onchain_total + in_transit - liabilities      (< 0: a shortfall)

The ledger is read first (one snapshot), the chain after it at the node's latest block: a
deposit credited before the snapshot is on the chain by then, and a withdrawal posted before it
has left."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.text import format_lazy
from django.utils.translation import gettext, gettext_lazy

from common.errors import Conflict, NotFound
from common.money import fmt
from common.transactions import durable_atomic
from ledger import signing, sumtree
from ledger.alerts import moderators_alert, moderators_alert_clear
from ledger.evm.config import CHAIN, EvmAsset, evm_assets
from ledger.evm.models import (
    ChainTransaction,
    DepositAddress,
    ReserveLeaf,
    ReserveProof,
    ReserveReconciliation,
)
from ledger.evm.rpc import web3
from ledger.models import Asset, LedgerAccount, Withdrawal
from ledger.services.sealing import signing_key_publish

logger = logging.getLogger(__name__)

Kind = LedgerAccount.Kind
Status = ReserveReconciliation.Status

# pg_advisory_xact_lock key: "RESERVE" in ASCII. One reconciliation records at a time, so two
# racing runs agree on which one turned a shortfall on (and alerts).
_LOCK = 0x52455345525645
# A shortfall is announced once when it starts, and again only after it recovered.
_SHORTFALL_ALERT_SECONDS = 90 * 24 * 3600
_UNREADABLE_ALERT_SECONDS = 6 * 3600
_ZERO = Decimal(0)

_BALANCE_OF = "0x70a08231"  # balanceOf(address)
_DECIMALS = "0x313ce567"  # decimals()


class ChainUnreadable(Exception):
    """The node did not answer, or answered with an error."""


# --- the ledger's side ------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerFigures:
    users: Decimal
    holds: Decimal
    fees: Decimal
    custody_book: Decimal  # minus the custody accounts: where the ledger says the coins are
    custody: dict[str, Decimal]  # place ("hot", "deposits") -> amount there by the book
    # Withdrawals sent or about to be, not yet posted: (amount, the hashes of its transactions).
    in_flight: list[tuple[Decimal, list[str]]] = field(default_factory=list)

    @property
    def liabilities(self) -> Decimal:
        return self.users + self.holds


def _posted(kind: str) -> Any:
    """The sum of the posted balances of the accounts of a kind."""
    return Coalesce(Sum(F("credits_posted") - F("debits_posted"), filter=Q(kind=kind)), _ZERO)


def ledger_figures(*, asset: Asset) -> LedgerFigures:
    """The ledger's figures of one asset, read in one snapshot (REPEATABLE READ)."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        accounts = LedgerAccount.objects.filter(asset=asset)
        totals = accounts.aggregate(
            users=_posted(Kind.USER), holds=_posted(Kind.ESCROW), fees=_posted(Kind.FEES)
        )
        prefix = f"custody:{asset.code}:"
        custody = {
            code.removeprefix(prefix): -balance
            for code, balance in accounts.filter(code__startswith=prefix)
            .annotate(net=F("credits_posted") - F("debits_posted"))
            .values_list("code", "net")
        }
        submitted = dict(
            Withdrawal.objects.filter(asset=asset, status=Withdrawal.Status.SUBMITTED).values_list(
                "pk", "amount"
            )
        )
        hashes: dict[int, list[str]] = {}
        for withdrawal_id, tx_hash in (
            ChainTransaction.objects.filter(
                withdrawal_id__in=submitted, kind=ChainTransaction.Kind.WITHDRAWAL
            )
            .exclude(status=ChainTransaction.Status.FAILED)
            .values_list("withdrawal_id", "tx_hash")
        ):
            hashes.setdefault(withdrawal_id, []).append(tx_hash)
        for withdrawal_id, txid in (
            Withdrawal.objects.filter(pk__in=submitted).exclude(txid="").values_list("pk", "txid")
        ):
            if txid not in hashes.get(withdrawal_id, []):
                hashes.setdefault(withdrawal_id, []).append(txid)  # another sender's record
        in_flight = [(submitted[w], tx_hashes) for w, tx_hashes in sorted(hashes.items())]
    return LedgerFigures(
        users=totals["users"],
        holds=totals["holds"],
        fees=totals["fees"],
        custody_book=sum(custody.values(), _ZERO),
        custody=custody,
        in_flight=in_flight,
    )


# --- the chain's side -------------------------------------------------------------------------


@dataclass(frozen=True)
class Holdings:
    block_number: int
    block_hash: str
    balances: dict[str, Decimal]  # address -> amount, in the asset's units

    @property
    def total(self) -> Decimal:
        return sum(self.balances.values(), _ZERO)


def _batch(calls: list[tuple[str, list[Any]]]) -> list[Any]:
    """JSON-RPC batch requests of RESERVES_RPC_BATCH calls each: the results, in order."""
    provider: Any = web3().provider
    size = int(settings.RESERVES_RPC_BATCH)
    results: list[Any] = []
    for start in range(0, len(calls), size):
        chunk = calls[start : start + size]
        try:
            answers = provider.make_batch_request(chunk)
        except Exception as exc:
            raise ChainUnreadable(f"the node did not answer: {exc}") from exc
        if not isinstance(answers, list) or len(answers) != len(chunk):
            raise ChainUnreadable(f"the node refused the batch: {answers!r}"[:300])
        for answer in answers:
            if answer.get("error"):
                raise ChainUnreadable(f"the node answered an error: {answer['error']}"[:300])
            results.append(answer.get("result"))
    return results


def platform_addresses() -> list[str]:
    """The hot wallet and every deposit address on the chain (EIP-55)."""
    hot = settings.EVM_HOT_WALLET_ADDRESS
    deposits = DepositAddress.objects.filter(chain=CHAIN).order_by("index")
    found = [hot] if hot else []
    found += [a for a in deposits.values_list("address", flat=True) if a != hot]
    return found


def read_holdings(
    *, config: EvmAsset, asset: Asset, addresses: list[str], block: int | None = None
) -> Holdings:
    """What each address holds of the asset at one block (default: the latest), read with
    batched eth_getBalance / balanceOf calls that all name that block."""
    try:
        number = web3().eth.block_number if block is None else block
        header = web3().eth.get_block(number)
    except Exception as exc:
        raise ChainUnreadable(f"the node did not answer: {exc}") from exc
    tag = hex(number)
    calls: list[tuple[str, list[Any]]]
    if config.kind == "native":
        calls = [("eth_getBalance", [address, tag]) for address in addresses]
        decimals = 18
    else:
        calls = [
            (
                "eth_call",
                [
                    {
                        "to": config.contract,
                        "data": _BALANCE_OF + address[2:].lower().rjust(64, "0"),
                    },
                    tag,
                ],
            )
            for address in addresses
        ]
        (raw_decimals,) = _batch([("eth_call", [{"to": config.contract, "data": _DECIMALS}, tag])])
        decimals = int(raw_decimals, 16)
    raw = _batch(calls)
    scale = Decimal(10) ** -decimals
    quantum = Decimal(10) ** -asset.precision
    # A token with more places than the asset keeps: rounded down, never counted as more.
    balances = {
        address: (Decimal(int(value or "0x0", 16)) * scale).quantize(quantum, rounding="ROUND_DOWN")
        for address, value in zip(addresses, raw, strict=True)
    }
    block_hash = header["hash"]
    return Holdings(
        block_number=number,
        block_hash=block_hash.to_0x_hex() if hasattr(block_hash, "to_0x_hex") else str(block_hash),
        balances=balances,
    )


def in_transit(*, flights: Iterable[tuple[Decimal, list[str]]], block: int) -> Decimal:
    """Of the withdrawals sent and not yet posted, what left the chain's addresses by `block`:
    each withdrawal once, when one of its transactions (a replacement shares the nonce, so at
    most one is mined) has a successful receipt at or before the block."""
    flights = list(flights)
    calls = [("eth_getTransactionReceipt", [h]) for _, tx_hashes in flights for h in tx_hashes]
    if not calls:
        return _ZERO
    receipts = iter(_batch(calls))
    total = _ZERO
    for amount, tx_hashes in flights:
        mined = [
            receipt
            for receipt in (next(receipts) for _ in tx_hashes)
            if receipt
            and int(receipt.get("status", "0x0"), 16) == 1
            and int(receipt["blockNumber"], 16) <= block
        ]
        if mined:
            total += amount
    return total


# --- reconciliation ---------------------------------------------------------------------------


def _on_chain_assets(asset_code: str | None) -> list[tuple[EvmAsset, Asset]]:
    configs = [c for c in evm_assets() if asset_code is None or c.code == asset_code]
    assets = {a.code: a for a in Asset.objects.filter(code__in=[c.code for c in configs])}
    return [(c, assets[c.code]) for c in configs if c.code in assets]


def reserves_reconcile(*, asset_code: str | None = None) -> list[ReserveReconciliation]:
    """Compare, per asset on the chain, the chain's holdings with the ledger's liabilities and
    record it; a shortfall alerts the moderators once, until it recovers."""
    return [
        _reconcile(config=config, asset=asset) for config, asset in _on_chain_assets(asset_code)
    ]


def _reconcile(*, config: EvmAsset, asset: Asset) -> ReserveReconciliation:
    book = ledger_figures(asset=asset)
    addresses = platform_addresses()
    hot = settings.EVM_HOT_WALLET_ADDRESS
    try:
        holdings = read_holdings(config=config, asset=asset, addresses=addresses)
        sent = in_transit(flights=book.in_flight, block=holdings.block_number)
    except ChainUnreadable as exc:
        return _record_failure(asset=asset, error=str(exc))
    hot_balance = holdings.balances.get(hot, _ZERO) if hot else _ZERO
    difference = holdings.total + sent - book.liabilities
    with durable_atomic():
        _lock()
        previous = _latest_compared(asset)
        row = ReserveReconciliation.objects.create(
            asset=asset,
            chain=CHAIN,
            status=Status.SHORTFALL if difference < 0 else Status.COVERED,
            block_number=holdings.block_number,
            block_hash=holdings.block_hash,
            hot_wallet=hot_balance,
            deposit_addresses=holdings.total - hot_balance,
            address_count=len(addresses),
            onchain_total=holdings.total,
            users=book.users,
            holds=book.holds,
            liabilities=book.liabilities,
            in_transit=sent,
            fees=book.fees,
            custody_book=book.custody_book,
            difference=difference,
        )
        moderators_alert_clear(key=f"reserves-unreadable:{asset.code}")
        key = f"reserves-shortfall:{asset.code}"
        if row.status == Status.SHORTFALL:
            if previous is None or previous.status != Status.SHORTFALL:
                moderators_alert_clear(key=key)  # news whatever an older alert left behind
                moderators_alert(
                    key=key, text=_shortfall_text(row), every_seconds=_SHORTFALL_ALERT_SECONDS
                )
            logger.error(
                "reserve shortfall",
                extra={
                    "asset": asset.code,
                    "shortfall": str(row.shortfall),
                    "block": row.block_number,
                },
            )
        elif previous is not None and previous.status == Status.SHORTFALL:
            moderators_alert_clear(key=key)
            logger.warning("reserve shortfall over", extra={"asset": asset.code})
    return row


def _lock() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])


def _latest_compared(asset: Asset) -> ReserveReconciliation | None:
    return (
        ReserveReconciliation.objects.filter(asset=asset)
        .exclude(status=Status.FAILED)
        .order_by("-created_at", "-id")
        .first()
    )


def _shortfall_text(row: ReserveReconciliation) -> str | Promise:
    """Lazy: written out in each moderator's language (notifications)."""
    p, code = row.asset.precision, row.asset.code
    return format_lazy(
        gettext_lazy(
            "Reserve shortfall in {asset}: the chain holds {onchain} at block {block} (hot "
            "wallet {hot}, deposit addresses {addresses}, in transit {in_transit}) against "
            "{owed} owed to users: {short} short. See the admin's hot wallet page."
        ),
        asset=code,
        onchain=fmt(row.onchain_total, p),
        block=row.block_number,
        hot=fmt(row.hot_wallet, p),
        addresses=fmt(row.deposit_addresses, p),
        in_transit=fmt(row.in_transit, p),
        owed=fmt(row.liabilities, p),
        short=fmt(row.shortfall, p),
    )


def _record_failure(*, asset: Asset, error: str) -> ReserveReconciliation:
    logger.warning("reconciliation could not read the chain", extra={"asset": asset.code})
    with durable_atomic():
        row = ReserveReconciliation.objects.create(
            asset=asset, chain=CHAIN, status=Status.FAILED, error=error[:300]
        )
        moderators_alert(
            key=f"reserves-unreadable:{asset.code}",
            text=format_lazy(
                gettext_lazy("Reserve reconciliation of {asset} cannot read the node: {error}"),
                asset=asset.code,
                error=error[:200],
            ),
            every_seconds=_UNREADABLE_ALERT_SECONDS,
        )
    return row


def reconciliation_latest(*, asset: Asset) -> ReserveReconciliation | None:
    return ReserveReconciliation.objects.filter(asset=asset).order_by("-created_at", "-id").first()


# --- the proof of reserves --------------------------------------------------------------------

PROOF_VERSION = 1
PROOF_TYPE = "proof-of-reserves"


def signed_fields(proof: ReserveProof) -> dict[str, object]:
    """What a proof's signature covers (the offline verifier's RESERVE_SIGNED_FIELDS)."""
    p = proof.precision
    return {
        "type": PROOF_TYPE,
        "v": PROOF_VERSION,
        "asset": proof.asset.code,
        "precision": p,
        "chain": proof.chain,
        "block_number": proof.block_number,
        "block_hash": proof.block_hash,
        "addresses": proof.addresses,
        "onchain_total": fmt(proof.onchain_total, p),
        "liabilities_root": proof.liabilities_root,
        "liabilities_total": fmt(proof.liabilities_total, p),
        "leaf_count": proof.leaf_count,
        "timestamp": proof.timestamp,
        "key_id": proof.key_id,
    }


def proof_out(proof: ReserveProof) -> dict[str, object]:
    """A published proof as the page and the API give it: the signed fields, the signature."""
    return {"id": proof.pk, **signed_fields(proof), "signature": proof.signature}


def reserves_proof_publish(*, asset_code: str | None = None) -> list[ReserveProof]:
    """Publish, per asset on the chain, a proof of reserves signed with the checkpoint key: the
    addresses' balances at a block and the Merkle sum tree of every account owed something."""
    return [_publish(config=config, asset=asset) for config, asset in _on_chain_assets(asset_code)]


@dataclass
class _Leaf:
    account: str
    user_id: int | None
    balance: Decimal
    nonce: str
    hash: bytes
    units: int


def _publish(*, config: EvmAsset, asset: Asset) -> ReserveProof:
    precision = asset.precision
    with transaction.atomic():
        owed = list(
            LedgerAccount.objects.filter(asset=asset, kind__in=[Kind.USER, Kind.ESCROW])
            .annotate(owed=F("credits_posted") - F("debits_posted"))
            .filter(owed__gt=0)
            .values_list("code", "user_id", "owed")
        )
    addresses = platform_addresses()
    try:
        holdings = read_holdings(config=config, asset=asset, addresses=addresses)
    except ChainUnreadable as exc:
        raise Conflict(
            gettext("The proof of reserves needs the node: {error}").format(error=exc)
        ) from exc
    leaves = []
    for code, user_id, balance in owed:
        text = fmt(balance, precision)
        nonce = secrets.token_hex(32)
        data = sumtree.leaf_bytes(account=code, asset=asset.code, balance=text, nonce=nonce)
        leaves.append(
            _Leaf(
                account=code,
                user_id=user_id,
                balance=balance,
                nonce=nonce,
                hash=sumtree.leaf_hash(data),
                units=sumtree.to_units(text, precision),
            )
        )
    # Ordered by leaf hash: a leaf's position says nothing about whose it is.
    leaves.sort(key=lambda leaf: leaf.hash)
    root_hash, total_units = sumtree.root(
        sumtree.build([x.hash for x in leaves], [x.units for x in leaves])
    )
    hot = settings.EVM_HOT_WALLET_ADDRESS
    listed = sorted(
        (address, amount)
        for address, amount in holdings.balances.items()
        if amount > 0 or address == hot
    )
    signing_key_publish()
    key_id, key = signing.current_key()
    with durable_atomic():
        proof = ReserveProof(
            asset=asset,
            chain=CHAIN,
            precision=precision,
            block_number=holdings.block_number,
            block_hash=holdings.block_hash,
            addresses=[{"address": a, "balance": fmt(v, precision)} for a, v in listed],
            onchain_total=holdings.total,
            liabilities_root=root_hash.hex(),
            liabilities_total=Decimal(sumtree.from_units(total_units, precision)),
            leaf_count=len(leaves),
            timestamp=timezone.now().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            key_id=key_id,
        )
        proof.signature = key.sign(signing.signed_bytes(signed_fields(proof))).hex()
        proof.save()
        ReserveLeaf.objects.bulk_create(
            (
                ReserveLeaf(
                    proof=proof,
                    index=index,
                    account=leaf.account,
                    user_id=leaf.user_id,
                    balance=leaf.balance,
                    nonce=leaf.nonce,
                    leaf_hash=leaf.hash.hex(),
                )
                for index, leaf in enumerate(leaves)
            ),
            batch_size=5000,
        )
    return proof


def reserve_proofs_latest() -> list[ReserveProof]:
    """The newest proof of each asset."""
    latest: dict[int, ReserveProof] = {}
    for proof in ReserveProof.objects.select_related("asset").order_by("-created_at", "-id")[:200]:
        latest.setdefault(proof.asset_id, proof)
    return sorted(latest.values(), key=lambda p: p.asset.code)


def reserve_proof_get(*, proof_id: int) -> ReserveProof:
    proof = ReserveProof.objects.select_related("asset").filter(pk=proof_id).first()
    if proof is None:
        raise NotFound(gettext("No proof of reserves #{n}.").format(n=proof_id))
    return proof


def reserves_inclusion_proof(*, proof_id: int, user: Any) -> dict[str, Any]:
    """The user's own leaf in a proof's sum tree and the path of sibling hashes and sums from it
    to the signed root, checked offline by `python -m ledger.verify reserves`."""
    proof = reserve_proof_get(proof_id=proof_id)
    account = f"user:{user.pk}:{proof.asset.code}"
    leaf = ReserveLeaf.objects.filter(proof=proof, user=user, account=account).first()
    if leaf is None:
        raise NotFound(
            gettext(
                "You held no {asset} when proof #{n} was taken (block {block}): there is no "
                "leaf of yours in it."
            ).format(asset=proof.asset.code, n=proof.pk, block=proof.block_number)
        )
    precision = proof.precision
    rows = (
        ReserveLeaf.objects.filter(proof=proof)
        .order_by("index")
        .values_list("leaf_hash", "balance")
    )
    hashes: list[bytes] = []
    sums: list[int] = []
    for digest, balance in rows.iterator(chunk_size=10_000):
        hashes.append(bytes.fromhex(digest))
        sums.append(int(balance.scaleb(precision)))
    levels = sumtree.build(hashes, sums)
    root_hash, _ = sumtree.root(levels)
    if root_hash.hex() != proof.liabilities_root:
        raise Conflict(
            gettext("Proof #{n}'s stored leaves no longer give its signed root.").format(n=proof.pk)
        )
    total = sums[leaf.index]
    path = []
    for side, sibling, sibling_sum in sumtree.inclusion_path(levels, leaf.index):
        total += sibling_sum
        path.append(
            {
                "side": side,
                "hash": sibling.hex(),
                "sum": sumtree.from_units(sibling_sum, precision),
                "node_sum": sumtree.from_units(total, precision),
            }
        )
    return {
        "reserves": proof_out(proof),
        "leaf": {
            "account": leaf.account,
            "asset": proof.asset.code,
            "balance": fmt(leaf.balance, precision),
            "nonce": leaf.nonce,
        },
        "leaf_hash": leaf.leaf_hash,
        "index": leaf.index,
        "path": path,
    }


# --- the admin's hot wallet page --------------------------------------------------------------


@dataclass
class HotWalletRow:
    asset: Asset
    config: EvmAsset
    hot_wallet: Decimal | None  # read from the node now; None when it did not answer
    hot_wallet_block: int | None
    chain_error: str
    book: LedgerFigures
    reconciliation: ReserveReconciliation | None
    queued: dict[str, tuple[int, Decimal]]  # withdrawal status -> (count, amount)


QUEUED_STATUSES = (
    Withdrawal.Status.REQUESTED,
    Withdrawal.Status.SUBMITTED,
    Withdrawal.Status.HELD,
)


def hot_wallet_overview() -> list[HotWalletRow]:
    """Per asset on the chain: the hot wallet's balance now, the ledger's custody accounts, the
    latest reconciliation and the withdrawals still queued."""
    rows = []
    hot = settings.EVM_HOT_WALLET_ADDRESS
    for config, asset in _on_chain_assets(None):
        live: Decimal | None = None
        block: int | None = None
        error = ""
        if hot:
            try:
                holdings = read_holdings(config=config, asset=asset, addresses=[hot])
                live, block = holdings.balances[hot], holdings.block_number
            except ChainUnreadable as exc:
                error = str(exc)
        else:
            error = "EVM_HOT_WALLET_ADDRESS is not set."
        queued = {
            status: (count, total)
            for status, count, total in Withdrawal.objects.filter(
                asset=asset, status__in=QUEUED_STATUSES
            )
            .values("status")
            .annotate(n=Count("id"), total=Coalesce(Sum("amount"), _ZERO))
            .values_list("status", "n", "total")
        }
        rows.append(
            HotWalletRow(
                asset=asset,
                config=config,
                hot_wallet=live,
                hot_wallet_block=block,
                chain_error=error,
                book=ledger_figures(asset=asset),
                reconciliation=reconciliation_latest(asset=asset),
                queued={s: queued.get(s, (0, _ZERO)) for s in QUEUED_STATUSES},
            )
        )
    return rows


def reserve_shortfalls() -> list[ReserveReconciliation]:
    """The assets whose latest reconciliation found a shortfall (the admin index's warning)."""
    latest: dict[int, ReserveReconciliation] = {}
    for row in (
        ReserveReconciliation.objects.exclude(status=Status.FAILED)
        .select_related("asset")
        .order_by("-created_at", "-id")[:100]
    ):
        latest.setdefault(row.asset_id, row)
    return [row for row in latest.values() if row.status == Status.SHORTFALL]
