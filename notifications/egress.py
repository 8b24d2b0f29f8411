"""Where a webhook may be sent: the address policy that keeps a user's URL from reaching inside
(cloud metadata, Redis, PostgreSQL, the admin on a private network).

Pure functions, no Django: `check_url` parses a URL, resolves its host through `resolve` (tests
replace it with a stub, so no test asks a real DNS server) and refuses it if ANY resolved address
is not a public unicast one. The caller connects to the address that was checked, never to the
name again, so a DNS answer that changes between the check and the connection (rebinding) gains
nothing."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

DEFAULT_PORTS = {"http": 80, "https": 443}
# Not global, yet Python's is_private leaves it out: carrier-grade NAT (RFC 6598).
SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
# :: and ::1, and the deprecated IPv4-compatible ::a.b.c.d, which some stacks still route to the
# IPv4 host inside.
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# NAT64's well-known prefix (RFC 6052): on a network with a NAT64 gateway, 64:ff9b::10.0.0.1
# is 10.0.0.1.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class EgressRefused(Exception):
    """A URL webhooks may not be sent to. `reason` is a fixed class ("refused_address",
    "scheme", "invalid_url", "dns_error"); the message is for the person who registered it."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ResolvedTarget:
    """A URL whose every address passed the policy: connect to `address`, speak to `host`."""

    scheme: str
    host: str
    port: int
    # Path and query as sent in the request line (the fragment never leaves the client).
    target: str
    addresses: tuple[IPAddress, ...]

    @property
    def address(self) -> IPAddress:
        return self.addresses[0]

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == DEFAULT_PORTS[self.scheme] else f"{name}:{self.port}"


def resolve(host: str, port: int) -> list[str]:
    """Every address the host name resolves to (A and AAAA), as the system resolver answers."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def address_refused(address: IPAddress, *, allow_loopback: bool = False) -> bool:
    """True for anything but a public unicast address: loopback, private, link-local, multicast,
    reserved, unspecified, shared (100.64/10), and IPv6 forms that carry such an IPv4 address."""
    if allow_loopback and address.is_loopback:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        if address in IPV4_COMPATIBLE:
            return True  # ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d
        embedded = _embedded_ipv4(address)
        if embedded is not None and address_refused(embedded):
            return True
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address in SHARED_ADDRESS_SPACE
        or not address.is_global
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 host an IPv6 address leads to: mapped, 6to4, Teredo (the client), NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def check_url(
    url: str,
    *,
    allow_http: bool = False,
    allow_loopback: bool = False,
    resolver: Resolver | None = None,
) -> ResolvedTarget:
    """Parse, resolve and check a webhook URL; raise EgressRefused unless every address the host
    resolves to is allowed. `allow_loopback` exists for tests that run their own receiver."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise EgressRefused("invalid_url", "Enter an https:// URL.")
    if scheme == "http" and not allow_http:
        raise EgressRefused("scheme", "webhooks are sent over https:// only.")
    try:
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise EgressRefused("invalid_url", "Enter a valid URL.") from None
    if not host or parts.username is not None or parts.password is not None:
        raise EgressRefused("invalid_url", "Enter a valid URL (a host name, no user or password).")
    literal = _ip_literal(host)
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
    else:
        try:
            # What DNS, the Host header and TLS all see for an internationalised name.
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise EgressRefused("invalid_url", "Enter a valid host name.") from None
        addresses = _resolve_checked(host, port, resolver or resolve)
    refused = [a for a in addresses if address_refused(a, allow_loopback=allow_loopback)]
    if refused:
        # An address the user typed is theirs to see; what an internal name resolves to is not.
        shown = str(literal) if literal is not None else f"{host} resolves to one"
        raise EgressRefused(
            "refused_address",
            f"webhooks cannot be sent to private or internal addresses ({shown}).",
        )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return ResolvedTarget(
        scheme=scheme, host=host.lower(), port=port, target=target, addresses=addresses
    )


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _resolve_checked(host: str, port: int, resolver: Resolver) -> tuple[IPAddress, ...]:
    try:
        answers = list(resolver(host, port))
    except (OSError, UnicodeError):
        raise EgressRefused("dns_error", f"the host name {host} could not be resolved.") from None
    addresses: list[IPAddress] = []
    for answer in answers:
        # getaddrinfo writes a link-local IPv6 address with its zone ("fe80::1%eth0").
        address = ipaddress.ip_address(answer.split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise EgressRefused("dns_error", f"the host name {host} could not be resolved.")
    return tuple(addresses)
