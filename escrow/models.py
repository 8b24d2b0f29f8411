from __future__ import annotations

from django.conf import settings
from django.db import models

from marketplace.models import Trade, amount_field


class EscrowEvent(models.Model):
    """The audit trail of a trade: one row per transition (who, when, from, to, why)."""

    trade = models.ForeignKey(Trade, on_delete=models.CASCADE, related_name="events")
    old_state = models.CharField(max_length=10, blank=True)
    new_state = models.CharField(max_length=10)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    actor_role = models.CharField(max_length=10)
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        permissions = [("decide_trade", "Can decide disputed trades as a moderator")]

    def __str__(self) -> str:
        return f"{self.trade_id}: {self.old_state or '-'} -> {self.new_state}"


class Settlement(models.Model):
    """The outbox row of a release, refund or split: queued in the transition's transaction, so a
    lost broker message is found again by the sweeper; done once, under its row lock. One whose
    posting keeps failing ends `failed`, out of every queue, until a moderator retries it."""

    class Kind(models.TextChoices):
        RELEASE = "release"
        REFUND = "refund"
        SPLIT = "split"

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"
        # SETTLEMENT_MAX_ATTEMPTS attempts failed: a moderator looks at it (escrow admin).
        FAILED = "failed"

    # One settlement per trade: a second release can't even be written.
    trade = models.OneToOneField(Trade, on_delete=models.PROTECT, related_name="settlement")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    # For a split: the part of the trade amount that goes to the buyer.
    buyer_amount = amount_field(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # What the last failed attempt raised (kept after a success: the moderators' history).
    last_error = models.CharField(max_length=500, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["queued_at"],
                condition=models.Q(status="pending"),
                name="settlement_pending",
            ),
            # The admin index counts these on every load: a few rows out of one per trade.
            models.Index(
                fields=["last_attempt_at"],
                condition=models.Q(status="failed"),
                name="settlement_failed",
            ),
        ]

    def __str__(self) -> str:
        return f"Settlement {self.kind} of trade #{self.trade_id} ({self.status})"
