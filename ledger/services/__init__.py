"""Every write to ledger accounts, transfers and the chain. Nothing else in the project writes
them. Split by concern; import from here."""

from ledger.services.funds import (
    deposit_confirm,
    deposit_credit,
    withdrawal_confirm,
    withdrawal_owner_confirm,
    withdrawal_process,
    withdrawal_reject,
    withdrawal_release_hold,
    withdrawal_request,
)
from ledger.services.sealing import (
    checkpoint_create,
    ledger_checkpoint_due,
    ledger_seal_pending,
    signing_key_publish,
    transfer_entry,
)
from ledger.services.transfers import (
    TransferSpec,
    account_custody,
    account_escrow,
    account_fees,
    account_for_user,
    account_hold,
    account_world,
    accounts_fees,
    accounts_for_users,
    transfer_post,
    transfer_post_pending,
    transfer_void_pending,
    transfers_post_many,
)

__all__ = [
    "TransferSpec",
    "account_custody",
    "account_escrow",
    "account_fees",
    "account_for_user",
    "account_hold",
    "account_world",
    "accounts_fees",
    "accounts_for_users",
    "checkpoint_create",
    "deposit_confirm",
    "deposit_credit",
    "ledger_checkpoint_due",
    "ledger_seal_pending",
    "signing_key_publish",
    "transfer_entry",
    "transfer_post",
    "transfer_post_pending",
    "transfer_void_pending",
    "transfers_post_many",
    "withdrawal_confirm",
    "withdrawal_owner_confirm",
    "withdrawal_process",
    "withdrawal_reject",
    "withdrawal_release_hold",
    "withdrawal_request",
]
