"""Loans between users: a borrower's request, the lenders' commitments, the loan it becomes, its
installments and the audit trail of every move. No workflow here: lending.services moves them."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy, pgettext_lazy

from common.money import amount_field
from ledger.models import Asset, Transfer


class LoanRequest(models.Model):
    """What a borrower asks for; its collateral is held from the request on."""

    class State(models.TextChoices):
        # collecting commitments until funding_deadline
        OPEN = "open", pgettext_lazy("loan request state", "open")
        # funded: a Loan with the same id exists
        ACTIVE = "active", pgettext_lazy("loan request state", "active")
        # the borrower withdrew it before activation
        CANCELLED = "cancelled", pgettext_lazy("loan request state", "cancelled")
        # the deadline passed without enough funding
        EXPIRED = "expired", pgettext_lazy("loan request state", "expired")

    class Plan(models.TextChoices):
        AMORTIZED = "amortized", gettext_lazy("Monthly equal installments")
        BULLET = "bullet", gettext_lazy("Principal and interest at the end")

    borrower = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="loan_requests"
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = amount_field()
    # Percent per year, e.g. 5 = 5 %.
    annual_rate = models.DecimalField(max_digits=7, decimal_places=4)
    term_months = models.PositiveSmallIntegerField()
    plan = models.CharField(max_length=10, choices=Plan.choices, default=Plan.AMORTIZED)
    collateral_asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    collateral_amount = amount_field()
    funding_deadline = models.DateTimeField()
    allow_partial = models.BooleanField(default=False)
    # With allow_partial: the least funding with which the request activates at its deadline.
    min_fill = amount_field(null=True, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    funded = amount_field(default=Decimal(0))
    # Set when the request was made by taking a lender's offer (and activated at once).
    offer = models.ForeignKey(
        "LoanOffer", on_delete=models.PROTECT, null=True, blank=True, related_name="requests"
    )
    collateral_hold = models.OneToOneField(
        Transfer, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The deadline sweeper reads only open requests.
            models.Index(
                fields=["funding_deadline"], condition=Q(state="open"), name="loanrequest_open"
            )
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="loanrequest_amount_positive"),
            models.CheckConstraint(
                condition=Q(annual_rate__gt=0, annual_rate__lte=100),
                name="loanrequest_rate_range",
            ),
            models.CheckConstraint(
                condition=Q(term_months__gte=1, term_months__lte=24),
                name="loanrequest_term_range",
            ),
            models.CheckConstraint(
                condition=Q(collateral_amount__gt=0), name="loanrequest_collateral_positive"
            ),
            models.CheckConstraint(
                condition=~Q(asset=F("collateral_asset")), name="loanrequest_assets_differ"
            ),
            # Overfunding is impossible in the database too, whatever a service does.
            models.CheckConstraint(
                condition=Q(funded__gte=0, funded__lte=F("amount")),
                name="loanrequest_funded_within_amount",
            ),
            models.CheckConstraint(
                condition=Q(min_fill__isnull=True)
                | Q(allow_partial=True, min_fill__gt=0, min_fill__lte=F("amount")),
                name="loanrequest_min_fill_range",
            ),
        ]

    def __str__(self) -> str:
        return f"Loan request #{self.pk} {self.amount} {self.asset_id} ({self.state})"

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.funded


class LoanOffer(models.Model):
    """What a lender offers: `available` of `asset` held from their wallet from posting on
    (`hold`, into `loan:offer:{id}`), so a take never fails for the lender's lack of funds.
    Each take voids the hold and holds what is left again; the taken part goes through the
    normal funding path of a request that activates at once."""

    class State(models.TextChoices):
        OPEN = "open", pgettext_lazy("loan offer state", "open")  # takeable while available > 0
        # every unit lent: nothing held any more
        TAKEN = "taken", pgettext_lazy("loan offer state", "taken")
        # the lender withdrew it: what was left went back
        CANCELLED = "cancelled", pgettext_lazy("loan offer state", "cancelled")

    lender = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="loan_offers"
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = amount_field()  # as posted
    available = amount_field()  # what is left to take (and held)
    annual_rate = models.DecimalField(max_digits=7, decimal_places=4)
    term_min = models.PositiveSmallIntegerField()
    term_max = models.PositiveSmallIntegerField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    # The current hold of `available` (None once nothing is left); `hold_seq` numbers the
    # holds for their idempotency keys (`loan:offer:{id}:hold:{seq}`).
    hold = models.OneToOneField(
        Transfer, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    hold_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="loanoffer_amount_positive"),
            models.CheckConstraint(
                condition=Q(available__gte=0, available__lte=F("amount")),
                name="loanoffer_available_within_amount",
            ),
            models.CheckConstraint(
                condition=Q(annual_rate__gt=0, annual_rate__lte=100), name="loanoffer_rate_range"
            ),
            models.CheckConstraint(
                condition=Q(term_min__gte=1, term_max__lte=24, term_min__lte=F("term_max")),
                name="loanoffer_term_range",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"Loan offer #{self.pk} {self.available}/{self.amount} {self.asset_id} ({self.state})"
        )


class LoanOfferCollateral(models.Model):
    """A collateral asset an offer accepts and the highest initial LTV it takes with it."""

    offer = models.ForeignKey(LoanOffer, on_delete=models.CASCADE, related_name="collaterals")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    max_ltv = models.DecimalField(max_digits=5, decimal_places=4)  # e.g. 0.5000 = 50 %

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["offer", "asset"], name="one_ltv_per_offer_asset"),
            models.CheckConstraint(
                condition=Q(max_ltv__gt=0, max_ltv__lte=1), name="loanoffercollateral_ltv_range"
            ),
        ]

    def __str__(self) -> str:
        return f"offer #{self.offer_id}: {self.asset_id} up to LTV {self.max_ltv}"


class LoanCommitment(models.Model):
    """One lender's part of a request, held from their wallet until activation or the end."""

    request = models.ForeignKey(LoanRequest, on_delete=models.PROTECT, related_name="commitments")
    lender = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="loan_commitments"
    )
    amount = amount_field()
    hold = models.OneToOneField(
        Transfer, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # A lender who adds to their part gets the whole held again: the hold's generation.
    hold_seq = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="loancommitment_positive"),
            # One commitment per lender and request: their share is one number (funding again
            # adds to it).
            models.UniqueConstraint(fields=["request", "lender"], name="one_commitment_per_lender"),
        ]

    def __str__(self) -> str:
        return f"{self.lender_id} commits {self.amount} to #{self.request_id}"


class Loan(models.Model):
    """An activated request; its id is the request's id (and every transfer's reference)."""

    class State(models.TextChoices):
        ACTIVE = "active", pgettext_lazy("loan state", "active")
        # an installment could not be collected; grace runs from late_since
        LATE = "late", pgettext_lazy("loan state", "late")
        REPAID = "repaid", pgettext_lazy("loan state", "repaid")
        # grace ran out; liquidation follows
        DEFAULTED = "defaulted", pgettext_lazy("loan state", "defaulted")
        LIQUIDATED = "liquidated", pgettext_lazy("loan state", "liquidated")

    request = models.OneToOneField(
        LoanRequest, on_delete=models.PROTECT, primary_key=True, related_name="loan"
    )
    borrower = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="loans"
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    collateral_asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    principal = amount_field()
    # What sits in the loan's collateral account now (the request's amount plus top-ups).
    collateral_amount = amount_field()
    annual_rate = models.DecimalField(max_digits=7, decimal_places=4)
    term_months = models.PositiveSmallIntegerField()
    plan = models.CharField(max_length=10, choices=LoanRequest.Plan.choices)
    # The platform's share of every interest payment (LENDING_INTEREST_FEE when it activated),
    # taken from the lenders' interest, never added to what the borrower pays.
    interest_fee = models.DecimalField(max_digits=5, decimal_places=4, default=Decimal(0))
    # Everything the platform's fee account has received from this loan, in the loan's asset
    # (and, from a liquidation, in the collateral's: fees_collateral).
    fees = amount_field(default=Decimal(0))
    fees_collateral = amount_field(default=Decimal(0))
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    activated_at = models.DateTimeField()
    late_since = models.DateTimeField(null=True, blank=True)
    # Set when the LTV crosses LENDING_MARGIN_CALL_LTV (the borrower is told once), cleared when
    # it falls back below.
    margin_called = models.BooleanField(default=False)
    # What the collateral did not cover in a liquidation, in the loan's asset.
    shortfall = amount_field(default=Decimal(0))
    # The last liquidation refused on a stale price (for moderators), if any.
    liquidation_blocked_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-request_id"]
        indexes = [
            models.Index(
                fields=["state"], condition=Q(state__in=["active", "late"]), name="loan_open"
            )
        ]
        constraints = [
            models.CheckConstraint(condition=Q(principal__gt=0), name="loan_principal_positive"),
            models.CheckConstraint(
                condition=Q(collateral_amount__gte=0), name="loan_collateral_nonneg"
            ),
            models.CheckConstraint(condition=Q(shortfall__gte=0), name="loan_shortfall_nonneg"),
            models.CheckConstraint(
                condition=Q(interest_fee__gte=0, interest_fee__lt=1), name="loan_interest_fee_range"
            ),
            models.CheckConstraint(
                condition=Q(late_since__isnull=True) | Q(state__in=["late", "defaulted"]),
                name="loan_late_since_only_when_late",
            ),
        ]

    def __str__(self) -> str:
        return f"Loan #{self.pk} {self.principal} {self.asset_id} ({self.state})"


class Installment(models.Model):
    class Status(models.TextChoices):
        DUE = "due", gettext_lazy("Due")
        PAID = "paid", gettext_lazy("Paid")
        # the wallet could not cover it when due; still collected once it can
        MISSED = "missed", gettext_lazy("Missed")
        # settled otherwise: an early repayment or a liquidation
        CLOSED = "closed", gettext_lazy("Closed")

    loan = models.ForeignKey(Loan, on_delete=models.PROTECT, related_name="installments")
    n = models.PositiveSmallIntegerField()
    due_at = models.DateTimeField()
    principal = amount_field()
    interest = amount_field()
    status = models.CharField(max_length=6, choices=Status.choices, default=Status.DUE)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["loan_id", "n"]
        indexes = [
            models.Index(
                fields=["due_at"], condition=Q(status__in=["due", "missed"]), name="installment_due"
            )
        ]
        constraints = [
            models.UniqueConstraint(fields=["loan", "n"], name="one_installment_per_number"),
            models.CheckConstraint(
                condition=Q(principal__gte=0, interest__gte=0), name="installment_nonneg"
            ),
            models.CheckConstraint(
                condition=Q(principal__gt=0) | Q(interest__gt=0), name="installment_positive"
            ),
            models.CheckConstraint(
                condition=Q(status="paid", paid_at__isnull=False) | ~Q(status="paid"),
                name="installment_paid_at",
            ),
        ]

    def __str__(self) -> str:
        return f"Loan #{self.loan_id} installment {self.n} ({self.status})"

    @property
    def total(self) -> Decimal:
        return self.principal + self.interest


class LoanEvent(models.Model):
    """The audit trail: one row per move of a request or its loan, and per margin call or
    refused liquidation (old and new state equal then)."""

    request = models.ForeignKey(LoanRequest, on_delete=models.CASCADE, related_name="events")
    subject = models.CharField(max_length=8)  # "request" or "loan"
    old_state = models.CharField(max_length=10, blank=True)
    new_state = models.CharField(max_length=10)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    actor_role = models.CharField(max_length=10)
    reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"#{self.request_id} {self.subject}: {self.old_state or '-'} -> {self.new_state}"


class LendingControl(models.Model):
    """Lending's switches for moderators: one row (pk 1). While liquidations are paused (a
    broken price feed) no loan is liquidated; the LTV check and the default sweep record why."""

    liquidations_paused = models.BooleanField(default=False)
    reason = models.CharField(max_length=300, blank=True)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="lendingcontrol_singleton")]

    def __str__(self) -> str:
        return "liquidations paused" if self.liquidations_paused else "liquidations running"


class LendingControlChange(models.Model):
    """The audit trail of the switches: who paused or resumed liquidations, when and why."""

    liquidations_paused = models.BooleanField()
    reason = models.CharField(max_length=300, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        verb = "paused" if self.liquidations_paused else "resumed"
        return f"liquidations {verb} by {self.actor_id}"


class LoanDispute(models.Model):
    """A party's complaint about a loan, judged by a moderator as trade disputes are: the
    parties write statements, a moderator (never a party) takes it and decides; a decision may
    order a compensation between the parties, posted on the ledger."""

    class Category(models.TextChoices):
        LIQUIDATION = "liquidation", gettext_lazy("A liquidation or the price it used")
        INSTALLMENT = "installment", gettext_lazy("An installment collected or paid wrongly")
        COLLATERAL = "collateral", gettext_lazy("Collateral not returned or a top-up missing")
        CONDUCT = "conduct", gettext_lazy("The other party's conduct")
        OTHER = "other", gettext_lazy("Something else")

    class Status(models.TextChoices):
        OPEN = "open", pgettext_lazy("loan dispute status", "open")
        DECIDED = "decided", pgettext_lazy("loan dispute status", "decided")

    class Outcome(models.TextChoices):
        REJECTED = "rejected", gettext_lazy("Rejected: nothing changes")
        COMPENSATE = "compensate", gettext_lazy("Upheld: one party compensates the other")

    loan = models.ForeignKey(Loan, on_delete=models.PROTECT, related_name="disputes")
    opened_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    opener_role = models.CharField(max_length=10)  # borrower or lender
    category = models.CharField(max_length=12, choices=Category.choices)
    text = models.TextField(max_length=4000)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    outcome = models.CharField(max_length=10, choices=Outcome.choices, blank=True)
    decision_reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    # A compensation ordered by the decision: `payer` pays `payee` this amount of this asset.
    compensation_asset = models.ForeignKey(
        Asset, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    compensation_amount = amount_field(null=True, blank=True)
    payer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    payee = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["loan"], condition=Q(status="open"), name="one_open_dispute_per_loan"
            ),
            models.CheckConstraint(
                condition=Q(status="open", outcome="") | Q(status="decided") & ~Q(outcome=""),
                name="loan_dispute_outcome_when_decided",
            ),
            models.CheckConstraint(
                condition=Q(outcome="compensate", compensation_amount__gt=0)
                | ~Q(outcome="compensate") & Q(compensation_amount__isnull=True),
                name="loan_dispute_compensation_amount",
            ),
        ]

    def __str__(self) -> str:
        return f"Dispute #{self.pk} on loan #{self.loan_id} ({self.status})"


class LoanDisputeStatement(models.Model):
    """What a party (or the moderator) wrote in a loan dispute."""

    dispute = models.ForeignKey(LoanDispute, on_delete=models.CASCADE, related_name="statements")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=10)  # borrower, lender or moderator
    text = models.TextField(max_length=4000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"Statement #{self.pk} in loan dispute #{self.dispute_id}"
