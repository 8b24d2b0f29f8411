"""The deposit watcher: follows the chain's new blocks, records each transfer to a user's deposit
address as `seen`, and credits it on the ledger exactly once after EVM_CONFIRMATIONS blocks.

- Native ETH: each block's transactions (eth_getBlockByNumber with full transactions) whose `to`
  is a deposit address and whose receipt succeeded. ETH sent by a contract's internal call (a
  multisig, an exchange's batch payout) is not a transaction of its own and is not seen here;
  docs/chain.md says so.
- Tokens: the token contract's ERC-20 `Transfer` logs (eth_getLogs over the block range, the
  deposit addresses in the topic filter while they are few).

The watcher keeps the hashes of the blocks it scanned (ChainBlock): before each run it checks that
its tip is still the node's block at that height, and after a reorg walks back to the common
ancestor, drops the deposits of the orphaned blocks that were not credited yet and scans the new
branch. A deposit is credited once it has EVM_CONFIRMATIONS blocks on the watcher's own verified
view; deeper reorgs are assumed not to happen, and if one touches a credited deposit the
moderators are alerted instead of the ledger being silently rewritten.

One watcher at a time (a PostgreSQL advisory lock; a second run returns at once), and the unique
(chain, tx_hash, log_index) and the transfer's idempotency key backstop a credit that is tried
twice."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext, gettext_lazy
from web3 import Web3

from common.db import session_lock
from common.money import AMOUNT_DECIMAL_PLACES, AMOUNT_MAX_DIGITS, fmt
from common.transactions import durable_atomic
from ledger.alerts import moderators_alert, user_funds_news
from ledger.evm.config import CHAIN, EvmAsset, confirmations_required, enabled, evm_assets
from ledger.evm.models import ChainBlock, ChainDeposit, DepositAddress
from ledger.evm.rpc import erc20, web3
from ledger.models import Asset, Deposit, Transfer
from ledger.services import account_custody, account_for_user, transfer_post

logger = logging.getLogger(__name__)

# pg_try_advisory_lock key of the one deposit watcher ("EVMDEP" in ASCII). A session lock: the
# whole run holds it, and it goes with the connection if the process dies.
WATCHER_LOCK = 0x45564D444550
TRANSFER_TOPIC = "0x" + Web3.keccak(text="Transfer(address,address,uint256)").hex().removeprefix(
    "0x"
)
NATIVE_DECIMALS = 18
# Up to this many deposit addresses go into eth_getLogs' topic filter; more, and the token's
# Transfer logs of the range are fetched whole and matched here (a node limits a filter's size).
TOPIC_FILTER_MAX = 500


@dataclass
class WatchResult:
    busy: bool = False  # another watcher holds the lock: this run did nothing
    head: int | None = None  # the node's latest block
    tip: int | None = None  # the watcher's last verified block after this run
    scanned: int = 0
    seen: int = 0
    credited: int = 0
    dropped: int = 0
    reorg_depth: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Found:
    tx_hash: str
    log_index: int
    asset: EvmAsset
    user_id: int
    address: str
    sender: str
    units: int
    block_number: int
    block_hash: str


def _hex(value: Any) -> str:
    """A hash as 0x + lowercase hex, whatever web3 returned (HexBytes, bytes or str)."""
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    return "0x" + bytes(value).hex()


@contextmanager
def _watcher_lock() -> Iterator[bool]:
    with session_lock(WATCHER_LOCK) as held:  # behind PgBouncer: a direct session
        yield held


def deposits_watch(*, max_blocks: int | None = None) -> WatchResult:
    """One run of the watcher: follow a reorg if there was one, scan up to `max_blocks` new
    blocks (EVM_SCAN_BATCH), credit what has its confirmations. Safe to run at any time, any
    number of times, from any number of processes: each deposit is credited once."""
    result = WatchResult()
    if not enabled():
        return result
    with _watcher_lock() as held:
        if not held:
            result.busy = True
            return result
        w3 = web3()
        _follow_reorg(w3, result)
        _scan(w3, max_blocks or int(settings.EVM_SCAN_BATCH), result)
        tip = _tip()
        result.tip = tip.number if tip else None
        if tip is not None:
            result.credited = _credit_confirmed(tip.number)
            _prune(tip.number)
    return result


# --- the watcher's view of the chain ----------------------------------------------------------


def _tip() -> ChainBlock | None:
    return ChainBlock.objects.filter(chain=CHAIN).order_by("-number").first()


def chain_tip_number() -> int | None:
    """The highest block the watcher has verified (what confirmations count against)."""
    return (
        ChainBlock.objects.filter(chain=CHAIN)
        .order_by("-number")
        .values_list("number", flat=True)
        .first()
    )


def _canonical_hash(w3: Web3, number: int) -> str | None:
    block = w3.eth.get_block(number)
    return _hex(block["hash"]) if block else None


def _follow_reorg(w3: Web3, result: WatchResult) -> None:
    """A stored block the node no longer has at its height: walk back to the newest stored block
    that is still canonical (the common ancestor) and orphan everything above it."""
    tip = _tip()
    if tip is None or _canonical_hash(w3, tip.number) == tip.hash:
        return
    ancestor: int | None = None
    for number, block_hash in (
        ChainBlock.objects.filter(chain=CHAIN).order_by("-number").values_list("number", "hash")
    ).iterator():
        if _canonical_hash(w3, number) == block_hash:
            ancestor = number
            break
    if ancestor is None:
        # Deeper than every block kept: start again below them all (and tell someone).
        lowest = (
            ChainBlock.objects.filter(chain=CHAIN)
            .order_by("number")
            .values_list("number", flat=True)
            .first()
        )
        ancestor = (lowest or 0) - 1
        moderators_alert(
            key=f"evm-deep-reorg:{CHAIN}:{tip.number}",
            text=format_lazy(
                gettext_lazy(
                    "The {chain} chain reorganised below every block the deposit watcher keeps "
                    "(its tip was #{tip}); it rescans from #{start}."
                ),
                chain=CHAIN,
                tip=tip.number,
                start=ancestor + 1,
            ),
        )
    result.reorg_depth = tip.number - ancestor
    result.dropped += _orphan_above(ancestor)
    logger.warning(
        "chain reorg: %s blocks above #%s orphaned, %s deposits dropped",
        result.reorg_depth,
        ancestor,
        result.dropped,
    )


def _orphan_above(ancestor: int) -> int:
    """Forget the blocks above `ancestor`; their deposits not credited yet are dropped (seen again
    if the transaction is mined on the new branch), credited ones raise an alert."""
    dropped = 0
    with durable_atomic():
        orphaned = (
            ChainDeposit.objects.select_for_update()
            .filter(chain=CHAIN, block_number__gt=ancestor)
            .exclude(status=ChainDeposit.Status.DROPPED)
            .select_related("asset")
        )
        for deposit in orphaned:
            what = f"{fmt(deposit.amount, deposit.asset.precision)} {deposit.asset.code}"
            if deposit.status == ChainDeposit.Status.CREDITED:
                # Deeper than EVM_CONFIRMATIONS: by assumption this does not happen. The ledger
                # is not rewritten behind anyone's back; a moderator looks at it.
                deposit.note = f"its block #{deposit.block_number} was reorged out after crediting"
                deposit.save(update_fields=["note"])
                moderators_alert(
                    key=f"evm-reorg-credited:{CHAIN}:{deposit.tx_hash}:{deposit.log_index}",
                    text=format_lazy(
                        gettext_lazy(
                            "A chain reorg removed the block of credited deposit {tx} ({what} to "
                            "user #{user}), deeper than {n} confirmations. It stays credited: "
                            "check it."
                        ),
                        tx=deposit.tx_hash,
                        what=what,
                        user=deposit.user_id,
                        n=confirmations_required(),
                    ),
                )
                continue
            deposit.status = ChainDeposit.Status.DROPPED
            deposit.note = f"its block #{deposit.block_number} left the chain (reorg)"
            deposit.save(update_fields=["status", "note"])
            dropped += 1
            user_funds_news(
                user_id=deposit.user_id,
                text=format_lazy(
                    gettext_lazy(
                        "Your deposit of {what} ({tx}…) left the chain in a reorganisation "
                        "before it was confirmed. If it is mined again it shows again."
                    ),
                    what=what,
                    tx=deposit.tx_hash[:12],
                ),
            )
        ChainBlock.objects.filter(chain=CHAIN, number__gt=ancestor).delete()
    return dropped


def _prune(tip: int) -> None:
    """Keep the recent blocks (a reorg walks back through them) and those of deposits still
    waiting for their confirmations."""
    keep = max(256, 4 * confirmations_required())
    oldest_waiting = (
        ChainDeposit.objects.filter(chain=CHAIN, status=ChainDeposit.Status.SEEN)
        .order_by("block_number")
        .values_list("block_number", flat=True)
        .first()
    )
    below = tip - keep if oldest_waiting is None else min(tip - keep, oldest_waiting)
    ChainBlock.objects.filter(chain=CHAIN, number__lt=below).delete()


# --- scanning ---------------------------------------------------------------------------------


@cache
def _token_decimals(url: str, contract: str) -> int:
    return int(erc20(contract).functions.decimals().call())


def _scan(w3: Web3, max_blocks: int, result: WatchResult) -> None:
    tip = _tip()
    head = int(w3.eth.block_number)
    result.head = head
    start = tip.number + 1 if tip else int(settings.EVM_DEPOSITS_START_BLOCK)
    end = min(head, start + max_blocks - 1)
    if start > end:
        return
    # Every block of the range, each one's parent the previous one: a reorg during the scan
    # stops it there (the next run's check follows it).
    blocks: list[Any] = []
    parent = tip.hash if tip else None
    for number in range(start, end + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        if block is None or (parent is not None and _hex(block["parentHash"]) != parent):
            break
        blocks.append(block)
        parent = _hex(block["hash"])
    if not blocks:
        return
    hashes = {int(b["number"]): _hex(b["hash"]) for b in blocks}
    owners = {
        address.lower(): (address, user_id)
        for address, user_id in DepositAddress.objects.filter(chain=CHAIN).values_list(
            "address", "user_id"
        )
    }
    assets = evm_assets()
    found: list[_Found] = []
    if owners:
        native = next((a for a in assets if a.kind == "native"), None)
        if native is not None:
            found += _native_transfers(w3, blocks, owners, native)
        tokens = [a for a in assets if a.kind == "erc20"]
        if tokens:
            logs_found, last_good = _token_transfers(w3, start, blocks, hashes, owners, tokens)
            found += logs_found
            if last_good < int(blocks[-1]["number"]):
                blocks = [b for b in blocks if int(b["number"]) <= last_good]
                found = [f for f in found if f.block_number <= last_good]
    if not blocks:
        return
    result.scanned = len(blocks)
    result.seen = _record(blocks, found)


def _native_transfers(
    w3: Web3, blocks: list[Any], owners: dict[str, tuple[str, int]], native: EvmAsset
) -> list[_Found]:
    found = []
    for block in blocks:
        for tx in block["transactions"]:
            to = tx.get("to")
            if not to or to.lower() not in owners or int(tx["value"]) <= 0:
                continue
            # A value transfer to an address without code cannot fail, but the receipt is what
            # says it happened.
            if w3.eth.get_transaction_receipt(tx["hash"])["status"] != 1:
                continue
            address, user_id = owners[to.lower()]
            found.append(
                _Found(
                    tx_hash=_hex(tx["hash"]),
                    log_index=ChainDeposit.NATIVE_LOG_INDEX,
                    asset=native,
                    user_id=user_id,
                    address=address,
                    sender=Web3.to_checksum_address(tx["from"]),
                    units=int(tx["value"]),
                    block_number=int(block["number"]),
                    block_hash=_hex(block["hash"]),
                )
            )
    return found


def _token_transfers(
    w3: Web3,
    start: int,
    blocks: list[Any],
    hashes: dict[int, str],
    owners: dict[str, tuple[str, int]],
    tokens: list[EvmAsset],
) -> tuple[list[_Found], int]:
    """The tokens' Transfer logs to deposit addresses over the range, and the last block whose
    logs agree with the blocks fetched (a log from another branch means a reorg mid-scan)."""
    by_contract = {t.contract.lower(): t for t in tokens}
    end = int(blocks[-1]["number"])
    to_topic: list[str] | None = None
    if len(owners) <= TOPIC_FILTER_MAX:
        to_topic = ["0x" + "0" * 24 + address[2:] for address in owners]
    log_filter: Any = {
        "fromBlock": start,
        "toBlock": end,
        "address": [t.contract for t in tokens],
        "topics": [TRANSFER_TOPIC, None, to_topic],
    }
    logs = w3.eth.get_logs(log_filter)
    last_good = end
    found = []
    for log in logs:
        number = int(log["blockNumber"])
        if log.get("removed") or hashes.get(number) != _hex(log["blockHash"]):
            last_good = min(last_good, number - 1)
            continue
        topics = log["topics"]
        if len(topics) != 3 or _hex(topics[0]) != TRANSFER_TOPIC:
            continue  # not ERC-20's Transfer (ERC-721's has a third indexed topic)
        to = "0x" + _hex(topics[2])[-40:]
        token = by_contract.get(str(log["address"]).lower())
        if to not in owners or token is None:
            continue
        units = int.from_bytes(bytes(log["data"]), "big") if log["data"] else 0
        if units <= 0:
            continue
        address, user_id = owners[to]
        found.append(
            _Found(
                tx_hash=_hex(log["transactionHash"]),
                log_index=int(log["logIndex"]),
                asset=token,
                user_id=user_id,
                address=address,
                sender=Web3.to_checksum_address("0x" + _hex(topics[1])[-40:]),
                units=units,
                block_number=number,
                block_hash=_hex(log["blockHash"]),
            )
        )
    return found, last_good


def _amount(units: int, *, decimals: int, precision: int) -> tuple[Decimal, str]:
    """The ledger amount of `units` base units and why it is less, if it is: dust below the
    asset's precision stays on the address, uncredited; too much for the ledger is not credited."""
    if units >= 10 ** (AMOUNT_MAX_DIGITS - AMOUNT_DECIMAL_PLACES + decimals):
        return Decimal(0), "too large for the ledger: not credited"
    if decimals <= precision:
        return Decimal(f"{units}e-{decimals}"), ""
    step = 10 ** (decimals - precision)
    whole, dust = divmod(units, step)
    amount = Decimal(f"{whole}e-{precision}")
    if not dust:
        return amount, ""
    dust_text = format(Decimal(f"{dust}e-{decimals}"), "f")
    if not whole:
        return amount, f"below the asset's {precision} decimal places: not credited"
    return amount, f"{dust_text} below the asset's {precision} decimal places not credited"


def _record(blocks: list[Any], found: list[_Found]) -> int:
    """The scanned blocks and the deposits in them, in one transaction: the watcher's view and
    what it saw move together."""
    assets = {a.code: a for a in Asset.objects.filter(code__in={f.asset.code for f in found})}
    url = settings.EVM_RPC_URL
    seen = 0
    with durable_atomic():
        ChainBlock.objects.bulk_create(
            [
                ChainBlock(
                    chain=CHAIN,
                    number=int(b["number"]),
                    hash=_hex(b["hash"]),
                    parent_hash=_hex(b["parentHash"]),
                )
                for b in blocks
            ]
        )
        for item in found:
            asset = assets[item.asset.code]
            decimals = (
                NATIVE_DECIMALS
                if item.asset.kind == "native"
                else _token_decimals(url, item.asset.contract)
            )
            amount, note = _amount(item.units, decimals=decimals, precision=asset.precision)
            status = ChainDeposit.Status.SEEN if amount > 0 else ChainDeposit.Status.IGNORED
            existing = (
                ChainDeposit.objects.select_for_update()
                .filter(chain=CHAIN, tx_hash=item.tx_hash, log_index=item.log_index)
                .first()
            )
            if existing is None:
                ChainDeposit.objects.create(
                    chain=CHAIN,
                    tx_hash=item.tx_hash,
                    log_index=item.log_index,
                    asset=asset,
                    user_id=item.user_id,
                    address=item.address,
                    sender=item.sender,
                    units=item.units,
                    amount=amount,
                    block_number=item.block_number,
                    block_hash=item.block_hash,
                    status=status,
                    note=note,
                )
                seen += status == ChainDeposit.Status.SEEN
                continue
            # The same transfer mined again on a new branch after a reorg.
            existing.block_number, existing.block_hash = item.block_number, item.block_hash
            fields = ["block_number", "block_hash"]
            if existing.status == ChainDeposit.Status.DROPPED:
                existing.status, existing.note = status, note
                fields += ["status", "note"]
                seen += status == ChainDeposit.Status.SEEN
            existing.save(update_fields=fields)
    return seen


# --- crediting --------------------------------------------------------------------------------


def chain_deposit_key(deposit: ChainDeposit) -> str:
    """The idempotency key of a chain deposit's ledger credit: one per on-chain transfer."""
    return f"chain-deposit:{deposit.chain}:{deposit.tx_hash}:{deposit.log_index}"


def _credit_confirmed(tip: int) -> int:
    deepest = tip - confirmations_required() + 1
    ids = list(
        ChainDeposit.objects.filter(
            chain=CHAIN, status=ChainDeposit.Status.SEEN, block_number__lte=deepest
        )
        .order_by("block_number", "pk")
        .values_list("pk", flat=True)[:500]
    )
    return sum(chain_deposit_credit(chain_deposit_id=pk) for pk in ids)


def chain_deposit_credit(*, chain_deposit_id: int) -> bool:
    """Credit a seen deposit whose block is still on the watcher's chain and deep enough: a
    ledger Deposit and the transfer custody:ASSET:deposits -> the user, once. False if it was
    not (already credited, dropped, or not confirmed)."""
    with durable_atomic():
        deposit = (
            ChainDeposit.objects.select_for_update()
            .select_related("asset", "user")
            .get(pk=chain_deposit_id)
        )
        if deposit.status != ChainDeposit.Status.SEEN:
            return False
        tip = chain_tip_number()
        on_chain = ChainBlock.objects.filter(
            chain=deposit.chain, number=deposit.block_number, hash=deposit.block_hash
        ).exists()
        if not on_chain or tip is None or tip - deposit.block_number + 1 < confirmations_required():
            return False
        asset = deposit.asset
        ledger_deposit = Deposit.objects.create(
            user=deposit.user,
            asset=asset,
            amount=deposit.amount,
            reference=f"{deposit.tx_hash}:{deposit.log_index}",
            status=Deposit.Status.CREDITED,
        )
        ledger_deposit.transfer = transfer_post(
            idempotency_key=chain_deposit_key(deposit),
            debit=account_custody(asset=asset, place="deposits"),
            credit=account_for_user(user=deposit.user, asset=asset),
            amount=deposit.amount,
            kind=Transfer.Kind.DEPOSIT,
            memo=f"{deposit.chain} {deposit.tx_hash}",
        )
        ledger_deposit.save(update_fields=["transfer"])
        deposit.status = ChainDeposit.Status.CREDITED
        deposit.deposit = ledger_deposit
        deposit.credited_at = timezone.now()
        deposit.save(update_fields=["status", "deposit", "credited_at"])
        user_funds_news(
            user_id=deposit.user_id,
            text=format_lazy(
                gettext_lazy(
                    "Deposit of {amount} {asset} credited after {n} confirmations ({tx}…)."
                ),
                amount=fmt(deposit.amount, asset.precision),
                asset=asset.code,
                n=confirmations_required(),
                tx=deposit.tx_hash[:12],
            ),
        )
    return True


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DepositRow:
    deposit: ChainDeposit
    confirmations: int  # capped at the required number
    required: int

    @property
    def state_text(self) -> str:
        d = self.deposit
        if d.status == ChainDeposit.Status.SEEN:
            return gettext("seen, {n}/{required} confirmations").format(
                n=self.confirmations, required=self.required
            )
        return str(d.get_status_display())

    @property
    def note_text(self) -> str:
        """The stored note (English, for moderators and the API) as the reader's language
        says it."""
        d = self.deposit
        if not d.note:
            return ""
        if d.status == ChainDeposit.Status.CREDITED:
            return gettext("its block #{n} was reorged out after crediting").format(
                n=d.block_number
            )
        if d.status == ChainDeposit.Status.DROPPED:
            return gettext("its block #{n} left the chain (reorg)").format(n=d.block_number)
        return d.note


def chain_deposit_list_for_user(*, user: Any, limit: int = 20) -> list[DepositRow]:
    """The user's recent chain deposits with their confirmations on the watcher's view."""
    tip = chain_tip_number()
    required = confirmations_required()
    rows = []
    for deposit in ChainDeposit.objects.filter(user=user).select_related("asset")[:limit]:
        if deposit.status == ChainDeposit.Status.CREDITED:
            confirmations = required
        elif deposit.status == ChainDeposit.Status.SEEN and tip is not None:
            confirmations = max(0, min(required, tip - deposit.block_number + 1))
        else:
            confirmations = 0
        rows.append(DepositRow(deposit=deposit, confirmations=confirmations, required=required))
    return rows


@dataclass(frozen=True)
class DepositTarget:
    """Where and how a user deposits an asset on the chain (the wallet page, the API)."""

    asset_code: str
    chain: str
    address: str  # EIP-55
    contract: str  # the token's contract (EIP-55); "" for the native coin
    confirmations_required: int


def deposit_target_for(*, user: Any, asset_code: str) -> DepositTarget | None:
    """The user's deposit address for an asset on the chain, or None when the asset is not on
    the chain here (it stays on the manual adapter)."""
    from ledger.evm.addresses import deposit_address_for
    from ledger.evm.config import evm_asset

    config = evm_asset(asset_code)
    if config is None or not settings.EVM_XPUB:
        return None
    return DepositTarget(
        asset_code=asset_code,
        chain=CHAIN,
        address=deposit_address_for(user=user).address,
        contract=config.contract,
        confirmations_required=confirmations_required(),
    )
