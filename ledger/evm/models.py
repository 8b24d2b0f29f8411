"""The chain's tables (app label `ledger`; ledger/models.py imports them)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


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
