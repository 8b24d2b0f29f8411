from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy

from common.money import amount_field, fiat_field, price_field
from ledger.models import Asset


class FiatCurrency(models.Model):
    """An ISO 4217 currency (marketplace.currencies loads them all); `precision` is its minor
    units (JPY 0, EUR 2, KWD 3), which every fiat amount of it is held to. Only the active ones
    are traded; moderators switch them on and off in the admin."""

    code = models.CharField(max_length=3, unique=True)
    name = models.CharField(max_length=64)
    precision = models.PositiveSmallIntegerField(default=2)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["code"]
        verbose_name_plural = "fiat currencies"
        constraints = [
            # The fiat columns (common.money.fiat_field) hold 4 decimals.
            models.CheckConstraint(condition=Q(precision__lte=4), name="fiat_precision_range")
        ]

    def __str__(self) -> str:
        return self.code


class PaymentMethod(models.Model):
    """A way to pay the fiat leg. The catalogue (marketplace.payment_catalog) defines the real
    ones, their regions and the fields of an account (marketplace.payment_fields); a data
    migration keeps these rows in step with it. Moderators may add others (generic fields)."""

    code = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=64)
    is_active = models.BooleanField(default=True)
    # Where it is used: ISO 3166 alpha-2 countries and ISO 4217 currencies; empty: anywhere
    # (PayPal, cash in person). The book offers a viewer their own country's methods first.
    countries = ArrayField(models.CharField(max_length=2), default=list, blank=True)
    currencies = ArrayField(models.CharField(max_length=3), default=list, blank=True)

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
    # Set when the price feed could not price the pair (every source failed, or no fresh price
    # for PRICE_MAX_AGE): its floating offers leave the book, liquidations on it pause, the
    # moderators are told once. Cleared by the next price (marketplace.services.prices).
    stale_since = models.DateTimeField(null=True, blank=True)
    stale_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        verbose_name_plural = "price index"
        constraints = [
            models.UniqueConstraint(fields=["asset", "fiat"], name="one_price_per_pair"),
            models.CheckConstraint(condition=Q(price__gt=0), name="price_index_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.asset}/{self.fiat} {self.price}"


class PricePoint(models.Model):
    """One price the index took (each price_index_set: the feed's polls, moderators' prices), for
    the book's chart. Pruned after PRICE_HISTORY_DAYS by the feed's task."""

    asset = models.ForeignKey(Asset, on_delete=models.CASCADE, related_name="+")
    fiat = models.ForeignKey(FiatCurrency, on_delete=models.CASCADE, related_name="+")
    price = price_field()
    source = models.CharField(max_length=64)
    at = models.DateTimeField()

    class Meta:
        indexes = [
            # The chart reads one pair over a time range; the pruning deletes by time.
            models.Index(fields=["asset", "fiat", "at"], name="price_point_by_pair_time"),
            models.Index(fields=["at"], name="price_point_by_time"),
        ]

    def __str__(self) -> str:
        return f"{self.asset_id}/{self.fiat_id} {self.price} at {self.at.isoformat()}"


class Offer(models.Model):
    class Side(models.TextChoices):
        SELL = "sell", gettext_lazy("Maker sells the asset")
        BUY = "buy", gettext_lazy("Maker buys the asset")

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
    # Set when the platform closed the offer (is_active off) because what is left of it can't
    # cover its minimum (marketplace.services.dust); cleared when it reopens. The maker is told
    # and reopens it by topping it up or lowering the minimum.
    closed_at = models.DateTimeField(null=True, blank=True)
    # Who may take it (checked by offer_take; the order book tells a taker which one they miss).
    min_taker_tier = models.PositiveSmallIntegerField(default=0)
    min_taker_trades = models.PositiveIntegerField(default=0)
    min_account_age_days = models.PositiveIntegerField(default=0)
    trusted_only = models.BooleanField(default=False)
    # --- issue 20 ---
    # Only takers whose profile names one of these countries (ISO 3166-1 alpha-2) may take it;
    # empty: anyone. Checked with the other requirements (marketplace.selectors).
    allowed_countries = ArrayField(models.CharField(max_length=2), default=list, blank=True)
    # Posted in the trade's chat as the maker's first message when a trade opens on the offer
    # (escrow.services.opening), e.g. the maker's instructions. Empty: none.
    auto_reply = models.TextField(blank=True)
    # --- end issue 20 ---
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

    @property
    def depth(self) -> Decimal:
        """What a taker can take now. The book's queries annotate `book_depth`: a sell offer's
        `available` capped by what its maker holds (marketplace.selectors.offer_book); an offer
        read any other way shows what is left of it."""
        depth: Decimal = self.__dict__.get("book_depth", self.available)
        return depth


# --- saved payment accounts (issue 15) ------------------------------------------------------------


class PaymentAccount(models.Model):
    """Where a user receives fiat by one payment method: the method's fields (marketplace.
    payment_fields), checked and normalised by marketplace.services.payment_accounts. A sell
    offer names the maker's (one per method, `offers`); a trade copies the one it uses when it
    opens (escrow's TradePaymentAccount), so an edit or deletion never reaches an open trade."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="payment_accounts"
    )
    method = models.ForeignKey(PaymentMethod, on_delete=models.PROTECT, related_name="accounts")
    label = models.CharField(max_length=64, blank=True)
    # {field key: normalised value}, in the keys marketplace.payment_fields gives the method.
    details = models.JSONField(default=dict)
    # The sell offers that tell their buyers to pay into this account.
    offers = models.ManyToManyField(Offer, blank=True, related_name="payment_accounts")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["method__name", "id"]
        indexes = [models.Index(fields=["user", "method"], name="payment_account_by_user")]

    def __str__(self) -> str:
        return f"{self.method} account #{self.pk} of {self.user_id}"
