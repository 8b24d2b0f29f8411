"""A trader's standing: freezes, strikes and suspensions, and the KYC limits a new trade must
fit (both parties' profiles locked)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from accounts.models import Profile, ProfileEvent
from accounts.selectors import LIMITS_CURRENCY, kyc_limits, profile_for, trading_block_reason
from accounts.services._common import _locked_profile, _reason
from common.errors import (
    Conflict,
    PermissionDenied,
    ValidationFailed,
)
from common.prepared import PreparedRead

# --- freezes, strikes, suspensions ------------------------------------------------------------


def profile_freeze(*, user: Any, actor: Any, reason: str) -> Profile:
    """Stop a user's new offers and trades (needs `accounts.freeze_account`); trades already
    open and their settlements go on."""
    if actor is not None and not actor.has_perm("accounts.freeze_account"):
        raise PermissionDenied(gettext("Only a moderator can freeze accounts."))
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
        raise PermissionDenied(gettext("Only a moderator can unfreeze accounts."))
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
        raise ValidationFailed.for_field("suspend_days", gettext("Whole days, 0 to 365."))
    if not 0 <= suspend_days <= MAX_SUSPENSION_DAYS:
        raise ValidationFailed.for_field(
            "suspend_days",
            gettext("Whole days, 0 to {MAX_SUSPENSION_DAYS}.").format(
                MAX_SUSPENSION_DAYS=MAX_SUSPENSION_DAYS
            ),
        )
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
                gettext(
                    "This trade ({v1}) is over the other party's per-trade limit; try a smaller amount."
                ).format(v1=_eur(value_eur)),
                fields={field: [gettext("Over the other party's per-trade limit.")]},
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
                gettext(
                    "This trade would take the other party over their 30-day trading limit; try a "
                    "smaller amount or another offer."
                ),
                fields={field: [gettext("Over the other party's 30-day limit.")]},
                code="counterparty_limit",
            )


def _profiles_locked(*user_ids: int) -> Any:
    return Profile.objects.select_for_update().filter(user_id__in=user_ids).order_by("pk")


_LOCK_PAIR = PreparedRead(lambda first, second: _profiles_locked(first, second))


def profiles_lock(*, user_ids: list[int]) -> dict[int, Profile]:
    """The profiles of these users, created if missing, locked in pk order (so two
    transactions locking the same pair never deadlock)."""
    unique = sorted(set(user_ids))
    # A take's pair (the taker and the maker): its statement built once (common.prepared).
    rows = _LOCK_PAIR(*unique) if len(unique) == 2 else _profiles_locked(*unique)
    found = {p.user_id: p for p in rows}
    if len(found) < len(set(user_ids)):
        # Rare (every sign-up creates one): create the missing ones, then lock them all.
        User = get_user_model()
        for user in User.objects.filter(pk__in=user_ids).exclude(profile__isnull=False):
            profile_for(user)
        found = {p.user_id: p for p in _profiles_locked(*unique)}
    return found


def withdrawal_hold_reason(*, user: Any) -> str | None:
    """Why money may not leave this account now, or None: a freeze, or the pause after a
    password change (a withdrawal queued just before the change may be the thief's)."""
    profile = (
        Profile.objects.filter(user_id=user.pk)
        .only("is_frozen", "frozen_reason", "withdrawals_locked_until")
        .first()
    )
    if profile is None:
        return None
    if profile.is_frozen:
        return f"account frozen: {profile.frozen_reason}" if profile.frozen_reason else "frozen"
    locked = profile.withdrawals_locked_until
    if locked is not None and locked > timezone.now():
        return "password changed recently: a moderator checks this withdrawal"
    return None


def ensure_can_withdraw(*, user: Any) -> None:
    """A frozen account withdraws nothing ("suspected fraud" means the money stays)."""
    if Profile.objects.filter(user_id=user.pk, is_frozen=True).exists():
        raise PermissionDenied(
            gettext("Your account is frozen: withdrawals are stopped until support clears it."),
            code="account_frozen",
        )
