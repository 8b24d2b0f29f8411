"""Who is asking: the client's address, told apart from what the client claims about itself."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in trusted if e.strip())


def _parse(value: str) -> Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _is_trusted(address: Address | None, networks: tuple[Network, ...]) -> bool:
    return address is not None and any(address in network for network in networks)


def client_ip(request: Any) -> str:
    """The address of the client: REMOTE_ADDR, unless that is one of settings.TRUSTED_PROXIES;
    then X-Forwarded-For read from the right (each proxy appends the address it saw), skipping
    the trusted proxies, up to the first address no trusted proxy is. Entries further left are
    the client's own claims and never count. Every reader of addresses (the rate limits, the
    login lockout, account links) asks here, so a forged header moves none of them."""
    remote = request.META.get("REMOTE_ADDR", "") or ""
    networks = _networks(tuple(getattr(settings, "TRUSTED_PROXIES", ())))
    if not _is_trusted(_parse(remote), networks):
        return remote
    client = remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    for hop in reversed([h for h in forwarded.split(",") if h.strip()]):
        address = _parse(hop)
        if address is None:
            # Not an address where a trusted proxy's entry should be: believe none of the rest.
            break
        client = str(address)
        if not _is_trusted(address, networks):
            break
    return client
