from __future__ import annotations

from django.conf import settings
from django.core.validators import URLValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy

from escrow.models import Trade
from lending.models import Loan
from marketplace.models import Offer
from notifications.live.announce import NotificationManager


class Notification(models.Model):
    """An in-app message to one user about one of their trades or loans (the bell in the UI)."""

    class Kind(models.TextChoices):
        CREATED = "created"
        PAID = "paid"
        RELEASING = "releasing"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        EXPIRED = "expired"
        DISPUTED = "disputed"
        RESOLVED = "resolved"
        MESSAGE = "message"
        # A settlement failed (parties: it is delayed; moderators: retry it in the admin).
        SETTLEMENT = "settlement", gettext_lazy("Settlement delayed")
        # News of a loan (lending): activation, installments, lateness, margin calls, default,
        # liquidation, and for moderators a liquidation blocked by a stale price. No trade.
        LOAN = "loan"
        # Once per party when a trade is completed or resolved: rate the other trader (it links to
        # the trade room's feedback panel).
        FEEDBACK = "feedback", gettext_lazy("Feedback prompt")
        # The platform closed one of the user's offers: too little is left to take (marketplace).
        OFFER = "offer"
        # Deposits and withdrawals on the chain (a user's), and for moderators the chain's alerts:
        # a hot wallet too low, a reserve shortfall (ledger.alerts).
        FUNDS = "funds", gettext_lazy("Deposits and withdrawals")
        # For moderators: a pair's price went stale (the price feed could not price it) or
        # recovered (marketplace.services.prices).
        PRICE = "price", gettext_lazy("Price feed")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    trade = models.ForeignKey(
        Trade, on_delete=models.CASCADE, null=True, blank=True, related_name="notifications"
    )
    # A loan's news links to the loan's page (the request's id is the loan's).
    loan = models.ForeignKey(
        Loan, on_delete=models.CASCADE, null=True, blank=True, related_name="notifications"
    )
    # An offer's news links to the offer's edit page (its maker tops it up or lowers the minimum).
    offer = models.ForeignKey(
        Offer, on_delete=models.CASCADE, null=True, blank=True, related_name="notifications"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    text = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    # issue 18: rows written (one or in bulk) reach the owner's badge over the socket on commit.
    objects = NotificationManager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The unread badge counts these on every page.
            models.Index(fields=["user"], condition=Q(read_at__isnull=True), name="notif_unread"),
            models.Index(fields=["user", "-id"], name="notif_user_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.kind} #{self.trade_id or '-'}"


class WebhookEndpoint(models.Model):
    """A URL a user's bot wants trade events POSTed to, signed with the endpoint's secret."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=500, validators=[URLValidator(schemes=["http", "https"])])
    # Stored as-is (not hashed): every delivery is signed with it. Shown once, at creation.
    secret = models.CharField(max_length=80)
    # Event names ("trade.paid", ...) to send; empty means all of them.
    events = models.JSONField(default=list, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.url}"

    def wants(self, event: str) -> bool:
        return not self.events or event in self.events


class WebhookDelivery(models.Model):
    """The outbox row of one event for one endpoint: a lost broker message or a crashed worker
    loses nothing, the sweeper finds every pending row whose next attempt is overdue."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    class Error(models.TextChoices):
        """Why the last attempt failed: a fixed class, never the receiver's answer or the
        exception's text (both would let a URL read or scan what it should not reach)."""

        HTTP_STATUS = (
            "http_status",
            gettext_lazy("Answered with a non-2xx status (see last_status_code)"),
        )
        REDIRECT = "redirect", gettext_lazy("Answered with a redirect (not followed)")
        TIMEOUT = "timeout"
        CONNECTION_ERROR = "connection_error", gettext_lazy("Connection error")
        TLS_ERROR = "tls_error", gettext_lazy("TLS error")
        DNS_ERROR = "dns_error", gettext_lazy("DNS error")
        REFUSED_ADDRESS = (
            "refused_address",
            gettext_lazy("Resolves to a private or internal address"),
        )
        REFUSED_URL = "refused_url", gettext_lazy("The URL is not allowed (not https://)")
        ENDPOINT_DISABLED = "endpoint_disabled", gettext_lazy("The endpoint is disabled")

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.CharField(max_length=32)
    payload = models.JSONField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, choices=Error.choices)
    # When the next attempt is due; a worker that claims the row pushes it forward by a lease.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [
            # The sweeper's query: pending rows by due time.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="webhook_delivery_due",
            ),
            models.Index(fields=["endpoint", "-id"], name="webhook_delivery_log"),
        ]

    def __str__(self) -> str:
        return f"{self.event} -> endpoint #{self.endpoint_id} ({self.status})"


# --- outside the site: email and Telegram (docs/architecture.md §2, notifications) -------------


class NotificationPreference(models.Model):
    """Where one person wants one kind of news besides the bell: by email, by Telegram. A
    missing row means the defaults (notifications.preferences.DEFAULTS)."""

    class Category(models.TextChoices):
        TRADE_OPENED = "trade_opened", gettext_lazy("A trade opened on your offer")
        TRADE_PAID = "trade_paid", gettext_lazy("The buyer marked a trade paid")
        TRADE_COMPLETED = (
            "trade_completed",
            gettext_lazy("Released, completed, or a settlement delayed"),
        )
        DISPUTES = "disputes", gettext_lazy("Disputes: opened, moderators' requests, decisions")
        CHAT = "chat", gettext_lazy("Chat messages in your trades")
        LOANS = (
            "loans",
            gettext_lazy("Loans: activation, missed installments, margin calls, disputes"),
        )
        OFFERS = "offers", gettext_lazy("Offers the platform closed")
        FUNDS = (
            "funds",
            gettext_lazy("Deposits and withdrawals; for moderators, chain and price alerts"),
        )

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    category = models.CharField(max_length=20, choices=Category.choices)
    email = models.BooleanField()
    telegram = models.BooleanField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "category"], name="notif_pref_one_per_category")
        ]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.category} email={self.email} telegram={self.telegram}"


class TelegramLink(models.Model):
    """A person's Telegram chat with the platform's bot. Linking: the settings page makes a
    one-time code (kept only as an HMAC), the person sends `/start CODE` to the bot, the poller
    finds the code and records the chat; the code is spent then."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="telegram_link"
    )
    # One person per chat: linking a chat to a second account takes it from the first.
    chat_id = models.BigIntegerField(null=True, blank=True, unique=True)
    linked_at = models.DateTimeField(null=True, blank=True)
    code_hash = models.CharField(max_length=64, blank=True, db_index=True)
    code_expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user_id}: chat {self.chat_id or '-'}"


class TelegramBotState(models.Model):
    """One row: the last Bot API update handled, so that each update is handled once
    (getUpdates' offset is this plus one)."""

    last_update_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"last update {self.last_update_id}"


class OutboundMessage(models.Model):
    """The outbox row of one email or Telegram message to one address. Written with the news,
    sent by a Celery task off every request's path, retried with backoff; a retry finds a sent
    row and sends nothing. A sweeper re-queues rows whose broker message was lost."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        TELEGRAM = "telegram"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    class Error(models.TextChoices):
        """The last attempt's failure as a fixed class (an exception's text could carry the bot
        token, which is part of the Bot API's URL)."""

        TIMEOUT = "timeout"
        CONNECTION_ERROR = "connection_error", gettext_lazy("Connection error")
        TEMPORARY = (
            "temporary",
            gettext_lazy("The server refused it for now (4xx SMTP, 429/5xx Bot API)"),
        )
        REFUSED = "refused", gettext_lazy("The server refused it for good (5xx SMTP, 4xx Bot API)")
        NOT_CONFIGURED = "not_configured", gettext_lazy("The channel is not configured")
        UNLINKED = "unlinked", gettext_lazy("The Telegram chat was unlinked")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="outbound_messages",
    )
    channel = models.CharField(max_length=10, choices=Channel.choices)
    # NotificationPreference.Category, or blank for the bot's own answers.
    category = models.CharField(max_length=20, blank=True)
    # An email address, or a Telegram chat id.
    address = models.CharField(max_length=254)
    subject = models.CharField(max_length=200, blank=True)
    body = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=20, blank=True, choices=Error.choices)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="outbound_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.address} ({self.status})"
