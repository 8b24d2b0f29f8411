"""Writes of users' profiles: freezes, strikes and suspensions, the rules on limits every new
trade passes, KYC documents and their review, trusted and blocked lists, API keys."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.models import ApiKey, KycDocument, Profile, ProfileEvent, TraderRelation
from accounts.selectors import LIMITS_CURRENCY, kyc_limits, profile_for, trading_block_reason
from common.errors import (
    Conflict,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from common.files import check_upload

KEY_PREFIX = "mk_"


def hash_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_key_create(
    *, user: Any, name: str, scopes: list[str], otp: str | None = None
) -> tuple[ApiKey, str]:
    """Create a scoped key; the raw key is returned once and never stored."""
    name = (name or "").strip()
    if not name or len(name) > 64:
        raise ValidationFailed(
            "name: give the key a name of 1-64 characters.", fields={"name": ["1-64 characters."]}
        )
    scopes = list(dict.fromkeys(scopes or []))
    unknown = [s for s in scopes if s not in ApiKey.Scope.values]
    if not scopes or unknown:
        raise ValidationFailed(
            f"scopes: choose from {', '.join(ApiKey.Scope.values)}.",
            fields={
                "scopes": [
                    f"Unknown scope {unknown[0]!r}." if unknown else "Choose at least one scope."
                ]
            },
        )
    if ApiKey.Scope.WITHDRAW in scopes:
        require_second_factor(user=user, otp=otp)
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        key = ApiKey.objects.create(
            user=user, name=name, prefix=raw[:10], key_hash=hash_key(raw), scopes=scopes
        )
    return key, raw


def api_key_revoke(*, user: Any, key_id: int) -> ApiKey:
    """Revoke one of the user's keys; requests with it fail from now on."""
    key = ApiKey.objects.filter(pk=key_id, user=user).first()
    if key is None:
        raise NotFound(f"API key #{key_id} not found.")
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def token_rotate(*, user: Any) -> Token:
    """Replace the user's session-independent token (the old one stops working)."""
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user)


def _invalid(field: str, message: str, code: str | None = None) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", fields={field: [message]}, code=code)


def _reason(reason: Any, *, required: bool = False) -> str:
    text = " ".join(str(reason or "").split())
    if required and not text:
        raise _invalid("reason", "Give a reason; the user sees it.")
    if len(text) > 500:
        raise _invalid("reason", "At most 500 characters.")
    return text


def _locked_profile(user: Any) -> Profile:
    profile_for(user)  # make sure the row exists before locking it
    return Profile.objects.select_for_update().get(user_id=user.pk)


# --- freezes, strikes, suspensions ------------------------------------------------------------


def profile_freeze(*, user: Any, actor: Any, reason: str) -> Profile:
    """Stop a user's new offers and trades (needs `accounts.freeze_account`); trades already
    open and their settlements go on."""
    if actor is not None and not actor.has_perm("accounts.freeze_account"):
        raise PermissionDenied("Only a moderator can freeze accounts.")
    text = _reason(reason, required=True)
    with transaction.atomic():
        profile = _locked_profile(user)
        profile.is_frozen = True
        profile.frozen_reason = text
        profile.save(update_fields=["is_frozen", "frozen_reason"])
        ProfileEvent.objects.create(
            user_id=user.pk, actor=actor, action=ProfileEvent.Action.FROZEN, reason=text
        )
    return profile


def profile_unfreeze(*, user: Any, actor: Any) -> Profile:
    """Let a frozen user trade again (needs `accounts.freeze_account`)."""
    if actor is not None and not actor.has_perm("accounts.freeze_account"):
        raise PermissionDenied("Only a moderator can unfreeze accounts.")
    with transaction.atomic():
        profile = _locked_profile(user)
        if profile.is_frozen:
            profile.is_frozen = False
            profile.frozen_reason = ""
            profile.save(update_fields=["is_frozen", "frozen_reason"])
            ProfileEvent.objects.create(
                user_id=user.pk, actor=actor, action=ProfileEvent.Action.UNFROZEN
            )
    return profile


MAX_SUSPENSION_DAYS = 365


def profile_penalize(*, user: Any, actor: Any, reason: str, suspend_days: int = 0) -> Profile:
    """A strike on the user's record and, optionally, no new offers or trades for suspend_days
    (a longer suspension already running is kept). The caller (a moderator's dispute decision)
    has checked the actor's right to decide."""
    if isinstance(suspend_days, bool) or not isinstance(suspend_days, int):
        raise _invalid("suspend_days", "Whole days, 0 to 365.")
    if not 0 <= suspend_days <= MAX_SUSPENSION_DAYS:
        raise _invalid("suspend_days", f"Whole days, 0 to {MAX_SUSPENSION_DAYS}.")
    text = _reason(reason)
    with transaction.atomic():
        profile = _locked_profile(user)
        profile.strikes += 1
        fields = ["strikes"]
        detail = f"strike {profile.strikes}"
        if suspend_days:
            until = timezone.now() + timedelta(days=suspend_days)
            if profile.suspended_until is None or profile.suspended_until < until:
                profile.suspended_until = until
                fields.append("suspended_until")
            detail += f", suspended {suspend_days} day{'s' if suspend_days != 1 else ''}"
        profile.save(update_fields=fields)
        ProfileEvent.objects.create(
            user_id=user.pk,
            actor=actor,
            action=ProfileEvent.Action.STRIKE,
            reason=text,
            detail=detail,
        )
    return profile


def ensure_can_trade(*, user: Any, profile: Profile | None = None) -> None:
    """Frozen and suspended users may not post offers or open trades (PermissionDenied)."""
    why = trading_block_reason(profile or profile_for(user))
    if why:
        raise PermissionDenied(why, code="account_restricted")


# --- limits -----------------------------------------------------------------------------------


def _eur(value: Decimal) -> str:
    text = f"{value.quantize(Decimal('0.01')):,.2f}"
    return f"{text.removesuffix('.00')} {LIMITS_CURRENCY}"


def _how_to_raise(tier: int, kind: str) -> str:
    if tier >= 2:
        return "That is the highest tier's limit." + (
            " It frees up as your older trades leave the 30-day window." if kind == "30d" else ""
        )
    higher = kyc_limits(tier + 1)
    amount = higher.per_trade if kind == "trade" else higher.per_30_days
    return (
        "Verify your identity (Settings → Verification) to raise it to "
        f"{_eur(amount)}{' per 30 days' if kind == '30d' else ''}."
    )


def trade_limits_enforce(
    *,
    taker: Any,
    parties: dict[int, Profile],
    value_eur: Decimal,
    volumes_eur: dict[int, Decimal],
    field: str,
) -> None:
    """A new trade of `value_eur` fits the per-trade and rolling 30-day limits of both parties'
    tiers, given their trades' volume of the last 30 days (`volumes_eur`, counted by escrow,
    which owns trades). Called by escrow's trade_open inside its transaction with both profiles
    locked, so two takes racing can't both slip under a 30-day limit. The taker is told their
    limit and how to raise it (400); the other party's limit is a 409 that doesn't tell their
    volume."""
    volumes = volumes_eur
    # The taker's own limits first: that is what they can act on.
    for user_id in sorted(parties, key=lambda uid: uid != taker.pk):
        limits = kyc_limits(parties[user_id].kyc_tier)
        is_taker = user_id == taker.pk
        if value_eur > limits.per_trade:
            if is_taker:
                message = (
                    f"This trade is {_eur(value_eur)}; tier {limits.tier} allows "
                    f"{_eur(limits.per_trade)} per trade. {_how_to_raise(limits.tier, 'trade')}"
                )
                raise ValidationFailed(message, fields={field: [message]}, code="limit_exceeded")
            raise Conflict(
                f"This trade ({_eur(value_eur)}) is over the other party's per-trade limit; "
                "try a smaller amount.",
                fields={field: ["Over the other party's per-trade limit."]},
                code="counterparty_limit",
            )
        total = volumes.get(user_id, Decimal(0)) + value_eur
        if total > limits.per_30_days:
            if is_taker:
                message = (
                    f"This trade is {_eur(value_eur)}; with your trades of the last 30 days "
                    f"({_eur(volumes[user_id])}) that makes {_eur(total)}, and tier {limits.tier} "
                    f"allows {_eur(limits.per_30_days)} per 30 days. "
                    f"{_how_to_raise(limits.tier, '30d')}"
                )
                raise ValidationFailed(message, fields={field: [message]}, code="limit_exceeded")
            raise Conflict(
                "This trade would take the other party over their 30-day trading limit; try a "
                "smaller amount or another offer.",
                fields={field: ["Over the other party's 30-day limit."]},
                code="counterparty_limit",
            )


def profiles_lock(*, user_ids: list[int]) -> dict[int, Profile]:
    """The profiles of these users, created if missing, locked in pk order (so two
    transactions locking the same pair never deadlock)."""
    User = get_user_model()
    for user in User.objects.filter(pk__in=user_ids).exclude(profile__isnull=False):
        profile_for(user)
    rows = Profile.objects.select_for_update().filter(user_id__in=user_ids).order_by("pk")
    return {p.user_id: p for p in rows}


# --- KYC documents ----------------------------------------------------------------------------

DEFAULT_KYC_TYPES = {"image/png", "image/jpeg", "image/webp", "application/pdf"}
DEFAULT_KYC_MAX_BYTES = 10 * 1024 * 1024
MAX_PENDING_DOCUMENTS = 10


def kyc_document_submit(*, user: Any, kind: str, file: Any, requested_tier: Any) -> KycDocument:
    """A document for review towards a higher tier; images or PDF only, sniffed from content."""
    if kind not in KycDocument.Kind.values:
        raise _invalid("kind", f"Choose one of: {', '.join(KycDocument.Kind.labels)}.")
    try:
        tier = int(requested_tier)
    except (TypeError, ValueError):
        tier = 0
    if tier not in (1, 2):
        raise _invalid("requested_tier", "Choose tier 1 or tier 2.")
    profile = profile_for(user)
    if profile.kyc_tier >= tier:
        raise _invalid("requested_tier", f"You are already tier {profile.kyc_tier}.")
    if file is None:
        raise _invalid("file", "Attach a scan or photo of the document.")
    content_type = check_upload(
        file,
        field="file",
        allowed=getattr(settings, "KYC_DOCUMENT_TYPES", DEFAULT_KYC_TYPES),
        max_bytes=getattr(settings, "KYC_DOCUMENT_MAX_BYTES", DEFAULT_KYC_MAX_BYTES),
    )
    pending = KycDocument.objects.filter(user=user, status=KycDocument.Status.PENDING).count()
    if pending >= MAX_PENDING_DOCUMENTS:
        raise _invalid("file", f"You have {pending} documents waiting for review already.")
    document = KycDocument(
        user=user,
        kind=kind,
        requested_tier=tier,
        content_type=content_type,
        file_name=str(getattr(file, "name", "document"))[:200],
    )
    document.file.save(f"kyc-{user.pk}", file, save=False)
    try:
        with transaction.atomic():
            document.save()
    except Exception:
        # No row, no file: an identity document must not linger unreferenced.
        document.file.storage.delete(document.file.name)
        raise
    return document


def kyc_document_review(
    *, document_id: int, actor: Any, approve: bool, reason: str = ""
) -> KycDocument:
    """A reviewer (`accounts.review_kyc`) approves a pending document, raising the owner's tier
    to the one requested, or rejects it with a reason the owner sees; once."""
    if actor is None or not actor.has_perm("accounts.review_kyc"):
        raise PermissionDenied("Only a KYC reviewer can review documents.")
    text = _reason(reason, required=not approve)
    with transaction.atomic():
        document = KycDocument.objects.select_for_update().filter(pk=document_id).first()
        if document is None:
            raise NotFound(f"Document #{document_id} not found.")
        if document.user_id == actor.pk:
            raise PermissionDenied("You can't review your own documents.")
        if document.status != KycDocument.Status.PENDING:
            raise InvalidTransition(f"Document #{document.pk} was already {document.status}.")
        document.status = KycDocument.Status.APPROVED if approve else KycDocument.Status.REJECTED
        document.reviewed_by = actor
        document.review_reason = text
        document.reviewed_at = timezone.now()
        document.save(update_fields=["status", "reviewed_by", "review_reason", "reviewed_at"])
        detail = f"document #{document.pk} ({document.kind}) for tier {document.requested_tier}"
        if approve:
            profile = _locked_profile(document.user)
            if profile.kyc_tier < document.requested_tier:
                detail += f"; tier {profile.kyc_tier} → {document.requested_tier}"
                profile.kyc_tier = document.requested_tier
                profile.save(update_fields=["kyc_tier"])
        ProfileEvent.objects.create(
            user_id=document.user_id,
            actor=actor,
            action=ProfileEvent.Action.KYC_APPROVED
            if approve
            else ProfileEvent.Action.KYC_REJECTED,
            reason=text,
            detail=detail,
        )
    return document


def kyc_document_delete(*, document_id: int, actor: Any) -> None:
    """The owner deletes a rejected document, file and all; others get not-found."""
    with transaction.atomic():
        document = KycDocument.objects.select_for_update().filter(pk=document_id).first()
        if document is None or document.user_id != getattr(actor, "pk", None):
            raise NotFound(f"Document #{document_id} not found.")
        if document.status != KycDocument.Status.REJECTED:
            raise InvalidTransition(
                f"Document #{document.pk} is {document.status}: only rejected documents can be "
                "deleted."
            )
        stored = document.file
        name, storage = stored.name, stored.storage
        document.delete()
        # The file goes once the row is gone for good.
        transaction.on_commit(lambda: storage.delete(name) if name else None)


# --- trusted and blocked lists ----------------------------------------------------------------


def trader_relation_add(*, actor: Any, username: str, kind: str) -> TraderRelation:
    """Trust or block another trader; trusting someone blocked (or the reverse) replaces it."""
    if kind not in TraderRelation.Kind.values:
        raise _invalid("kind", "Choose trusted or blocked.")
    name = str(username or "").strip()
    other = get_user_model().objects.filter(username=name, is_active=True).first()
    if other is None:
        raise _invalid("username", f"No trader called {name!r}.")
    if other.pk == actor.pk:
        raise _invalid(
            "username", f"You can't {'trust' if kind == 'trusted' else 'block'} yourself."
        )
    with transaction.atomic():
        relation, _ = TraderRelation.objects.update_or_create(
            owner=actor, other=other, defaults={"kind": kind}
        )
    return relation


def trader_relation_remove(*, actor: Any, relation_id: int) -> None:
    """Take someone off your trusted or blocked list."""
    deleted, _ = TraderRelation.objects.filter(pk=relation_id, owner_id=actor.pk).delete()
    if not deleted:
        raise NotFound(f"Relation #{relation_id} not found.")


# --- two-factor authentication (TOTP, django-otp) ------------------------------------------------


def totp_device(user: Any, *, confirmed: bool | None = True) -> Any:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    qs = TOTPDevice.objects.filter(user=user)
    if confirmed is not None:
        qs = qs.filter(confirmed=confirmed)
    return qs.order_by("-id").first()


def has_two_factor(user: Any) -> bool:
    return bool(user and user.is_authenticated and totp_device(user) is not None)


def totp_setup_start(*, user: Any) -> tuple[Any, str]:
    """Start enrolling an authenticator app: an unconfirmed device and its otpauth:// URL."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    if has_two_factor(user):
        raise InvalidTransition("Two-factor authentication is already on.", code="otp_exists")
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)
    return device, device.config_url


def totp_setup_confirm(*, user: Any, token: str) -> Any:
    """The first code from the app proves it was set up: 2FA is on from now on."""
    device = totp_device(user, confirmed=False)
    if device is None:
        raise InvalidTransition("Start the setup first.", code="otp_not_started")
    if not device.verify_token(str(token or "").strip()):
        raise ValidationFailed(
            "otp: that code is not right; check your phone's clock.",
            fields={"otp": ["Wrong code."]},
        )
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    return device


def totp_disable(*, user: Any, token: str) -> None:
    """Turning 2FA off needs a current code too."""
    require_second_factor(user=user, otp=token)
    from django_otp.plugins.otp_totp.models import TOTPDevice

    TOTPDevice.objects.filter(user=user).delete()


def require_second_factor(*, user: Any, otp: str | None) -> None:
    """Once a user turned 2FA on, releasing, withdrawing and creating withdraw-scoped keys need
    a current code from their authenticator; without 2FA nothing is asked."""
    device = totp_device(user)
    if device is None:
        return
    token = str(otp or "").strip()
    if not token:
        raise PermissionDenied(
            "otp: enter the 6-digit code from your authenticator app.",
            fields={"otp": ["Required: two-factor authentication is on."]},
            code="otp_required",
        )
    if not device.verify_token(token):
        raise PermissionDenied(
            "otp: that code is wrong or was already used.",
            fields={"otp": ["Wrong code."]},
            code="otp_invalid",
        )
