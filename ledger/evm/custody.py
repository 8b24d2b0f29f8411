"""What a final outgoing transaction changes in the ledger's custody accounts, which say where
the platform's coins are (ledger.services.account_custody; minus a custody account's balance is
what sits there):

- the gas it burnt, paid in ETH by the address that sent it: world:ETH <- custody:ETH:hot (a
  withdrawal, a top-up) or custody:ETH:deposits (a sweep);
- a sweep that succeeded: the coins moved custody:X:deposits -> custody:X:hot (debit hot);
- a gas top-up that succeeded: the ETH moved hot -> deposits (debit deposits).

A withdrawal's own amount is its hold (user -> custody:X:hot), posted by withdrawal_confirm.
Each posting has an idempotency key of the transaction's id: posting twice changes nothing."""

from __future__ import annotations

from ledger.evm.fees import wei_to_eth
from ledger.evm.models import ChainTransaction
from ledger.models import Transfer
from ledger.selectors import asset_get
from ledger.services import account_custody, account_world, transfer_post


def post_chain_transaction(tx: ChainTransaction) -> None:
    """Inside the caller's transaction (the one that marks `tx` final)."""
    eth = asset_get(code="ETH")
    gas = wei_to_eth(tx.fee_paid_wei)
    payer = "deposits" if tx.kind == ChainTransaction.Kind.SWEEP else "hot"
    if gas > 0:
        transfer_post(
            idempotency_key=f"chain:{tx.pk}:gas",
            debit=account_world(asset=eth),
            credit=account_custody(asset=eth, place=payer),
            amount=gas,
            kind=Transfer.Kind.CHAIN_GAS,
            reference=tx.pk,
            memo=tx.tx_hash,
        )
    if not tx.succeeded:
        return
    if tx.kind == ChainTransaction.Kind.SWEEP:
        transfer_post(
            idempotency_key=f"chain:{tx.pk}:sweep",
            debit=account_custody(asset=tx.asset, place="hot"),
            credit=account_custody(asset=tx.asset, place="deposits"),
            amount=tx.amount,
            kind=Transfer.Kind.CHAIN_SWEEP,
            reference=tx.pk,
            memo=tx.tx_hash,
        )
    elif tx.kind == ChainTransaction.Kind.GAS_TOPUP:
        transfer_post(
            idempotency_key=f"chain:{tx.pk}:topup",
            debit=account_custody(asset=eth, place="deposits"),
            credit=account_custody(asset=eth, place="hot"),
            amount=tx.amount,
            kind=Transfer.Kind.CHAIN_SWEEP,
            reference=tx.pk,
            memo=tx.tx_hash,
        )
