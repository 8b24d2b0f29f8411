"""Reads of traders: profiles, the shapes of their public stats and limits, trusted and blocked
lists, KYC documents. Figures that count trades (stats, volumes) are escrow's: it owns trades."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, router, transaction
from django.db.models import (
    Case,
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    When,
)
from django.utils import timezone
from django.utils.translation import gettext, ngettext

from accounts.models import AccountLink, BrowserSession, KycDocument, Profile, TraderRelation
from common import hotcache
from common.errors import NotFound

logger = logging.getLogger(__name__)

# --- profiles ---------------------------------------------------------------------------------


def kyc_pending_count() -> int:
    """KYC documents waiting for a reviewer (the admin index's count)."""
    return KycDocument.objects.filter(status=KycDocument.Status.PENDING).count()


def profile_for(user: Any) -> Profile:
    """The user's profile, created on first use (accounts made before profiles existed, or by
    createsuperuser, have none)."""
    # Always read afresh: a profile cached on the user object may predate a freeze.
    profile = Profile.objects.filter(user_id=user.pk).first()
    if profile is None:
        try:
            with transaction.atomic():
                profile = Profile.objects.create(user_id=user.pk)
        except IntegrityError:  # created meanwhile by a concurrent request
            profile = Profile.objects.get(user_id=user.pk)
    return profile


def languages_of(*, user_ids: Iterable[int]) -> dict[int, str]:
    """The language each of these users chose (Profile.language), one query; users who chose
    none are left out (their news goes in the site's language)."""
    return dict(
        Profile.objects.filter(user_id__in=list(user_ids))
        .exclude(language="")
        .values_list("user_id", "language")
    )


def trading_block_reason(profile: Profile, *, now: datetime | None = None) -> str | None:
    """Why this account may not post offers or open trades right now, or None."""
    now = now or timezone.now()
    if profile.is_frozen:
        why = f": {profile.frozen_reason}" if profile.frozen_reason else ""
        return (
            f"Your account is frozen{why}. You can't post offers or open trades; trades already "
            "open go on as usual. Contact support to resolve it."
        )
    if profile.suspended_until and profile.suspended_until > now:
        until = timezone.localtime(profile.suspended_until).strftime("%Y-%m-%d %H:%M %Z")
        return (
            f"Your account is suspended from trading until {until} after a dispute. You can't "
            "post offers or open trades until then; trades already open go on as usual."
        )
    return None


@dataclass(frozen=True)
class TraderStats:
    username: str
    trades: int
    completion_rate: Decimal | None
    # Seconds from "paid" to the seller's own release (the trade's events), the mean over their
    # completed sales of the last RELEASE_TIME_WINDOW_DAYS (escrow.selectors.stats).
    average_release_seconds: int | None = None
    # When the trader was last seen (Profile.last_seen; issue 20's online status, is_online).
    last_seen: datetime | None = None

    def is_online(self, *, now: datetime | None = None) -> bool:
        return is_online(self.last_seen, now=now)


def is_online(last_seen: datetime | None, *, now: datetime | None = None) -> bool:
    """Seen within MAKER_ONLINE_MINUTES: "online" in the book and on the profile; otherwise
    they show when they were last active."""
    if last_seen is None:
        return False
    return (now or timezone.now()) - last_seen <= timedelta(minutes=settings.MAKER_ONLINE_MINUTES)


def buying_block_reason(profile: Profile | None, *, now: datetime | None = None) -> str | None:
    """Why this trader may not buy right now (escrow's daily cancellation limit paused it), with
    the time it ends in their own time zone; None when they may."""
    until = profile.buying_suspended_until if profile is not None else None
    if profile is None or until is None or until <= (now or timezone.now()):
        return None
    zone_name = profile.time_zone or "UTC"
    try:
        local = until.astimezone(ZoneInfo(zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        zone_name, local = "UTC", until.astimezone(ZoneInfo("UTC"))
    limit = settings.CANCEL_LIMIT_PER_DAY
    return ngettext(
        "Buying is paused by the daily cancellation limit: you reached today's {limit} "
        "cancelled trade (trades you let expire count too; cancels for the seller's fault "
        "don't). You can buy again from {until} ({zone}). Selling is not affected.",
        "Buying is paused by the daily cancellation limit: you reached today's {limit} "
        "cancelled trades (trades you let expire count too; cancels for the seller's fault "
        "don't). You can buy again from {until} ({zone}). Selling is not affected.",
        limit,
    ).format(limit=limit, until=f"{local:%Y-%m-%d %H:%M}", zone=zone_name)


def is_moderator(user: Any) -> bool:
    """Staff with the moderators' permission (the Moderators group has it): the one check of who
    may act as a moderator, wherever a trade, a dispute or their files are concerned."""
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and user.is_staff
        and user.has_perm(MODERATOR_PERMISSION)
    )


# The permission that makes staff a moderator (escrow's; named here as a string, a layer below).
MODERATOR_PERMISSION = "escrow.decide_trade"


# --- public stats and limits (computed by escrow.selectors.stats) ----------------------------

# --- limits -----------------------------------------------------------------------------------

LIMITS_CURRENCY = "EUR"
DEFAULT_KYC_LIMITS_EUR: dict[int, dict[str, Decimal]] = {
    0: {"per_trade": Decimal(1_000), "per_30_days": Decimal(5_000)},
    1: {"per_trade": Decimal(10_000), "per_30_days": Decimal(50_000)},
    2: {"per_trade": Decimal(100_000), "per_30_days": Decimal(1_000_000)},
}


@dataclass(frozen=True)
class TierLimits:
    tier: int
    per_trade: Decimal
    per_30_days: Decimal


def kyc_limits(tier: int) -> TierLimits:
    """The tier's limits in EUR, from settings.KYC_LIMITS_EUR (tier -> per_trade, per_30_days)."""
    table = getattr(settings, "KYC_LIMITS_EUR", DEFAULT_KYC_LIMITS_EUR)
    row = table.get(tier) or table.get(str(tier)) or DEFAULT_KYC_LIMITS_EUR[tier]
    return TierLimits(
        tier=tier,
        per_trade=Decimal(str(row["per_trade"])),
        per_30_days=Decimal(str(row["per_30_days"])),
    )


# --- offer requirements -----------------------------------------------------------------------


@dataclass(frozen=True)
class TakerFacts:
    """What an offer's requirements are checked against."""

    user_id: int
    tier: int
    completed_trades: int
    date_joined: datetime
    # The taker's country (Profile.country, ISO 3166-1 alpha-2), "" when not set (issue 20).
    country: str = ""


def relation_list_for_user(*, user: Any, kind: str | None = None) -> QuerySet[TraderRelation]:
    qs = TraderRelation.objects.filter(owner=user).select_related("other")
    if kind:
        qs = qs.filter(kind=kind)
    return qs.order_by("kind", "other__username")


def blocked_user_ids(*, user: Any) -> QuerySet[Any]:
    """Ids of the users this one blocked or is blocked by (a subquery, for exclude())."""
    return (
        TraderRelation.objects.filter(kind=TraderRelation.Kind.BLOCKED)
        .filter(Q(owner_id=user.pk) | Q(other_id=user.pk))
        .annotate(
            them=Case(
                When(owner_id=user.pk, then=F("other_id")),
                default=F("owner_id"),
            )
        )
        .values("them")
    )


# --- issue 17: a viewer's blocked set from the cache (the API's order book) ---
# The ids a trader blocked or is blocked by, kept in the cache at a version per trader: the
# relation services bump it now and on commit (accounts.services.relations), and a reader that
# finds another version than the one the ids were read at reads them afresh, so a block shows
# in the very next page. BLOCKED_CACHE_SECONDS only bounds what no service announces (an admin's edit). Hiding
# a blocked maker's offers is the book's courtesy: offer_take checks the block in PostgreSQL.


def blocked_cache_keys(*, user_id: int) -> list[str]:
    """The keys of the trader's blocked set (version, entry), for a caller that reads them in
    the same round trip as its own (marketplace.book_cache)."""
    return [f"blocked:v:{user_id}", f"blocked:ids:{user_id}"]


def blocked_ids_cached(*, user_id: int, got: dict[str, Any] | None = None) -> frozenset[int]:
    """Ids of the users this one blocked or is blocked by: from `got` (the blocked_cache_keys
    already read) or the cache, else from the database (and cached at the version read)."""
    vkey, ekey = blocked_cache_keys(user_id=user_id)
    if got is None:
        got = hotcache.get_many([vkey, ekey])
    version, entry = got.get(vkey), got.get(ekey)
    if entry is not None and entry[0] == version:
        return frozenset(entry[1])
    # On the primary, even inside a replica_reads view: a set read from a lagging replica after
    # the version moved would be kept at the new version, stale until it expires.
    pairs = (
        TraderRelation.objects.using(DEFAULT_DB_ALIAS)
        .filter(kind=TraderRelation.Kind.BLOCKED)
        .filter(Q(owner_id=user_id) | Q(other_id=user_id))
        .values_list("owner_id", "other_id")
    )
    ids = frozenset(other if owner == user_id else owner for owner, other in pairs)
    timeout = int(getattr(settings, "BLOCKED_CACHE_SECONDS", 60))
    if timeout > 0:
        hotcache.set(ekey, (version, tuple(sorted(ids))), timeout)
    return ids


def blocked_changed(*, user_ids: Iterable[int]) -> None:
    """A block between these traders was added or lifted: their cached sets are read afresh,
    now and once the change commits."""
    keys = [blocked_cache_keys(user_id=uid)[0] for uid in set(user_ids)]

    def bump() -> None:
        hotcache.incr_many(keys)

    bump()
    transaction.on_commit(bump)


def is_blocked_between(*, user_id: int, other_id: int) -> bool:
    return TraderRelation.objects.filter(
        Q(owner_id=user_id, other_id=other_id) | Q(owner_id=other_id, other_id=user_id),
        kind=TraderRelation.Kind.BLOCKED,
    ).exists()


def trusting_owner_ids(*, user: Any, owner_ids: list[int]) -> set[int]:
    """Which of these owners have `user` on their trusted list."""
    return set(
        TraderRelation.objects.filter(
            other_id=user.pk, owner_id__in=owner_ids, kind=TraderRelation.Kind.TRUSTED
        ).values_list("owner_id", flat=True)
    )


# --- account links (sock puppets) ---------------------------------------------------------------
# Accounts are linked when they share a device cookie, or an address that at most
# settings.LINK_IP_MAX_USERS accounts were seen at: a busier address is a carrier's NAT, an
# office or a café, and would link strangers. Linked accounts can't trade with each other, and
# their trades and feedback don't count toward each other's figures (escrow.selectors.stats).

Ref = int | OuterRef


def _deeper(ref: Ref) -> Ref:
    """The same outer field, seen from one subquery further in."""
    return OuterRef(ref) if isinstance(ref, OuterRef) else ref


def _linking(links: QuerySet[AccountLink], busy: int | None = None) -> QuerySet[AccountLink]:
    """Only the rows whose value links: a device, or a not-too-busy address (shared by at most
    `busy` accounts: settings.LINK_IP_MAX_USERS unless given)."""
    sharers = Subquery(
        AccountLink.objects.filter(kind=OuterRef("kind"), value_hash=OuterRef("value_hash"))
        .order_by()
        .values("kind")
        .annotate(n=Count("*"))
        .values("n"),
        output_field=IntegerField(),
    )
    return links.annotate(sharers=sharers).filter(
        Q(kind=AccountLink.Kind.DEVICE)
        | Q(sharers__lte=settings.LINK_IP_MAX_USERS if busy is None else busy)
    )


def _shared_links(*, user: Ref, other: Ref, busy: int | None = None) -> QuerySet[AccountLink]:
    """`user`'s link rows that `other` shares. Ids, or OuterRef to fields of the query that
    holds this one (escrow's stats ask about each trade's two parties)."""
    # (Q: the stubs don't know a lookup may take an OuterRef.)
    theirs = AccountLink.objects.filter(
        Q(user_id=_deeper(other)), kind=OuterRef("kind"), value_hash=OuterRef("value_hash")
    )
    return _linking(AccountLink.objects.filter(Q(user_id=user), Exists(theirs)), busy)


def accounts_linked_sql(*, user_field: str, other_field: str, busy: int | None = None) -> Exists:
    """accounts_linked in SQL, about two user-id fields of each row of the outer query: one
    subquery, so a page's figures take the same number of queries with or without it. `busy`:
    settings.LINK_IP_MAX_USERS, passed by a statement built once (common.prepared), whose
    parameters must all be its arguments."""
    return Exists(_shared_links(user=OuterRef(user_field), other=OuterRef(other_field), busy=busy))


# accounts_linked's question as one plain statement: every take asks it, and building the
# ORM's nested Exists/Subquery cost more than running it. The same rule as _shared_links and
# _linking (accounts/tests/test_links.py holds the two to the same answers).
_LINKED_SQL = """
SELECT EXISTS (
    SELECT 1 FROM accounts_accountlink mine
    WHERE mine.user_id = %(user)s
      AND EXISTS (
          SELECT 1 FROM accounts_accountlink theirs
          WHERE theirs.user_id = %(other)s
            AND theirs.kind = mine.kind AND theirs.value_hash = mine.value_hash
      )
      AND (
          mine.kind = %(device)s
          OR (
              SELECT count(*) FROM accounts_accountlink sharer
              WHERE sharer.kind = mine.kind AND sharer.value_hash = mine.value_hash
          ) <= %(busy)s
      )
)
"""


def accounts_linked(*, user_id: int, other_id: int) -> bool:
    """Do the two accounts share a device or a not-too-busy address?"""
    if user_id == other_id:
        return False
    params = {
        "user": user_id,
        "other": other_id,
        "device": AccountLink.Kind.DEVICE.value,
        "busy": settings.LINK_IP_MAX_USERS,
    }
    with connections[router.db_for_read(AccountLink)].cursor() as cursor:
        cursor.execute(_LINKED_SQL, params)
        row = cursor.fetchone()
    return bool(row and row[0])


def accounts_linked_orm(*, user_id: int, other_id: int) -> bool:
    """accounts_linked through the ORM's expression (accounts_linked_sql's), for the tests that
    hold the two to the same answers."""
    return user_id != other_id and _shared_links(user=user_id, other=other_id).exists()


def _links_of_others(*, user: Any) -> QuerySet[AccountLink]:
    mine = AccountLink.objects.filter(
        user_id=user.pk, kind=OuterRef("kind"), value_hash=OuterRef("value_hash")
    )
    return _linking(AccountLink.objects.exclude(user_id=user.pk).filter(Exists(mine)))


def linked_user_ids(*, user: Any) -> set[int]:
    """The other accounts linked to this one."""
    return set(_links_of_others(user=user).values_list("user_id", flat=True))


def linked_accounts_for_moderators(*, user: Any) -> list[tuple[str, list[str]]]:
    """(username, kinds of link) of each account linked to this one, for the admin: which
    signal linked them is for moderators only, never for the traders."""
    kinds: dict[str, set[str]] = {}
    for username, kind in _links_of_others(user=user).values_list("user__username", "kind"):
        kinds.setdefault(username, set()).add(kind)
    return [(name, sorted(kinds[name])) for name in sorted(kinds)]


# --- KYC documents ----------------------------------------------------------------------------


def kyc_document_list_for_user(*, user: Any) -> QuerySet[KycDocument]:
    return KycDocument.objects.filter(user=user).order_by("-created_at", "-id")


def kyc_document_for_download(*, document_id: int, user: Any) -> KycDocument:
    """A KYC document's file for its owner and for reviewers only; anyone else (other users,
    staff without `accounts.review_kyc`, anonymous visitors) gets not-found."""
    document = KycDocument.objects.filter(pk=document_id).first()
    allowed = (
        document is not None
        and user is not None
        and user.is_authenticated
        and (document.user_id == user.pk or user.has_perm("accounts.review_kyc"))
    )
    if document is None or not allowed or not document.file:
        raise NotFound(gettext("Document not found."))
    return document


@dataclass(frozen=True)
class LimitsStatus:
    """A user's limits and how much of the 30-day one is used, for the settings page."""

    current: TierLimits
    used_30_days: Decimal
    next: TierLimits | None

    @property
    def left_30_days(self) -> Decimal:
        return max(self.current.per_30_days - self.used_30_days, Decimal(0))


# Trades, and so their volume, are escrow's (a layer above): it registers how to count a user's
# last 30 days in EUR (escrow.selectors.trade_volume_eur) in EscrowConfig.ready().
_trade_volume_readers: list[Callable[..., dict[int, Decimal]]] = []


def trade_volume_reader_register(reader: Callable[..., dict[int, Decimal]]) -> None:
    _trade_volume_readers[:] = [reader]


def limits_status(*, user: Any) -> LimitsStatus:
    """The user's tier limits and how much of the 30-day one their trades used."""
    tier = profile_for(user).kyc_tier
    return LimitsStatus(
        current=kyc_limits(tier),
        used_30_days=_trade_volume_readers[0](user_ids=[user.pk])[user.pk],
        next=kyc_limits(tier + 1) if tier < 2 else None,
    )


# --- sessions ---------------------------------------------------------------------------------


def session_list_for_user(*, user: Any) -> list[Any]:
    """The user's live browser sessions (django.contrib.sessions rows), soonest to expire last.
    Sessions are not indexed by user: each live row is decoded once (fine at this size; a
    per-user index of sessions is the step up)."""
    user_id = str(user.pk)
    live = Session.objects.filter(expire_date__gt=timezone.now()).order_by("-expire_date")
    return [s for s in live.iterator() if s.get_decoded().get("_auth_user_id") == user_id]


def browser_session_list_for_user(*, user: Any) -> list[BrowserSession]:
    """The user's logged-in browsers (live sessions only), last seen first, each with `device`,
    a short description of its user agent."""
    live = Session.objects.filter(
        session_key=OuterRef("session_key"), expire_date__gt=timezone.now()
    )
    rows = list(BrowserSession.objects.filter(user_id=user.pk).filter(Exists(live)))
    for row in rows:
        row.device = device_summary(row.user_agent)  # type: ignore[attr-defined]
    return rows


_BROWSERS = (  # the first that matches names the browser (Edge and Opera say Chrome too)
    ("Edge", r"Edg(?:e|A|iOS)?/(\d+)"),
    ("Opera", r"(?:OPR|Opera)/(\d+)"),
    ("Samsung Internet", r"SamsungBrowser/(\d+)"),
    ("Firefox", r"(?:Firefox|FxiOS)/(\d+)"),
    ("Chrome", r"(?:HeadlessChrome|Chrome|CriOS)/(\d+)"),
    ("Safari", r"Version/(\d+)[.\d]* (?:Mobile/\S+ )?Safari/"),
)
_SYSTEMS = (
    ("iPhone", r"iPhone"),
    ("iPad", r"iPad"),
    ("Android", r"Android"),
    ("Windows", r"Windows"),
    ("ChromeOS", r"CrOS"),
    ("macOS", r"Mac OS X|Macintosh"),
    ("Linux", r"Linux|X11"),
)


def device_summary(user_agent: str) -> str:
    """A user agent as a person recognizes it: "Chrome 126 on Windows", "Safari 17 on iPhone";
    a program ("python-requests/2.32") by its first word; "Unknown device" when empty."""
    ua = (user_agent or "").strip()
    if not ua:
        return gettext("Unknown device")
    browser = next(
        (f"{name} {m.group(1)}" for name, pattern in _BROWSERS if (m := re.search(pattern, ua))),
        None,
    )
    system = next((name for name, pattern in _SYSTEMS if re.search(pattern, ua)), None)
    if browser and system:
        return gettext("{browser} on {system}").format(browser=browser, system=system)
    return browser or system or ua.split()[0][:60]


# --- the verified name (saved payment accounts must bear it) -----------------------------------


def verified_name_for(*, user_id: int) -> str:
    """The name on the user's approved identity document, or "" when none was verified."""
    name = Profile.objects.filter(user_id=user_id).values_list("verified_name", flat=True).first()
    return name or ""
