from __future__ import annotations

from typing import TYPE_CHECKING, cast

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy

if TYPE_CHECKING:
    from django.core.files.storage import Storage

from common.files import private_storage


class Profile(models.Model):
    """A trader's standing: KYC tier (shown publicly as a badge only), freezes, strikes and
    suspensions (which stop new offers and trades, never ongoing settlements), last seen."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile"
    )
    kyc_tier = models.PositiveSmallIntegerField(default=0)
    # The name on the identity document a KYC reviewer approved (accounts.services.verified_name);
    # the holder of every payment account the user saves must bear it. Blank: not verified.
    verified_name = models.CharField(max_length=100, blank=True)
    is_frozen = models.BooleanField(default=False)
    frozen_reason = models.CharField(max_length=500, blank=True)
    strikes = models.PositiveIntegerField(default=0)
    suspended_until = models.DateTimeField(null=True, blank=True)
    # Set by a password change or reset (accounts.services.credentials): until then no
    # withdrawal leaves, whichever credential asks, so a thief who changed it cannot cash out.
    withdrawals_locked_until = models.DateTimeField(null=True, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    # The IANA zone the user's browser reported (accounts.services.profile_time_zone_set): pages
    # show times in it (accounts.middleware.TimeZoneMiddleware). Empty: UTC.
    time_zone = models.CharField(max_length=64, blank=True)
    # --- issue 20: the rules traders know from Binance P2P ---
    # Where the trader lives (ISO 3166-1 alpha-2, common.countries), set in Settings: offers may
    # be open to some countries only (Offer.allowed_countries). Empty: not said.
    country = models.CharField(max_length=2, blank=True)
    # Buying paused after CANCEL_LIMIT_PER_DAY counted cancellations in the trader's day
    # (escrow.services.cancellations): no sell offer taken, no buy offer shown, until then.
    buying_suspended_until = models.DateTimeField(null=True, blank=True)
    # --- end issue 20 ---
    # The language chosen with the language selector (one of settings.LANGUAGES): pages,
    # notifications and emails are in it (accounts.middleware.UserLanguageMiddleware,
    # notifications.email.recipient_language). Empty: the browser's (Accept-Language).
    language = models.CharField(max_length=10, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        permissions = [("freeze_account", "Can freeze and unfreeze trading accounts")]
        constraints = [
            models.CheckConstraint(condition=Q(kyc_tier__lte=2), name="profile_kyc_tier_range")
        ]

    def __str__(self) -> str:
        return f"Profile of {self.user}"


class ProfileEvent(models.Model):
    """The audit trail of a profile: who froze, penalised or verified it, when and why."""

    class Action(models.TextChoices):
        FROZEN = "frozen"
        UNFROZEN = "unfrozen"
        STRIKE = "strike"
        KYC_APPROVED = "kyc_approved"
        KYC_REJECTED = "kyc_rejected"
        PASSWORD_CHANGED = "password_changed"  # noqa: S105 (an audit action, no secret)
        KYC_FILE_READ = "kyc_file_read"  # a reviewer opened one of the user's documents
        FUNDS_LOCKED = "funds_locked"  # too many wrong fund passwords (accounts.services.funds)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="profile_events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    reason = models.CharField(max_length=500, blank=True)
    detail = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} on {self.user_id} by {self.actor_id}"


def kyc_storage() -> Storage:
    """Private storage as a callable, so migrations name this function instead of recording
    the storage's folder (which differs between machines and test runs)."""
    return cast("Storage", private_storage)  # a lazy proxy of one


class KycDocument(models.Model):
    """An identity document a user submits to raise their tier. Never public: the file sits on
    private storage and goes out only to its owner and to reviewers, through a checking view."""

    class Kind(models.TextChoices):
        PASSPORT = "passport", gettext_lazy("Passport")
        ID_CARD = "id_card", gettext_lazy("National ID card")
        DRIVING_LICENCE = "driving_licence", gettext_lazy("Driving licence")
        PROOF_OF_ADDRESS = "proof_of_address", gettext_lazy("Proof of address")

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="kyc_documents"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    requested_tier = models.PositiveSmallIntegerField(choices=[(1, "Tier 1"), (2, "Tier 2")])
    file = models.FileField(upload_to="kyc/%Y/%m/", storage=kyc_storage)
    file_name = models.CharField(max_length=200, blank=True)
    content_type = models.CharField(
        max_length=64, help_text=gettext_lazy("Sniffed from the content")
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    review_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "KYC document"
        permissions = [("review_kyc", "Can review KYC documents")]
        indexes = [models.Index(fields=["status", "created_at"], name="kyc_review_queue")]
        constraints = [
            models.CheckConstraint(
                condition=Q(requested_tier__in=[1, 2]), name="kyc_requested_tier_range"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of {self.user} ({self.status})"


class TraderRelation(models.Model):
    """One trader's view of another: trusted (may take the owner's trusted-only offers) or
    blocked (the two never see each other's offers)."""

    class Kind(models.TextChoices):
        TRUSTED = "trusted"
        BLOCKED = "blocked"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="relations"
    )
    other = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="related_by"
    )
    kind = models.CharField(max_length=7, choices=Kind.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One relation per pair: trusting someone you blocked replaces the block.
            models.UniqueConstraint(fields=["owner", "other"], name="one_relation_per_pair"),
            models.CheckConstraint(condition=~Q(owner=F("other")), name="relation_not_self"),
        ]
        indexes = [models.Index(fields=["other", "kind"], name="relation_by_other")]

    def __str__(self) -> str:
        return f"{self.owner_id} {self.kind} {self.other_id}"


class ApiKey(models.Model):
    """A per-user key for bots, with scopes. Shown once at creation; only its SHA-256 is stored."""

    class Scope(models.TextChoices):
        READ = "read", gettext_lazy("Read")
        TRADE = "trade", gettext_lazy("Trade")
        WITHDRAW = "withdraw", gettext_lazy("Withdraw")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=64)
    prefix = models.CharField(
        max_length=12, help_text=gettext_lazy("The first characters, to tell keys apart.")
    )
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class AccountLink(models.Model):
    """A value an account was seen with at signup or login: its address or its device cookie,
    kept only as a keyed hash (HMAC-SHA256 under SECRET_KEY, accounts.services.links), so raw
    addresses are never stored. Two accounts sharing a value are linked (accounts.selectors.
    linked_user_ids): they may not trade with each other and don't count toward each other's
    reputation. An address shared by more than LINK_IP_MAX_USERS accounts links nobody."""

    class Kind(models.TextChoices):
        IP = "ip"
        DEVICE = "device"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="account_links"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    value_hash = models.CharField(max_length=64)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "kind", "value_hash"], name="account_link_once_per_value"
            )
        ]
        # Who else was seen with a value: every link check starts from it.
        indexes = [models.Index(fields=["kind", "value_hash"], name="account_link_value")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.kind} {self.value_hash[:12]}…"


class BrowserSession(models.Model):
    """A browser logged in to an account, as its owner recognizes it on the settings page: its
    django.contrib.sessions row (by key), the browser it said it was, when it logged in and when
    it was last seen. Written at login and at most once a minute after
    (accounts.middleware.LastSeenMiddleware); revoking deletes the session row, so that browser
    is logged out at once. A row whose session ended (logout, expiry) is not listed and is
    pruned at its owner's next login."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="browser_sessions"
    )
    session_key = models.CharField(max_length=40, unique=True)
    user_agent = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["-last_seen", "-id"]

    def __str__(self) -> str:
        return f"session of {self.user_id} since {self.created_at:%Y-%m-%d %H:%M}"
