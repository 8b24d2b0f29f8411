"""The chain's tables (app label `ledger`; ledger/models.py imports them)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

from common.money import amount_field


class DepositAddress(models.Model):
    """A user's deposit address on a chain: xpub/0/index (ledger.evm.addresses)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="deposit_addresses"
    )
    chain = models.CharField(max_length=16)
    index = models.PositiveIntegerField(help_text="BIP-32 child index under the xpub's chain 0")
    address = models.CharField(max_length=42, help_text="EIP-55 checksummed")
    created_at = models.DateTimeField(auto_now_add=True)

    # Spelled out: the type checker's Django plugin adds it only to models in an app's models.py.
    objects: models.Manager[DepositAddress] = models.Manager()

    class Meta:
        app_label = "ledger"
        constraints = [
            models.UniqueConstraint(fields=["user", "chain"], name="one_deposit_address_per_chain"),
            models.UniqueConstraint(fields=["chain", "index"], name="deposit_index_unique"),
            models.UniqueConstraint(fields=["chain", "address"], name="deposit_address_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.chain}:{self.address}"


class NonceCursor(models.Model):
    """The next nonce the sequencer gives a transaction from `address` (the hot wallet, or a
    deposit address that is swept). Only the chain's sequencer (an advisory lock) moves it."""

    chain = models.CharField(max_length=16)
    address = models.CharField(max_length=42, help_text="EIP-55 checksummed")
    next_nonce = models.PositiveBigIntegerField(default=0)

    objects: models.Manager[NonceCursor] = models.Manager()

    class Meta:
        app_label = "ledger"
        constraints = [
            models.UniqueConstraint(
                fields=["chain", "address"], name="one_nonce_cursor_per_address"
            )
        ]

    def __str__(self) -> str:
        return f"{self.chain}:{self.address} next nonce {self.next_nonce}"


class ChainTransaction(models.Model):
    """One signed outgoing transaction: a withdrawal, a sweep from a deposit address to the hot
    wallet, or a gas top-up of a deposit address. The signed bytes and their hash are stored
    (and committed) before the first broadcast, so a crash never leads to a second signature:
    the same bytes are broadcast again. A replacement of a stuck one is a new row with the same
    nonce and higher fees; the one the chain mines wins, the other ends `replaced`."""

    class Kind(models.TextChoices):
        WITHDRAWAL = "withdrawal"
        SWEEP = "sweep"
        GAS_TOPUP = "gas_topup"

    class Status(models.TextChoices):
        SIGNED = "signed"  # stored, not yet accepted by the node (or not known to be)
        BROADCAST = "broadcast"  # the node has it; waiting to be mined
        MINED = "mined"  # in a block; waiting for EVM_CONFIRMATIONS
        CONFIRMED = "confirmed"  # final and succeeded: posted on the ledger
        FAILED = "failed"  # final and reverted, or its nonce went to another transaction
        REPLACED = "replaced"  # another transaction of the same nonce superseded or beat it

    LIVE = (Status.SIGNED, Status.BROADCAST)

    chain = models.CharField(max_length=16)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    withdrawal = models.ForeignKey(
        "ledger.Withdrawal",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="chain_transactions",
    )
    # The deposit address a sweep leaves from, or a top-up goes to (its BIP-32 index).
    deposit_index = models.PositiveIntegerField(null=True, blank=True)
    from_address = models.CharField(max_length=42)
    nonce = models.PositiveBigIntegerField()
    to_address = models.CharField(
        max_length=42, help_text="Who receives the coins (for a token: not the contract)"
    )
    asset = models.ForeignKey("ledger.Asset", on_delete=models.PROTECT, related_name="+")
    amount = amount_field()
    max_fee_per_gas = models.DecimalField(max_digits=78, decimal_places=0, help_text="wei")
    max_priority_fee_per_gas = models.DecimalField(max_digits=78, decimal_places=0, help_text="wei")
    gas_limit = models.PositiveBigIntegerField()
    raw_tx = models.TextField(help_text="The signed transaction (hex): public once broadcast")
    tx_hash = models.CharField(max_length=66)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SIGNED)
    replaced_by = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="replaces"
    )
    succeeded = models.BooleanField(null=True, help_text="The receipt's status, once mined")
    block_number = models.PositiveBigIntegerField(null=True, blank=True)
    block_hash = models.CharField(max_length=66, blank=True)
    gas_used = models.PositiveBigIntegerField(null=True, blank=True)
    effective_gas_price = models.DecimalField(
        max_digits=78, decimal_places=0, null=True, blank=True, help_text="wei"
    )
    error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    broadcast_at = models.DateTimeField(null=True, blank=True)
    mined_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects: models.Manager[ChainTransaction] = models.Manager()

    class Meta:
        app_label = "ledger"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "tx_hash"], name="chain_tx_hash_unique"),
            # One transaction per nonce at a time; replaced ones step aside.
            models.UniqueConstraint(
                fields=["chain", "from_address", "nonce"],
                condition=~models.Q(status="replaced"),
                name="one_live_tx_per_nonce",
            ),
        ]
        indexes = [models.Index(fields=["chain", "status"], name="chain_tx_status")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.asset_id} nonce {self.nonce} ({self.status})"

    @property
    def fee_paid_wei(self) -> int:
        """The gas this transaction cost once mined (0 before)."""
        if self.gas_used is None or self.effective_gas_price is None:
            return 0
        return int(self.gas_used) * int(self.effective_gas_price)


class ChainBlock(models.Model):
    """A block of the chain as the deposit watcher last saw it canonical: the watcher's own view
    of the recent chain. A stored hash that the node no longer has at that height is a reorg."""

    chain = models.CharField(max_length=16)
    number = models.BigIntegerField()
    hash = models.CharField(max_length=66)
    parent_hash = models.CharField(max_length=66)
    seen_at = models.DateTimeField(auto_now_add=True)

    objects: models.Manager[ChainBlock] = models.Manager()

    class Meta:
        app_label = "ledger"
        constraints = [
            models.UniqueConstraint(fields=["chain", "number"], name="one_chain_block_per_height"),
        ]

    def __str__(self) -> str:
        return f"{self.chain}#{self.number} {self.hash[:10]}"


class ChainDeposit(models.Model):
    """A transfer to a user's deposit address that the watcher found in a block: native ETH
    (log_index -1) or a token's Transfer log. Seen, then credited once after the confirmations;
    dropped when its block left the canonical chain before that."""

    class Status(models.TextChoices):
        SEEN = "seen"
        CREDITED = "credited"
        DROPPED = "dropped"  # its block was reorged out before it was credited
        IGNORED = "ignored"  # nothing to credit at the asset's precision (see `note`)

    NATIVE_LOG_INDEX = -1

    chain = models.CharField(max_length=16)
    tx_hash = models.CharField(max_length=66)
    log_index = models.IntegerField(help_text="The Transfer log's index; -1 for native ETH")
    asset = models.ForeignKey("ledger.Asset", on_delete=models.PROTECT, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="chain_deposits"
    )
    address = models.CharField(max_length=42, help_text="The deposit address it was sent to")
    sender = models.CharField(max_length=42, blank=True)
    units = models.DecimalField(
        max_digits=78, decimal_places=0, help_text="The amount in the chain's base units"
    )
    amount = amount_field(help_text="What is credited: the units at the asset's precision")
    block_number = models.BigIntegerField()
    block_hash = models.CharField(max_length=66)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SEEN)
    note = models.CharField(max_length=200, blank=True)
    deposit = models.OneToOneField(
        "ledger.Deposit",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="chain_deposit",
        help_text="The ledger deposit it became once credited",
    )
    seen_at = models.DateTimeField(auto_now_add=True)
    credited_at = models.DateTimeField(null=True, blank=True)

    objects: models.Manager[ChainDeposit] = models.Manager()

    class Meta:
        app_label = "ledger"
        ordering = ["-block_number", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["chain", "tx_hash", "log_index"], name="one_chain_deposit_per_transfer"
            ),
            # Credited means a ledger deposit, and only credited has one.
            models.CheckConstraint(
                condition=Q(status="credited", deposit__isnull=False)
                | (~Q(status="credited") & Q(deposit__isnull=True)),
                name="chain_deposit_credited_has_deposit",
            ),
            models.CheckConstraint(
                condition=Q(units__gte=0), name="chain_deposit_units_not_negative"
            ),
        ]
        indexes = [models.Index(fields=["chain", "status", "block_number"])]

    def __str__(self) -> str:
        return f"{self.chain}:{self.tx_hash[:12]}…:{self.log_index} ({self.status})"


class ReserveReconciliation(models.Model):
    """One comparison, for one asset, of what the platform holds on the chain at a block (the
    hot wallet and every deposit address) with what it owes its users on the ledger.

    liabilities = users + holds (posted balances of the user and escrow-kind accounts: what
    users own, including amounts held for trades, loans and withdrawals not yet sent);
    difference = onchain_total + in_transit - liabilities (below zero: a shortfall)."""

    class Status(models.TextChoices):
        COVERED = "covered"  # the chain holds at least what is owed
        SHORTFALL = "shortfall"  # it holds less: moderators are alerted
        FAILED = "failed"  # the node could not be read; nothing compared

    asset = models.ForeignKey("ledger.Asset", on_delete=models.PROTECT, related_name="+")
    chain = models.CharField(max_length=16)
    status = models.CharField(max_length=10, choices=Status.choices)
    block_number = models.BigIntegerField(null=True, blank=True)
    block_hash = models.CharField(max_length=66, blank=True)
    hot_wallet = amount_field(default=Decimal(0), help_text="On chain at the hot wallet")
    deposit_addresses = amount_field(
        default=Decimal(0), help_text="On chain at all deposit addresses"
    )
    address_count = models.PositiveIntegerField(default=0)
    onchain_total = amount_field(default=Decimal(0))
    users = amount_field(default=Decimal(0), help_text="Users' balances, holds included")
    holds = amount_field(default=Decimal(0), help_text="Escrow-kind accounts (trades, loans)")
    liabilities = amount_field(default=Decimal(0), help_text="users + holds: owed to users")
    in_transit = amount_field(
        default=Decimal(0),
        help_text="Withdrawals mined by the block but not yet posted on the ledger",
    )
    fees = amount_field(default=Decimal(0), help_text="The platform's fee income (its own)")
    custody_book = amount_field(
        default=Decimal(0), help_text="What the ledger's custody accounts say the chain holds"
    )
    difference = amount_field(
        default=Decimal(0), help_text="onchain_total + in_transit - liabilities"
    )
    error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects: models.Manager[ReserveReconciliation] = models.Manager()

    class Meta:
        app_label = "ledger"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["asset", "-created_at"], name="reconciliation_latest")]

    def __str__(self) -> str:
        return f"{self.asset_id} reconciliation #{self.pk} ({self.status})"

    @property
    def shortfall(self) -> Decimal:
        return max(-self.difference, Decimal(0))

    @property
    def surplus(self) -> Decimal:
        return max(self.difference, Decimal(0))


class ReserveProof(models.Model):
    """A published, signed proof of reserves for one asset: the on-chain addresses with their
    balances at a block, and the root and total of the Merkle sum tree of what is owed to each
    account at that moment (ledger.sumtree). The signature covers `signed_fields()`."""

    asset = models.ForeignKey("ledger.Asset", on_delete=models.PROTECT, related_name="+")
    chain = models.CharField(max_length=16)
    precision = models.PositiveSmallIntegerField()
    block_number = models.BigIntegerField()
    block_hash = models.CharField(max_length=66)
    # [{"address": EIP-55, "balance": decimal string}], by address: the hot wallet and every
    # deposit address holding anything at the block.
    addresses = models.JSONField()
    onchain_total = amount_field()
    liabilities_root = models.CharField(max_length=64)
    liabilities_total = amount_field()
    leaf_count = models.PositiveIntegerField()
    timestamp = models.CharField(max_length=32, help_text="ISO 8601 UTC, as signed")
    key_id = models.CharField(max_length=32)
    signature = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    objects: models.Manager[ReserveProof] = models.Manager()

    class Meta:
        app_label = "ledger"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.asset_id} proof of reserves #{self.pk} at block {self.block_number}"


class ReserveLeaf(models.Model):
    """One account's leaf of a proof's sum tree: what it was owed, and the nonce that hides it."""

    proof = models.ForeignKey(ReserveProof, on_delete=models.CASCADE, related_name="leaves")
    index = models.PositiveIntegerField()
    account = models.CharField(max_length=64, help_text="The ledger account's code")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    balance = amount_field()
    nonce = models.CharField(max_length=64)
    leaf_hash = models.CharField(max_length=64)

    objects: models.Manager[ReserveLeaf] = models.Manager()

    class Meta:
        app_label = "ledger"
        constraints = [
            models.UniqueConstraint(fields=["proof", "index"], name="one_reserve_leaf_per_index")
        ]
        indexes = [models.Index(fields=["proof", "user"], name="reserve_leaf_user")]

    def __str__(self) -> str:
        return f"leaf {self.index} of proof {self.proof_id}"
