from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy

from common.files import get_private_storage
from common.money import amount_field
from escrow.models import Trade


class Dispute(models.Model):
    """A trade's dispute: who opened it and why, the moderator on it, and the final decision."""

    class Category(models.TextChoices):
        PAID_NOT_RELEASED = (
            "paid_not_released",
            gettext_lazy("I paid but the seller does not release"),
        )
        NOT_RECEIVED = "not_received", gettext_lazy("The buyer marked paid but nothing arrived")
        WRONG_AMOUNT = "wrong_amount", gettext_lazy("The wrong amount was paid")
        THIRD_PARTY = "third_party", gettext_lazy("Payment came from someone else")
        COULD_NOT_MARK_PAID = (
            "could_not_mark_paid",
            gettext_lazy("I paid but could not mark the trade paid"),
        )
        OTHER = "other", gettext_lazy("Something else")

    class Status(models.TextChoices):
        OPEN = "open", gettext_lazy("Open")  # waiting for a moderator
        IN_REVIEW = "in_review", gettext_lazy("In review")  # a moderator took it
        # a party was asked for more
        AWAITING_EVIDENCE = "awaiting_evidence", gettext_lazy("Awaiting evidence")
        # a large decision waits for a second moderator
        AWAITING_APPROVAL = "awaiting_approval", gettext_lazy("Awaiting approval")
        DECIDED = "decided", gettext_lazy("Decided")

    class Outcome(models.TextChoices):
        RELEASE = "release", gettext_lazy("Release to the buyer")
        REFUND = "refund", gettext_lazy("Refund the seller")
        SPLIT = "split", gettext_lazy("Split between them")

    trade = models.OneToOneField(Trade, on_delete=models.PROTECT, related_name="dispute")
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    category = models.CharField(max_length=24, choices=Category.choices)
    text = models.TextField(max_length=4000)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="assigned_disputes",
    )
    evidence_requested_from = models.CharField(
        max_length=8, blank=True, help_text=gettext_lazy("buyer, seller or both")
    )
    evidence_note = models.CharField(max_length=500, blank=True)
    evidence_deadline = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, blank=True)
    buyer_amount = amount_field(null=True, blank=True)
    decision_reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    # Four eyes: a decision above DISPUTE_FOUR_EYES_EUR is proposed by one moderator (the fields
    # above hold it, decided_* still empty) and settles only once another approves it.
    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    proposed_at = models.DateTimeField(null=True, blank=True)
    penalize_loser = models.BooleanField(default=False)
    suspend_days = models.PositiveSmallIntegerField(default=0)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["status", "created_at"], name="dispute_queue")]

    def __str__(self) -> str:
        return f"Dispute #{self.pk} on trade #{self.trade_id} ({self.status})"

    @property
    def sla_due_at(self):
        return self.created_at + timedelta(hours=settings.DISPUTE_SLA_HOURS)

    @property
    def is_past_sla(self) -> bool:
        return self.status != self.Status.DECIDED and timezone.now() > self.sla_due_at

    @property
    def age(self) -> timedelta:
        end = self.decided_at or timezone.now()
        return end - self.created_at


class Evidence(models.Model):
    """A party's statement and file for a dispute; stored privately, served through a check."""

    dispute = models.ForeignKey(Dispute, on_delete=models.PROTECT, related_name="evidence")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    statement = models.TextField(max_length=4000, blank=True)
    file = models.FileField(upload_to="evidence/%Y/%m/", storage=get_private_storage, blank=True)
    file_name = models.CharField(max_length=200, blank=True)
    content_type = models.CharField(
        max_length=64, blank=True, help_text=gettext_lazy("Sniffed from the content")
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "evidence"

    def __str__(self) -> str:
        return f"Evidence #{self.pk} by {self.uploaded_by_id} on dispute {self.dispute_id}"


class ModeratorAction(models.Model):
    """The audit log of everything a moderator does: who, what, when, why. Append-only."""

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=32)
    dispute = models.ForeignKey(
        Dispute, on_delete=models.PROTECT, null=True, blank=True, related_name="actions"
    )
    target = models.CharField(
        max_length=200, help_text=gettext_lazy("What it was done to, e.g. trade #12")
    )
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.actor_id} {self.action} {self.target}"
