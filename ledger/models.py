from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy

from common.money import AMOUNT_DECIMAL_PLACES, amount_field


class Asset(models.Model):
    code = models.CharField(max_length=12, unique=True)
    name = models.CharField(max_length=64)
    # Decimal places the asset is traded and settled in (BTC 8, ETH 18, USDT 6).
    precision = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(0), MaxValueValidator(AMOUNT_DECIMAL_PLACES)]
    )
    # Decimal places amounts are shown with in the browser (BTC 8, ETH 6, USDT 2), rounded down,
    # the exact amount on hover (common.templatetags.money.amount); a quantity bought for a fiat
    # amount is quantized to it when a trade opens (escrow.services.opening). Blank: the
    # precision, at most DEFAULT_DISPLAY_PLACES. Never more than the precision.
    display_precision = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(AMOUNT_DECIMAL_PLACES)],
        help_text=gettext_lazy(
            "Decimal places shown in the browser and traded for a fiat amount; at most "
            "the precision. Blank: the precision, at most 8."
        ),
    )
    is_active = models.BooleanField(default=True)

    DEFAULT_DISPLAY_PLACES = 8

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(precision__lte=AMOUNT_DECIMAL_PLACES), name="asset_precision_fits"
            ),
            models.CheckConstraint(
                condition=Q(display_precision__isnull=True)
                | Q(display_precision__lte=F("precision")),
                name="asset_display_precision_fits",
            ),
        ]

    def __str__(self) -> str:
        return self.code

    def clean(self) -> None:
        shown, places = self.display_precision, self.precision
        if shown is not None and places is not None and shown > places:
            raise ValidationError(
                {"display_precision": f"At most the asset's precision ({places})."}
            )

    @property
    def display_places(self) -> int:
        """The decimal places amounts of this asset are shown and fiat-bought quantities traded
        in: the display precision, else the precision capped at DEFAULT_DISPLAY_PLACES."""
        if self.display_precision is not None:
            return min(self.display_precision, self.precision)
        return min(self.precision, self.DEFAULT_DISPLAY_PLACES)


class LedgerAccount(models.Model):
    """A balance of one asset. Four TigerBeetle-style columns; only ledger.services writes them."""

    class Kind(models.TextChoices):
        USER = "user"  # a user's available balance
        ESCROW = "escrow"  # one trade's escrow hold
        FEES = "fees"  # the platform's fee income
        WORLD = "world"  # the outside world: deposits in, withdrawals out (goes negative)

    code = models.CharField(max_length=64, unique=True)
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="accounts")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_accounts",
    )
    debits_pending = amount_field(default=Decimal(0))
    debits_posted = amount_field(default=Decimal(0))
    credits_pending = amount_field(default=Decimal(0))
    credits_posted = amount_field(default=Decimal(0))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "asset"],
                condition=Q(kind="user"),
                name="one_user_account_per_asset",
            ),
            models.CheckConstraint(
                condition=Q(
                    debits_pending__gte=0,
                    debits_posted__gte=0,
                    credits_pending__gte=0,
                    credits_posted__gte=0,
                ),
                name="account_columns_nonneg",
            ),
            # The rule no code path may break: nothing but the outside world spends what it lacks.
            models.CheckConstraint(
                condition=Q(kind="world")
                | Q(debits_posted__lte=F("credits_posted") - F("debits_pending")),
                name="account_no_overdraft",
            ),
        ]

    def __str__(self) -> str:
        return self.code

    @property
    def balance(self) -> Decimal:
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> Decimal:
        return self.credits_posted - self.debits_posted - self.debits_pending


class Transfer(models.Model):
    """One double-entry movement. Append-only; sealed into the hash chain by ledger_seal_pending."""

    class Kind(models.TextChoices):
        DEPOSIT = "deposit"
        WITHDRAWAL = "withdrawal"
        ESCROW_HOLD = "escrow_hold"
        TRADE_PAYOUT = "trade_payout"
        TRADE_FEE = "trade_fee"
        # Lending (reference: the loan request's id): the borrower's collateral hold, a lender's
        # funding hold and the disbursement, an installment paid to a lender, collateral handed
        # over in a liquidation, the platform's fee, a moderator's compensation in a loan dispute.
        LOAN_COLLATERAL = "loan_collateral"
        LOAN_FUNDING = "loan_funding"
        LOAN_INSTALLMENT = "loan_installment"
        LOAN_LIQUIDATION = "loan_liquidation"
        LOAN_FEE = "loan_fee"
        LOAN_COMPENSATION = "loan_compensate"
        # The chain's custody moves (ledger/evm): coins swept from deposit addresses to the hot
        # wallet (or ETH topped up the other way), and the gas the platform paid.
        CHAIN_SWEEP = "chain_sweep"
        CHAIN_GAS = "chain_gas"

    class Flags(models.TextChoices):
        SINGLE = "single"  # posted at once
        PENDING = "pending"  # a hold: reserved on both sides until posted or voided
        POST_PENDING = "post_pending"  # posts (part of) a pending transfer; the rest is released
        VOID_PENDING = "void_pending"  # releases a pending transfer entirely

    idempotency_key = models.CharField(max_length=200, unique=True)
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="transfers")
    debit_account = models.ForeignKey(
        LedgerAccount, on_delete=models.PROTECT, related_name="debits"
    )
    credit_account = models.ForeignKey(
        LedgerAccount, on_delete=models.PROTECT, related_name="credits"
    )
    amount = amount_field()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    flags = models.CharField(max_length=12, choices=Flags.choices, default=Flags.SINGLE)
    # A hold is resolved once only: the database, not just this code, refuses a second resolution.
    pending = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="resolution"
    )
    # What the transfer is for, opaque to the ledger and read in the terms of its kind (TigerBeetle's
    # user_data): a trade's id for escrow_hold, trade_payout and trade_fee. Not a foreign key: the
    # ledger is the lowest layer and knows nothing of trades.
    reference = models.BigIntegerField(null=True, blank=True, db_index=True)
    memo = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set once by the sequencer; never changed afterwards.
    seq = models.BigIntegerField(null=True, blank=True, unique=True)
    prev_hash = models.CharField(max_length=64, blank=True)
    hash = models.CharField(max_length=64, blank=True)
    # SHA-256(0x00 || canonical bytes): this entry's leaf in the Merkle tree (index seq - 1).
    leaf_hash = models.CharField(max_length=64, blank=True)
    sealed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The sequencer scans only what is still unsealed.
            models.Index(fields=["id"], condition=Q(seq__isnull=True), name="transfer_unsealed"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="transfer_amount_positive"),
            models.CheckConstraint(
                condition=~Q(debit_account=F("credit_account")), name="transfer_accounts_differ"
            ),
            models.CheckConstraint(
                condition=Q(flags__in=["post_pending", "void_pending"], pending__isnull=False)
                | Q(flags__in=["single", "pending"], pending__isnull=True),
                name="transfer_resolution_links_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind}/{self.flags} {self.amount} {self.asset_id}"

    @property
    def trade_id(self) -> int | None:
        """The trade this transfer is for, when its kind says the reference is a trade's id."""
        return self.reference if self.kind in TRADE_KINDS else None


class OpenHold(models.Model):
    """A pending transfer not yet posted or voided, kept by the database itself: a trigger on
    ledger_transfer adds each hold as it is inserted and removes it when its resolution is
    (migration ledger/0011), whatever writes them (the services, the settlement's batch SQL).
    A wallet reads its holds here, not among every hold its account ever had
    (bench/take_history.py: a seller's GET /wallets/ at 200,000 past trades)."""

    transfer = models.OneToOneField(
        Transfer, on_delete=models.DO_NOTHING, primary_key=True, related_name="+"
    )
    account = models.ForeignKey(LedgerAccount, on_delete=models.DO_NOTHING, related_name="+")
    asset = models.ForeignKey(Asset, on_delete=models.DO_NOTHING, related_name="+")
    kind = models.CharField(max_length=16, choices=Transfer.Kind.choices)
    amount = amount_field()

    def __str__(self) -> str:
        return f"hold #{self.transfer_id} {self.kind} {self.amount}"


class Withdrawal(models.Model):
    class Status(models.TextChoices):
        REQUESTED = "requested"  # held; waiting for a worker to hand it to the chain adapter
        SUBMITTED = "submitted"  # the adapter has it; waiting for its confirmation
        COMPLETED = "completed"  # hold posted to the outside world
        FAILED = "failed"  # hold voided back to the user
        HELD = "held"  # stopped before sending (a frozen account): a moderator releases or rejects

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="withdrawals"
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = amount_field()
    address = models.CharField(max_length=128)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.REQUESTED)
    hold = models.OneToOneField(
        Transfer, on_delete=models.PROTECT, null=True, blank=True, related_name="withdrawal"
    )
    # The network fee the adapter quoted at request time (ChainAdapter.withdrawal_fee), held
    # with the amount (user -> fees, pending): posted when it is sent, voided when it fails.
    fee = amount_field(default=0)
    fee_hold = models.OneToOneField(
        Transfer, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    txid = models.CharField(max_length=128, blank=True)
    failure_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Withdrawal #{self.pk} {self.amount} {self.asset_id} ({self.status})"


class Deposit(models.Model):
    """A deposit the chain adapter saw (or a user announced), credited once confirmed."""

    class Status(models.TextChoices):
        PENDING = "pending"
        CREDITED = "credited"
        REJECTED = "rejected"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="deposits"
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = amount_field()
    reference = models.CharField(
        max_length=128, help_text=gettext_lazy("Chain transaction id or a note.")
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    transfer = models.OneToOneField(
        Transfer, on_delete=models.PROTECT, null=True, blank=True, related_name="deposit"
    )
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Deposit #{self.pk} {self.amount} {self.asset_id} ({self.status})"


class MerkleNode(models.Model):
    """A complete, aligned subtree of the Merkle tree above the leaves: 2**level leaves starting at
    leaf index * 2**level. Written once by the sequencer; proofs read O(log n) of them."""

    level = models.PositiveSmallIntegerField()
    index = models.BigIntegerField()
    hash = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["level", "index"], name="one_merkle_node_per_position")
        ]

    def __str__(self) -> str:
        return f"node({self.level}, {self.index})"


class SigningKey(models.Model):
    """Every Ed25519 public key that ever signed a checkpoint; old ones stay valid after rotation."""

    key_id = models.CharField(max_length=32, unique=True)
    public_key = models.CharField(
        max_length=64, help_text=gettext_lazy("Raw 32-byte Ed25519 public key, hex")
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key_id


class Checkpoint(models.Model):
    """A signed tree head: the Merkle root over entries 1..tree_size and the chain head there."""

    tree_size = models.BigIntegerField(unique=True)
    root_hash = models.CharField(max_length=64)
    chain_head = models.CharField(max_length=64)
    timestamp = models.CharField(max_length=32, help_text=gettext_lazy("ISO 8601 UTC, as signed"))
    key_id = models.CharField(max_length=32)
    signature = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-tree_size"]

    def __str__(self) -> str:
        return f"checkpoint {self.tree_size}"

    def signed_fields(self) -> dict[str, object]:
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "chain_head": self.chain_head,
            "timestamp": self.timestamp,
            "key_id": self.key_id,
        }


# The kinds whose reference is a trade's id.
TRADE_KINDS = frozenset(
    {Transfer.Kind.ESCROW_HOLD, Transfer.Kind.TRADE_PAYOUT, Transfer.Kind.TRADE_FEE}
)

# The chain's tables live beside their code (ledger/evm/models.py); re-exported here, where
# Django looks for the app's models.
from ledger.evm.models import ChainBlock as ChainBlock  # noqa: E402
from ledger.evm.models import ChainDeposit as ChainDeposit  # noqa: E402
from ledger.evm.models import ChainTransaction as ChainTransaction  # noqa: E402
from ledger.evm.models import DepositAddress as DepositAddress  # noqa: E402
from ledger.evm.models import NonceCursor as NonceCursor  # noqa: E402
from ledger.evm.models import ReserveLeaf as ReserveLeaf  # noqa: E402
from ledger.evm.models import ReserveProof as ReserveProof  # noqa: E402
from ledger.evm.models import ReserveReconciliation as ReserveReconciliation  # noqa: E402
