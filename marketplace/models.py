from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q

from common.files import get_private_storage
from common.money import AMOUNT_DECIMAL_PLACES, AMOUNT_MAX_DIGITS


def amount_field(**kwargs: object) -> models.DecimalField:
    """Asset amounts: exact decimals wide enough for 18 places (ETH's wei)."""
    return models.DecimalField(
        max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES, **kwargs
    )


def fiat_field(**kwargs: object) -> models.DecimalField:
    return models.DecimalField(max_digits=20, decimal_places=2, **kwargs)


def price_field(**kwargs: object) -> models.DecimalField:
    return models.DecimalField(max_digits=24, decimal_places=8, **kwargs)


class Asset(models.Model):
    code = models.CharField(max_length=12, unique=True)
    name = models.CharField(max_length=64)
    # Decimal places the asset is traded and settled in (BTC 8, ETH 18, USDT 6).
    precision = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(0), MaxValueValidator(AMOUNT_DECIMAL_PLACES)]
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(precision__lte=AMOUNT_DECIMAL_PLACES), name="asset_precision_fits"
            )
        ]

    def __str__(self) -> str:
        return self.code


class FiatCurrency(models.Model):
    code = models.CharField(max_length=3, unique=True)
    name = models.CharField(max_length=64)
    precision = models.PositiveSmallIntegerField(default=2)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]
        verbose_name_plural = "fiat currencies"

    def __str__(self) -> str:
        return self.code


class PaymentMethod(models.Model):
    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=64)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class PriceIndex(models.Model):
    """The reference price floating offers follow: fiat per one unit of the asset."""

    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="prices")
    fiat = models.ForeignKey(FiatCurrency, on_delete=models.PROTECT, related_name="prices")
    price = price_field()
    source = models.CharField(max_length=64, default="manual")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "price index"
        constraints = [
            models.UniqueConstraint(fields=["asset", "fiat"], name="one_price_per_pair"),
            models.CheckConstraint(condition=Q(price__gt=0), name="price_index_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.asset}/{self.fiat} {self.price}"


class Offer(models.Model):
    class Side(models.TextChoices):
        SELL = "sell", "Maker sells the asset"
        BUY = "buy", "Maker buys the asset"

    class PriceType(models.TextChoices):
        FIXED = "fixed"
        FLOATING = "floating"

    maker = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="offers"
    )
    side = models.CharField(max_length=4, choices=Side.choices)
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="offers")
    fiat = models.ForeignKey(FiatCurrency, on_delete=models.PROTECT, related_name="offers")
    price_type = models.CharField(max_length=8, choices=PriceType.choices)
    price = price_field(null=True, blank=True)
    margin_percent = models.DecimalField(max_digits=6, decimal_places=2, null=True, blank=True)
    # What the book sorts by: the fixed price, or the pair's index times (1 + margin) rounded to
    # the fiat; kept by the services (offer_create, offer_update, price_index_set), so the book
    # reads a column through an index instead of computing every offer's price per request.
    effective_price = price_field(null=True, blank=True)
    min_fiat = fiat_field()
    max_fiat = fiat_field()
    amount = amount_field()
    # What is left to take; lowered under the offer's row lock when a trade is opened.
    available = amount_field()
    payment_methods = models.ManyToManyField(PaymentMethod, related_name="offers")
    payment_window_minutes = models.PositiveSmallIntegerField(default=30)
    terms = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    is_deleted = models.BooleanField(default=False)
    # Who may take it (checked by offer_take; the order book tells a taker which one they miss).
    min_taker_tier = models.PositiveSmallIntegerField(default=0)
    min_taker_trades = models.PositiveIntegerField(default=0)
    min_account_age_days = models.PositiveIntegerField(default=0)
    trusted_only = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The book: a pair and side walked in price order, stopping after a page.
            models.Index(
                fields=["asset", "fiat", "side", "effective_price", "id"],
                name="offer_book_by_price",
                condition=Q(is_deleted=False, is_active=True),
            )
        ]
        constraints = [
            models.CheckConstraint(condition=Q(available__gte=0), name="offer_available_nonneg"),
            models.CheckConstraint(
                condition=Q(available__lte=F("amount")), name="offer_available_lte_amount"
            ),
            models.CheckConstraint(condition=Q(min_fiat__gt=0), name="offer_min_fiat_positive"),
            models.CheckConstraint(
                condition=Q(max_fiat__gte=F("min_fiat")), name="offer_limits_ordered"
            ),
            models.CheckConstraint(
                condition=Q(payment_window_minutes__gte=5, payment_window_minutes__lte=180),
                name="offer_payment_window_range",
            ),
            models.CheckConstraint(
                condition=(
                    Q(price_type="fixed", price__gt=0)
                    | Q(price_type="floating", margin_percent__isnull=False)
                ),
                name="offer_price_given",
            ),
            models.CheckConstraint(
                condition=Q(min_taker_tier__lte=2), name="offer_min_taker_tier_range"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.side} {self.asset}/{self.fiat}"


class Trade(models.Model):
    """One take of an offer. Its `state` is moved only by escrow.services (the state machine)."""

    class State(models.TextChoices):
        FUNDED = "funded"
        PAID = "paid"
        RELEASING = "releasing"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        EXPIRED = "expired"
        DISPUTED = "disputed"
        REFUNDING = "refunding"
        REFUNDED = "refunded"
        SPLITTING = "splitting"
        SPLIT = "split"

    offer = models.ForeignKey(Offer, on_delete=models.PROTECT, related_name="trades")
    maker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    taker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    buyer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="buys"
    )
    seller = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="sells"
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
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "payment_deadline"], name="trade_state_deadline"),
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


class TradeMessage(models.Model):
    """The trade room's chat: the parties, moderators (marked as such) and system notes.
    Attachments (payment proof) are stored privately and served only through a permission check."""

    trade = models.ForeignKey(Trade, on_delete=models.CASCADE, related_name="messages")
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    is_moderator = models.BooleanField(default=False)
    text = models.TextField(max_length=2000, blank=True)
    attachment = models.FileField(
        upload_to="trade-attachments/%Y/%m/", storage=get_private_storage, blank=True
    )
    attachment_name = models.CharField(max_length=200, blank=True)
    attachment_type = models.CharField(
        max_length=64, blank=True, help_text="Sniffed from the content"
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
