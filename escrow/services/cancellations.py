"""The daily cancellation limit (issue 20, as on Binance P2P): CANCEL_LIMIT_PER_DAY counted
cancellations in a buyer's day pause their buying until the next day starts.

- **The day** is the buyer's calendar day in their profile's time zone (UTC without one), as on
  Binance, which resets at 00:00 in the user's zone: the pause ends at the next 00:00 there,
  fixed when the limit is reached (Profile.buying_suspended_until), so moving the zone later
  doesn't end it sooner.
- **What counts**: a buyer's cancel for a reason of their own (CancelReason: changed their mind,
  can't pay, other; no reason given counts as other), and an expiry (the buyer let the payment
  window run out: otherwise a buyer near the limit lets trades expire instead, which locks the
  seller's coins longer). A moderator's cancel doesn't.
- **The seller's fault**: a cancel whose reason blames the seller (asked to cancel or to pay
  outside, wrong payment details, no answer) doesn't count. It is recorded on the trade, the
  seller sees it in the room, and moderators review them in the escrow admin (filter "Seller's
  fault, not counted"), where they count one after all when the buyer abused it
  (transitions.trade_cancellation_review); un-counting works the same way.
- **Paused buying**: no sell offer taken (offer page, quick buy, API; escrow.services.opening),
  and the buyer's own buy offers leave the book (marketplace.selectors.offer_book), since
  taking one would open a trade with them as buyer. Selling is never affected.

Rows are locked in the escrow order (trade, offer, then the buyer's profile before any ledger
account): a take locks the offer, then profiles, then accounts, so the two queue instead of
deadlocking. The pure rule pieces are here; the moves that call them are in transitions."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.utils.translation import gettext

from accounts import services as accounts
from accounts.models import Profile
from common.errors import ValidationFailed
from escrow.models import SELLER_FAULT_REASONS, CancelReason, Trade

S = Trade.State


def cancel_reason_clean(reason: Any) -> str:
    """A buyer's cancel reason as stored: a CancelReason value; none given is `other`."""
    value = str(reason or "").strip() or CancelReason.OTHER
    if value not in CancelReason.values:
        raise ValidationFailed.for_field(
            "cancel_reason",
            gettext("Choose one of: {reasons}.").format(reasons=", ".join(CancelReason.values)),
        )
    return value


def cancellation_counts(*, to: str, role: str, cancel_reason: str) -> bool:
    """Whether closing a trade this way counts against its buyer's daily limit."""
    if to == S.EXPIRED:
        return True
    return to == S.CANCELLED and role == "buyer" and cancel_reason not in SELLER_FAULT_REASONS


def _zone(profile: Profile) -> ZoneInfo:
    try:
        return ZoneInfo(profile.time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):  # tzdata changed since it was stored
        return ZoneInfo("UTC")


def buyer_day(*, profile: Profile, now: datetime) -> tuple[datetime, datetime]:
    """The start of the buyer's day (00:00 in their zone) and the start of the next one."""
    zone = _zone(profile)
    today = now.astimezone(zone).date()
    start = datetime.combine(today, time(0), tzinfo=zone)
    return start, datetime.combine(today + timedelta(days=1), time(0), tzinfo=zone)


def counted_cancellations(*, buyer_id: int, since: datetime) -> int:
    """The buyer's counted cancellations (and expiries) closed since `since`."""
    return Trade.objects.filter(
        buyer_id=buyer_id, cancel_counted=True, closed_at__gte=since
    ).count()


def buying_suspension_refresh(*, profile: Profile, now: datetime) -> datetime | None:
    """Under the buyer's profile lock: pause buying until the next day starts once the day's
    counted cancellations reach CANCEL_LIMIT_PER_DAY, or lift a pause they no longer reach (a
    moderator un-counted one). Returns the pause's end, or None."""
    start, next_start = buyer_day(profile=profile, now=now)
    count = counted_cancellations(buyer_id=profile.user_id, since=start)
    until = next_start if count >= settings.CANCEL_LIMIT_PER_DAY else None
    current = profile.buying_suspended_until
    if until is None and current is not None and current > next_start:
        until = current  # a pause from elsewhere (none today) is not this rule's to lift
    if until != current:
        accounts.profile_buying_suspension_set(profile=profile, until=until)
    return until
