"""The chain's sequencer: every outgoing transaction (withdrawals, sweeps, gas top-ups) is signed,
sent and followed here, by one process at a time per chain (a PostgreSQL advisory lock).

A withdrawal's way (docs/chain.md "Withdrawals and sweeps"):
1. `withdrawal_request` held amount + fee; the adapter left it SUBMITTED and woke us.
2. If the hot wallet can pay it (the amount, the gas at the current quote, and what the
   transactions still in flight will take), it gets the address's next nonce, is signed with the
   hot wallet's key (from the environment, ledger.evm.keys), and the raw bytes and their hash are
   COMMITTED before the first broadcast. A hot wallet too low leaves it queued and alerts the
   moderators (once, until it recovers).
3. Every run re-reads each live transaction: a SIGNED one (a crash between commit and broadcast)
   is broadcast, the same bytes; a BROADCAST one is re-announced (a node that dropped it gets it
   again; "already known" is fine), or, past EVM_STUCK_AFTER_SECONDS, replaced by a new signature
   of the same nonce with fees +12.5%. Whichever of a nonce's transactions is mined wins; the
   other ends `replaced`.
4. Mined: once EVM_CONFIRMATIONS blocks hold it (and its receipt is still in the same block: a
   reorg sends it back to be broadcast), a success posts the withdrawal's hold and fee
   (withdrawal_confirm) and a revert voids them (withdrawal_reject). The gas it burnt is posted
   world:ETH <- custody:ETH:<payer> either way.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import ngettext_lazy
from eth_account import Account
from eth_typing import ChecksumAddress, HexStr
from web3 import Web3
from web3.exceptions import TransactionNotFound

from common.db import session_lock
from common.money import fmt
from common.transactions import durable_atomic
from ledger import alerts
from ledger.evm.addresses import derive_private_key
from ledger.evm.config import CHAIN, EvmAsset, confirmations_required, evm_asset, evm_assets
from ledger.evm.fees import ETH_TRANSFER_GAS, GasQuote, bumped, gas_quote, wei_to_eth
from ledger.evm.keys import deposit_xprv, hot_wallet_key
from ledger.evm.models import ChainTransaction, NonceCursor
from ledger.evm.rpc import erc20, web3
from ledger.models import Asset, Withdrawal

if TYPE_CHECKING:
    from web3.types import TxReceipt

logger = logging.getLogger(__name__)

TX = ChainTransaction
TOKEN_GAS_MARGIN = Decimal("1.25")  # over eth_estimateGas for a token transfer
TOKEN_GAS_FALLBACK = 100_000


@dataclass
class SequencerReport:
    skipped: bool = False  # another process holds the chain's lock
    sent: list[int] = field(default_factory=list)  # ChainTransaction ids signed this run
    replaced: list[int] = field(default_factory=list)
    confirmed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)  # withdrawals the hot wallet can't pay yet


# --- the lock -----------------------------------------------------------------------------------


@contextmanager
def sequencer_lock(chain: str = CHAIN) -> Iterator[bool]:
    """The chain's advisory lock, held by a database session (so a killed process loses it with
    its connection; behind PgBouncer, a direct one: common.db.session_lock); yields whether it
    was free. Nonces are only given out under it."""
    with session_lock(zlib.crc32(f"evm-sequencer:{chain}".encode())) as got:
        yield got


def sequencer_run() -> SequencerReport:
    """Follow every transaction in flight, then sign and send the queued withdrawals."""
    with sequencer_lock() as got:
        if not got:
            return SequencerReport(skipped=True)
        report = SequencerReport()
        w3 = web3()
        transactions_follow(w3, report)
        withdrawals_send(w3, report)
        return report


# --- keys and signing ---------------------------------------------------------------------------


def hot_account() -> Any:
    """The hot wallet (its key from the environment); its address must be the configured one."""
    account = Account.from_key(hot_wallet_key())
    configured = settings.EVM_HOT_WALLET_ADDRESS
    if configured and Web3.to_checksum_address(configured) != account.address:
        raise ImproperlyConfigured("EVM_HOT_WALLET_KEY is not the key of EVM_HOT_WALLET_ADDRESS.")
    return account


def _signer(kind: str, deposit_index: int | None) -> Any:
    if kind == TX.Kind.SWEEP:
        assert deposit_index is not None
        return Account.from_key(derive_private_key(deposit_index, xprv=deposit_xprv()))
    return hot_account()


def units(asset: Asset, amount: Decimal) -> int:
    """`amount` in the asset's smallest unit (wei; a token's base units = its precision)."""
    return int(amount.scaleb(asset.precision))


def _call(config: EvmAsset, to: str, value_units: int) -> tuple[str, int, str]:
    """(transaction's to, value in wei, data) of moving `value_units` of the asset to `to`."""
    if config.kind == "native":
        return to, value_units, "0x"
    data = erc20(config.contract).encode_abi("transfer", args=[to, value_units])
    return config.contract, 0, data


def gas_limit_for(w3: Web3, config: EvmAsset, sender: str, to: str, value_units: int) -> int:
    """21,000 for ETH to a plain address; else eth_estimateGas with a margin."""
    tx_to, value, data = _call(config, to, value_units)
    try:
        call: Any = {"from": sender, "to": tx_to, "value": value, "data": data}
        estimate = int(w3.eth.estimate_gas(call))
    except Exception:
        return ETH_TRANSFER_GAS if config.kind == "native" else TOKEN_GAS_FALLBACK
    if config.kind == "native" and estimate <= ETH_TRANSFER_GAS:
        return ETH_TRANSFER_GAS
    return int((estimate * TOKEN_GAS_MARGIN).to_integral_value())


def _next_nonce(w3: Web3, address: str) -> int:
    """The address's next nonce (inside the caller's transaction, under the chain's lock): our own
    cursor, or the node's count if the key was used elsewhere meanwhile."""
    cursor, _ = NonceCursor.objects.select_for_update().get_or_create(chain=CHAIN, address=address)
    nonce = max(
        int(cursor.next_nonce),
        int(w3.eth.get_transaction_count(cast(ChecksumAddress, address), "pending")),
    )
    cursor.next_nonce = nonce + 1
    cursor.save(update_fields=["next_nonce"])
    return nonce


def sign_and_store(
    w3: Web3,
    *,
    kind: str,
    asset: Asset,
    to: str,
    amount: Decimal,
    gas_limit: int,
    max_fee: int,
    priority: int,
    withdrawal: Withdrawal | None = None,
    deposit_index: int | None = None,
    nonce: int | None = None,
) -> ChainTransaction:
    """Sign a transaction and store it, raw bytes and hash, in the caller's transaction: it must
    commit before anything broadcasts it. A nonce given: a replacement."""
    config = evm_asset(asset.code)
    if config is None:
        raise ImproperlyConfigured(f"{asset.code} is not on the chain.")
    signer = _signer(kind, deposit_index)
    if nonce is None:
        nonce = _next_nonce(w3, signer.address)
    tx_to, value, data = _call(config, to, units(asset, amount))
    signed = signer.sign_transaction(
        {
            "type": 2,
            "chainId": int(w3.eth.chain_id),
            "nonce": nonce,
            "to": tx_to,
            "value": value,
            "data": data,
            "gas": gas_limit,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": priority,
        }
    )
    return ChainTransaction.objects.create(
        chain=CHAIN,
        kind=kind,
        withdrawal=withdrawal,
        deposit_index=deposit_index,
        from_address=signer.address,
        nonce=nonce,
        to_address=to,
        asset=asset,
        amount=amount,
        max_fee_per_gas=max_fee,
        max_priority_fee_per_gas=priority,
        gas_limit=gas_limit,
        raw_tx=Web3.to_hex(signed.raw_transaction),
        tx_hash=Web3.to_hex(signed.hash),
    )


# --- broadcasting -------------------------------------------------------------------------------


def _send_raw(w3: Web3, tx: ChainTransaction) -> str:
    """Hand the stored bytes to the node: "ok" (it has them, now or already), "nonce_low" (the
    nonce is used: by this very transaction, mined, or by another), or the node's error."""
    try:
        w3.eth.send_raw_transaction(HexStr(tx.raw_tx))
    except Exception as exc:
        message = str(exc)
        lowered = message.lower()
        if (
            "already known" in lowered
            or "already imported" in lowered
            or "known transaction" in lowered
        ):
            return "ok"
        if "nonce too low" in lowered or "nonce is too low" in lowered:
            return "nonce_low"
        return message[:200] or type(exc).__name__
    return "ok"


def broadcast(w3: Web3, tx_id: int) -> str:
    """Broadcast a stored transaction (the same bytes however often); mark it BROADCAST."""
    tx = ChainTransaction.objects.get(pk=tx_id)
    outcome = _send_raw(w3, tx)
    if outcome == "nonce_low":
        _nonce_used(w3, tx)
        return outcome
    with durable_atomic():
        tx = ChainTransaction.objects.select_for_update().get(pk=tx_id)
        if outcome == "ok" and tx.status == TX.Status.SIGNED:
            tx.status = TX.Status.BROADCAST
            tx.broadcast_at = timezone.now()
            tx.error = ""
            tx.save(update_fields=["status", "broadcast_at", "error", "updated_at"])
        elif outcome != "ok" and tx.error != outcome:
            # Kept for the next run (a hot wallet short of gas, a node that is down...).
            logger.warning("broadcast of %s failed: %s", tx.tx_hash, outcome)
            tx.error = outcome
            tx.save(update_fields=["error", "updated_at"])
    return outcome


def _receipt(w3: Web3, tx_hash: str) -> TxReceipt | None:
    try:
        return w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    except TransactionNotFound:
        return None


def _nonce_used(w3: Web3, tx: ChainTransaction) -> None:
    """The node says the nonce is taken. By one of ours: follow that one. By nothing of ours (the
    key was used elsewhere): this transaction can never be mined; it failed, nothing was sent."""
    if _mined_sibling(w3, tx) is not None:
        return
    with durable_atomic():
        tx = ChainTransaction.objects.select_for_update().get(pk=tx.pk)
        if tx.status not in TX.LIVE:
            return
        tx.status = TX.Status.FAILED
        tx.succeeded = False
        tx.error = "Its nonce was used by another transaction: nothing was sent."
        tx.finished_at = timezone.now()
        tx.save(update_fields=["status", "succeeded", "error", "finished_at", "updated_at"])
    _settle_withdrawal(tx, succeeded=False)


def _mined_sibling(w3: Web3, tx: ChainTransaction) -> ChainTransaction | None:
    """The transaction of tx's nonce that the chain mined, if any (marked MINED; the others of
    the nonce `replaced`)."""
    siblings = list(
        ChainTransaction.objects.filter(
            chain=tx.chain, from_address=tx.from_address, nonce=tx.nonce
        ).exclude(status__in=(TX.Status.CONFIRMED, TX.Status.FAILED))
    )
    for sibling in siblings:
        receipt = _receipt(w3, sibling.tx_hash)
        if receipt is None:
            continue
        with durable_atomic():
            rows = list(
                ChainTransaction.objects.select_for_update()
                .filter(pk__in=[s.pk for s in siblings])
                .order_by("pk")
            )
            for other in rows:  # first step aside (one non-replaced row per nonce)
                if other.pk != sibling.pk and other.status != TX.Status.REPLACED:
                    other.status = TX.Status.REPLACED
                    other.save(update_fields=["status", "updated_at"])
            mined = next(r for r in rows if r.pk == sibling.pk)
            if mined.status != TX.Status.MINED:
                mined.status = TX.Status.MINED
                mined.succeeded = receipt["status"] == 1
                mined.block_number = receipt["blockNumber"]
                mined.block_hash = Web3.to_hex(receipt["blockHash"])
                mined.gas_used = receipt["gasUsed"]
                mined.effective_gas_price = receipt["effectiveGasPrice"]
                mined.mined_at = timezone.now()
                mined.save()
            return mined
    return None


# --- following what is in flight ----------------------------------------------------------------


def transactions_follow(w3: Web3, report: SequencerReport) -> None:
    """Broadcast, re-announce, replace, notice mining, and finish what is confirmed."""
    stuck_before = timezone.now() - timedelta(seconds=float(settings.EVM_STUCK_AFTER_SECONDS))
    live = ChainTransaction.objects.filter(chain=CHAIN, status__in=TX.LIVE).order_by(
        "from_address", "nonce"
    )
    for tx in live:
        if _mined_sibling(w3, tx) is not None:
            continue
        if tx.status == TX.Status.SIGNED:
            broadcast(w3, tx.pk)
        elif tx.broadcast_at and tx.broadcast_at < stuck_before:
            new = replace(w3, tx.pk)
            if new is not None:
                report.replaced.append(tx.pk)
        elif _send_raw(w3, tx) == "nonce_low":  # re-announced; or its nonce went meanwhile
            _nonce_used(w3, tx)
    head = int(w3.eth.block_number)
    needed = confirmations_required()
    mined = ChainTransaction.objects.filter(chain=CHAIN, status=TX.Status.MINED).order_by("pk")
    for tx in mined:
        if tx.block_number is None or head - int(tx.block_number) + 1 < needed:
            continue
        receipt = _receipt(w3, tx.tx_hash)
        if receipt is None or Web3.to_hex(receipt["blockHash"]) != tx.block_hash:
            _reorged(tx.pk)  # followed again from the next run
            continue
        finished = finish(tx.pk)
        if finished is not None:
            (report.confirmed if finished.succeeded else report.failed).append(tx.pk)


def replace(w3: Web3, tx_id: int) -> ChainTransaction | None:
    """Re-sign a stuck transaction: same nonce, same transfer, fees +12.5% (or today's quote)."""
    quote = gas_quote(w3)
    with durable_atomic():
        old = ChainTransaction.objects.select_for_update().select_related("asset").get(pk=tx_id)
        if old.status != TX.Status.BROADCAST:
            return None
        max_fee, priority = bumped(
            int(old.max_fee_per_gas), int(old.max_priority_fee_per_gas), quote
        )
        old.status = TX.Status.REPLACED
        old.save(update_fields=["status", "updated_at"])
        new = sign_and_store(
            w3,
            kind=old.kind,
            asset=old.asset,
            to=old.to_address,
            amount=old.amount,
            gas_limit=int(old.gas_limit),
            max_fee=max_fee,
            priority=priority,
            withdrawal=old.withdrawal,
            deposit_index=old.deposit_index,
            nonce=int(old.nonce),
        )
        old.replaced_by = new
        old.save(update_fields=["replaced_by", "updated_at"])
    logger.info("replaced stuck %s (nonce %s) by %s", old.tx_hash, old.nonce, new.tx_hash)
    broadcast(w3, new.pk)
    return new


def _reorged(tx_id: int) -> None:
    with durable_atomic():
        tx = ChainTransaction.objects.select_for_update().get(pk=tx_id)
        if tx.status != TX.Status.MINED:
            return
        live = ChainTransaction.objects.filter(
            chain=tx.chain, from_address=tx.from_address, nonce=tx.nonce, status__in=TX.LIVE
        ).exists()
        # Back to be broadcast again (unless its nonce has another live one: that one goes on).
        tx.status = TX.Status.REPLACED if live else TX.Status.SIGNED
        tx.block_number = None
        tx.block_hash = ""
        tx.succeeded = None
        tx.mined_at = None
        tx.save()


def finish(tx_id: int) -> ChainTransaction | None:
    """A mined transaction is final: settle its withdrawal, post the custody moves and the gas."""
    tx = ChainTransaction.objects.select_related("asset").get(pk=tx_id)
    if tx.status != TX.Status.MINED:
        return None
    # The withdrawal first, in its own service's transaction; safe again after a crash (a
    # withdrawal no longer SUBMITTED is left alone), then the transaction's own row.
    _settle_withdrawal(tx, succeeded=bool(tx.succeeded))
    from ledger.evm.custody import post_chain_transaction

    with durable_atomic():
        tx = ChainTransaction.objects.select_for_update().select_related("asset").get(pk=tx_id)
        if tx.status != TX.Status.MINED:
            return None
        post_chain_transaction(tx)
        tx.status = TX.Status.CONFIRMED if tx.succeeded else TX.Status.FAILED
        if not tx.succeeded:
            tx.error = "Reverted on chain."
        tx.finished_at = timezone.now()
        tx.save(update_fields=["status", "error", "finished_at", "updated_at"])
    return tx


def _settle_withdrawal(tx: ChainTransaction, *, succeeded: bool) -> None:
    from ledger.services import withdrawal_confirm, withdrawal_reject

    if tx.kind != TX.Kind.WITHDRAWAL or tx.withdrawal_id is None:
        return
    withdrawal = Withdrawal.objects.select_related("asset").get(pk=tx.withdrawal_id)
    if withdrawal.status != Withdrawal.Status.SUBMITTED:
        return
    if succeeded:
        withdrawal_confirm(withdrawal_id=withdrawal.pk, txid=tx.tx_hash, actor=None)
        alerts.user_funds_news(
            user_id=withdrawal.user_id,
            text=f"Your withdrawal of {fmt(withdrawal.amount, withdrawal.asset.precision)} "
            f"{withdrawal.asset.code} to {withdrawal.address} is confirmed on chain "
            f"(transaction {tx.tx_hash}).",
        )
    else:
        withdrawal_reject(
            withdrawal_id=withdrawal.pk,
            reason=f"The transaction failed on chain ({tx.error or 'reverted'}); refunded.",
            actor=None,
        )


# --- sending queued withdrawals -----------------------------------------------------------------


@dataclass
class HotWalletBudget:
    """What the hot wallet can still spend: its balance less what transactions in flight will
    take (their value and their most gas)."""

    address: str
    eth_wei: int
    token_units: dict[str, int]

    @classmethod
    def read(cls, w3: Web3, address: str) -> HotWalletBudget:
        eth = int(w3.eth.get_balance(address))  # type: ignore[arg-type]
        tokens = {
            a.code: int(erc20(a.contract, w3).functions.balanceOf(address).call())
            for a in evm_assets()
            if a.kind == "erc20"
        }
        in_flight = ChainTransaction.objects.filter(
            chain=CHAIN, from_address=address, status__in=TX.LIVE
        ).select_related("asset")
        for tx in in_flight:
            eth -= int(tx.gas_limit) * int(tx.max_fee_per_gas)
            config = evm_asset(tx.asset.code)
            if config and config.kind == "native":
                eth -= units(tx.asset, tx.amount)
            elif config:
                tokens[config.code] = tokens.get(config.code, 0) - units(tx.asset, tx.amount)
        return cls(address=address, eth_wei=eth, token_units=tokens)


def withdrawals_send(w3: Web3, report: SequencerReport) -> None:
    """Sign and broadcast each queued (SUBMITTED, never signed) withdrawal the hot wallet can
    pay; leave the others queued and tell the moderators which coin is short."""
    codes = [a.code for a in evm_assets()]
    queued = list(
        Withdrawal.objects.filter(
            status=Withdrawal.Status.SUBMITTED,
            asset__code__in=codes,
            chain_transactions__isnull=True,
        )
        .select_related("asset")
        .order_by("created_at", "pk")
    )
    short: dict[str, list[Withdrawal]] = {}
    if queued:
        hot = hot_account()
        budget = HotWalletBudget.read(w3, hot.address)
        quote = gas_quote(w3)
        for withdrawal in queued:
            tx = _send_one(w3, withdrawal, hot.address, budget, quote, short)
            if tx is not None:
                report.sent.append(tx.pk)
                broadcast(w3, tx.pk)
    for code in codes:
        key = f"hot-wallet-low:{code}"
        if code in short:
            waiting = short[code]
            report.waiting += [w.pk for w in waiting]
            alerts.moderators_alert(
                key=key,
                text=format_lazy(
                    ngettext_lazy(
                        "The hot wallet is too low in {asset} to pay {count} queued withdrawal "
                        "({ids}): it waits until it is topped up.",
                        "The hot wallet is too low in {asset} to pay {count} queued withdrawals "
                        "({ids}): they wait until it is topped up.",
                        "count",
                    ),
                    asset=code,
                    count=len(waiting),
                    ids=", ".join(f"#{w.pk}" for w in waiting[:10]),
                ),
            )
        else:
            alerts.moderators_alert_clear(key=key)


def _send_one(
    w3: Web3,
    withdrawal: Withdrawal,
    hot: str,
    budget: HotWalletBudget,
    quote: GasQuote,
    short: dict[str, list[Withdrawal]],
) -> ChainTransaction | None:
    config = evm_asset(withdrawal.asset.code)
    assert config is not None
    value = units(withdrawal.asset, withdrawal.amount)
    if config.kind == "erc20" and value > budget.token_units.get(config.code, 0):
        short.setdefault(config.code, []).append(withdrawal)
        return None
    gas_limit = gas_limit_for(w3, config, hot, withdrawal.address, value)
    need_eth = quote.cost(gas_limit) + (value if config.kind == "native" else 0)
    if need_eth > budget.eth_wei:
        short.setdefault("ETH", []).append(withdrawal)
        return None
    with durable_atomic():
        locked = Withdrawal.objects.select_for_update().get(pk=withdrawal.pk)
        # A moderator may have rejected it meanwhile; and it is signed once, ever.
        if locked.status != Withdrawal.Status.SUBMITTED or locked.chain_transactions.exists():
            return None
        tx = sign_and_store(
            w3,
            kind=TX.Kind.WITHDRAWAL,
            asset=withdrawal.asset,
            to=withdrawal.address,
            amount=withdrawal.amount,
            gas_limit=gas_limit,
            max_fee=quote.max_fee_per_gas,
            priority=quote.max_priority_fee_per_gas,
            withdrawal=locked,
        )
    budget.eth_wei -= need_eth
    if config.kind == "erc20":
        budget.token_units[config.code] -= value
    return tx


def gas_spent(tx: ChainTransaction) -> Decimal:
    return wei_to_eth(tx.fee_paid_wei)
