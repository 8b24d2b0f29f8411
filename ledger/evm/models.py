"""The chain's tables (app label `ledger`; ledger/models.py imports them)."""

from __future__ import annotations

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
