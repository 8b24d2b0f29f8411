from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy, pgettext_lazy

from common.files import get_private_storage
from common.money import amount_field, fiat_field, price_field
from ledger.models import Asset
from marketplace.models import FiatCurrency, Offer, PaymentMethod


class CancelReason(models.TextChoices):
    """Why a buyer cancels a trade (asked when they cancel). The seller_* reasons are the
    seller's fault: they don't count against the buyer's daily cancellation limit."""

    CHANGED_MIND = "changed_mind", gettext_lazy("I changed my mind")
    CANNOT_PAY = "cannot_pay", gettext_lazy("I can't pay for it now")
    SELLER_ASKED = (
        "seller_asked",
        gettext_lazy("The seller asked me to cancel, or to pay outside the platform"),
    )
    SELLER_DETAILS = "seller_details", gettext_lazy("The seller's payment details are wrong")
    SELLER_UNRESPONSIVE = "seller_unresponsive", gettext_lazy("The seller did not respond")
    OTHER = "other", gettext_lazy("Another reason")


SELLER_FAULT_REASONS = frozenset(
    {CancelReason.SELLER_ASKED, CancelReason.SELLER_DETAILS, CancelReason.SELLER_UNRESPONSIVE}
)


class Trade(models.Model):
    """One take of an offer. Its `state` is moved only by escrow.services (the state machine)."""

    class State(models.TextChoices):
        # Lowercase: a label stands inside sentences ("Trade #5 is paid: …").
        FUNDED = "funded", pgettext_lazy("trade state", "funded")
        PAID = "paid", pgettext_lazy("trade state", "paid")
        RELEASING = "releasing", pgettext_lazy("trade state", "releasing")
        COMPLETED = "completed", pgettext_lazy("trade state", "completed")
        CANCELLED = "cancelled", pgettext_lazy("trade state", "cancelled")
        EXPIRED = "expired", pgettext_lazy("trade state", "expired")
        DISPUTED = "disputed", pgettext_lazy("trade state", "disputed")
        REFUNDING = "refunding", pgettext_lazy("trade state", "refunding")
        REFUNDED = "refunded", pgettext_lazy("trade state", "refunded")
        SPLITTING = "splitting", pgettext_lazy("trade state", "splitting")
        SPLIT = "split", pgettext_lazy("trade state", "split")

    offer = models.ForeignKey(Offer, on_delete=models.PROTECT, related_name="trades")
    maker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # No index of their own: Meta's (taker, maker, created_at), (buyer, created_at) and (seller,
    # created_at) lead with them, and each index more is written on every move of every trade.
    taker = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    buyer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="buys", db_index=False
    )
    seller = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="sells", db_index=False
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="trades")
    fiat = models.ForeignKey(FiatCurrency, on_delete=models.PROTECT, related_name="trades")
    payment_method = models.ForeignKey(
        PaymentMethod, on_delete=models.PROTECT, null=True, related_name="+"
    )
    amount = amount_field()
    fiat_amount = fiat_field()
    price = price_field()
    # Fees in the asset: the seller's on top of the hold, the buyer's out of what they receive.
    seller_fee = amount_field(default=Decimal(0))
    buyer_fee = amount_field(default=Decimal(0))
    state = models.CharField(max_length=10, choices=State.choices, default=State.FUNDED)
    payment_window_minutes = models.PositiveSmallIntegerField()
    payment_deadline = models.DateTimeField()
    paid_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # The pending ledger transfer seller -> this trade's escrow account.
    escrow_hold = models.OneToOneField(
        "ledger.Transfer",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="held_trade",
    )
    terms = models.TextField(blank=True)
    # --- issue 20: the cancellation limit (escrow.services.cancellations) ---
    # Why the buyer cancelled, as they picked it; blank for trades not cancelled by the buyer.
    cancel_reason = models.CharField(max_length=24, choices=CancelReason.choices, blank=True)
    # Counts against the buyer's CANCEL_LIMIT_PER_DAY: a buyer's cancel for a reason of their
    # own, or an expiry (the buyer never paid); not a cancel for the seller's fault, unless a
    # moderator counted it after all (the escrow admin).
    cancel_counted = models.BooleanField(default=False)
    # --- end issue 20 ---
    # What the trade counts against both parties' 30-day limits: its value in EUR when it opened
    # (escrow.selectors.trade_value_eur), added to their TradeVolumeDay rows then and taken off
    # again if it is cancelled or expires. Null: opened before the rows were kept (migration
    # 0008 valued those of the window).
    value_eur = models.DecimalField(max_digits=22, decimal_places=4, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "payment_deadline"], name="trade_state_deadline"),
            # A buyer's counted cancellations of the day, read at every cancel and expiry.
            models.Index(
                fields=["buyer", "closed_at"],
                condition=Q(cancel_counted=True),
                name="trade_counted_cancels",
            ),
            # Read at every take (escrow.services.opening, escrow.selectors.stats), so that its
            # cost stays with what it counts, not with the parties' whole history
            # (bench/take_history.py): a buyer's funded trades; a taker's trades against one
            # maker in the last minute; each party's trades of the 30-day limit window (and
            # their trade lists, newest first).
            models.Index(fields=["buyer"], condition=Q(state="funded"), name="trade_buyer_funded"),
            models.Index(fields=["taker", "maker", "created_at"], name="trade_taker_maker_time"),
            models.Index(fields=["buyer", "created_at"], name="trade_buyer_time"),
            models.Index(fields=["seller", "created_at"], name="trade_seller_time"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="trade_amount_positive"),
            models.CheckConstraint(condition=~Q(buyer=F("seller")), name="trade_parties_differ"),
        ]

    def __str__(self) -> str:
        return f"Trade #{self.pk} ({self.state})"

    @property
    def fee(self) -> Decimal:
        return self.seller_fee + self.buyer_fee

    @property
    def hold_amount(self) -> Decimal:
        return self.amount + self.seller_fee

    @property
    def buyer_receives(self) -> Decimal:
        return self.amount - self.buyer_fee

    def role_of(self, user: object) -> str | None:
        user_id = getattr(user, "pk", None)
        if user_id == self.buyer_id:
            return "buyer"
        if user_id == self.seller_id:
            return "seller"
        return None


class TradeVolumeDay(models.Model):
    """A user's trades of one UTC day, in EUR, as they count against the 30-day limits: each
    trade's value_eur is added for both parties when it opens and taken off again when it is
    cancelled or expires (escrow.services.volumes). A take reads at most 31 of these rows a party
    instead of summing the parties' trades, whose number grows with their history
    (bench/take_history.py)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    eur = models.DecimalField(max_digits=22, decimal_places=4, default=Decimal(0))

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "day"], name="one_volume_row_per_user_day")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.day}: {self.eur} EUR"


class TraderCount(models.Model):
    """A trader's finished trades with one counterparty, both sides together, as the public
    stats count them (escrow.selectors.stats.trader_stats_for_users): `done` the completed ones,
    `finished` those that count against the completion rate (stats.FINISHED, per side); and
    that counterparty's ratings of them (stats.feedback_summary). Kept by PostgreSQL, not by the
    moves: statement-level triggers on escrow_trade and escrow_feedback write what each
    statement changed as TraderCountChange rows, and escrow.services.counts folds those in here
    (beat). A trader's stats read their counterparties' rows, however many trades they made.
    Per counterparty, so that the trades with a linked account (accounts.selectors) are still
    left out when the link is found later."""

    # No index of their own: the unique (user, other) leads with the user.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, related_name="+", db_index=False
    )
    other = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, related_name="+", db_index=False
    )
    done = models.IntegerField(default=0)
    finished = models.IntegerField(default=0)
    # The other's ratings of this trader (Feedback: the counterparty is its author).
    positive = models.IntegerField(default=0)
    negative = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "other"], name="one_count_row_per_pair")
        ]

    def __str__(self) -> str:
        return (
            f"{self.user_id} with {self.other_id}: {self.done} done of {self.finished}, "
            f"rated {self.positive}+ {self.negative}-"
        )


class TraderCountChange(models.Model):
    """What one statement on escrow_trade or escrow_feedback changed in TraderCount, not folded
    in yet (the triggers only insert these, so a move never waits on another's count row: see
    escrow/migrations/0010_trader_counts.py). Readers add them to the totals."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
    )
    other = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    done = models.IntegerField(default=0)
    finished = models.IntegerField(default=0)
    positive = models.IntegerField(default=0)
    negative = models.IntegerField(default=0)

    def __str__(self) -> str:
        return (
            f"{self.user_id} with {self.other_id}: {self.done:+} done, {self.finished:+} "
            f"finished, {self.positive:+}/{self.negative:+} ratings"
        )


class TradeMessage(models.Model):
    """The trade room's chat: the parties, moderators (marked as such) and system notes.
    Attachments (payment proof) are stored privately and served only through a permission check."""

    trade = models.ForeignKey(Trade, on_delete=models.CASCADE, related_name="messages")
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    is_moderator = models.BooleanField(default=False)
    # The offer's auto-reply, posted for its maker when the trade opened (issue 20).
    is_auto_reply = models.BooleanField(default=False)
    text = models.TextField(max_length=2000, blank=True)
    attachment = models.FileField(
        upload_to="trade-attachments/%Y/%m/", storage=get_private_storage, blank=True
    )
    attachment_name = models.CharField(max_length=200, blank=True)
    attachment_type = models.CharField(
        max_length=64, blank=True, help_text=gettext_lazy("Sniffed from the content")
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"message {self.pk} on trade {self.trade_id}"


class Feedback(models.Model):
    """One rating per party per completed or resolved trade, about the other party, who may
    reply once."""

    class Rating(models.TextChoices):
        POSITIVE = "positive"
        NEGATIVE = "negative"

    trade = models.ForeignKey(Trade, on_delete=models.CASCADE, related_name="feedback")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="feedback_given"
    )
    target = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="feedback_received"
    )
    rating = models.CharField(max_length=8, choices=Rating.choices)
    comment = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    reply = models.CharField(max_length=500, blank=True)
    replied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["trade", "author"], name="one_feedback_per_party")
        ]

    def __str__(self) -> str:
        return f"{self.rating} from {self.author_id} on trade {self.trade_id}"


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
    # Whether the move's news is written (its in-app notifications, email and webhook rows: the
    # transition listeners' work, done by the worker in batches). The event is that work's
    # promise: a move's row commits with False, and a sweeper writes whatever a lost broker
    # message never did.
    announced = models.BooleanField(default=False)

    class Meta:
        ordering = ["created_at", "id"]
        permissions = [("decide_trade", "Can decide disputed trades as a moderator")]
        indexes = [
            # The sweeper's look-up: the few events whose news is still to be written.
            models.Index(
                fields=["created_at"],
                condition=Q(announced=False),
                name="escrow_event_unannounced",
            )
        ]

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
        PENDING = "pending", pgettext_lazy("settlement status", "pending")
        DONE = "done", pgettext_lazy("settlement status", "done")
        # SETTLEMENT_MAX_ATTEMPTS attempts failed: a moderator looks at it (escrow admin).
        FAILED = "failed", pgettext_lazy("settlement status", "failed")

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


# --- the seller's payment account, copied at opening (issue 15) ------------------------------


class TradePaymentAccount(models.Model):
    """The account the buyer pays into, copied from the seller's saved account when the trade
    opened (escrow.services.opening): written once, never updated, so the seller editing or
    deleting their account never changes an open trade. Who sees it: escrow.selectors.payment."""

    trade = models.OneToOneField(
        Trade, on_delete=models.CASCADE, primary_key=True, related_name="payment_account"
    )
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # The saved account it was copied from, for the record only (it may be edited or gone).
    source_account_id = models.PositiveBigIntegerField(null=True, blank=True)
    method_code = models.CharField(max_length=32)
    method_name = models.CharField(max_length=64)
    label = models.CharField(max_length=64, blank=True)
    # The holder's name matched the owner's verified (KYC) name when the trade opened.
    holder_verified = models.BooleanField(default=False)
    # [{"key", "label", "value" (what a copy button copies), "display"}], in the method's order.
    fields = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.method_name} account on trade #{self.trade_id}"
