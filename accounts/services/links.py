"""Account links: the addresses and device cookies accounts were seen with at signup and login,
kept as keyed hashes (docs: accounts.models.AccountLink)."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from django.utils.crypto import salted_hmac

from accounts.models import AccountLink

logger = logging.getLogger(__name__)


def link_value_hash(*, kind: str, value: str) -> str:
    """HMAC-SHA256 of the value under a key derived from SECRET_KEY: equal values give equal
    hashes, and nobody without the key can tell an address from its hash by trying them all
    (IPv4 has only 2^32). Rotating SECRET_KEY starts the links afresh."""
    return salted_hmac("accounts.AccountLink", f"{kind}:{value}", algorithm="sha256").hexdigest()


def _linkable_ip(ip: str | None) -> str | None:
    try:
        address = ipaddress.ip_address((ip or "").strip())
    except ValueError:
        return None
    # The machine itself (health checks, `make run`, tests) is nobody's address.
    return None if address.is_loopback or address.is_unspecified else str(address)


def account_links_record(*, user: Any, ip: str | None, device: str | None) -> None:
    """Remember that the user was seen at this address and on this device: one row per value,
    its last_seen moved on, in one statement."""
    values: list[tuple[str, str]] = []
    if (address := _linkable_ip(ip)) is not None:
        values.append((AccountLink.Kind.IP, address))
    if device:
        values.append((AccountLink.Kind.DEVICE, device))
    if not values:
        return
    now = timezone.now()
    AccountLink.objects.bulk_create(
        [
            AccountLink(
                user_id=user.pk,
                kind=kind,
                value_hash=link_value_hash(kind=kind, value=value),
                first_seen=now,
                last_seen=now,
            )
            for kind, value in values
        ],
        update_conflicts=True,
        unique_fields=["user", "kind", "value_hash"],
        update_fields=["last_seen"],
    )


def signup_allowed(*, address: str) -> bool:
    """Counts a sign-up from this client address; False once SIGNUP_PER_ADDRESS_PER_HOUR were
    counted in the hour (ten accounts in 1.2 s from one address was the probe). The counter
    lives in the cache: if the cache is down, sign-ups go on."""
    limit = settings.SIGNUP_PER_ADDRESS_PER_HOUR
    if not limit or not address:
        return True
    key = f"signups:{salted_hmac('signup-address', address).hexdigest()[:32]}"
    try:
        cache.add(key, 0, timeout=3600)
        count = cache.incr(key)
    except Exception:  # Redis down or stalled: fail open, as the API throttles do
        logger.warning("sign-up throttle skipped: the cache is unavailable", exc_info=True)
        return True
    return bool(count <= limit)
