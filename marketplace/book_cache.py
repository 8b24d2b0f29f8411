"""The order book's public part from the cache (issue 17).

What every viewer sees alike on a page of the book (its offers, for one side, asset, fiat and
payment-method filter, with the makers' stats) is cached in Redis; what depends on the viewer is
applied after the cache: blocked makers left out, the offers' requirements checked against the
viewer, the viewer's own offers marked (the API's and the page's callers do that).

Freshness, without scanning or deleting keys:

- a version counter per book (side, asset, fiat), and one for every book at once, bumped by the
  services that change an offer (create, edit, pause, delete, a take, a cancel giving back, a
  close) or the price index, both at once and again on commit (a reader between the two cannot
  keep what it read before the commit). An entry remembers the version it was built at, and a
  reader that finds another version builds it afresh; the version and the entry come in one
  round trip (MGET);
- ORDER_BOOK_CACHE_SECONDS (1 s) as the backstop for what no offer service announces: a maker's
  balance (the depth shown), a maker frozen or suspended. So a paused, deleted or exhausted
  offer is never shown for more than a second, and usually not at all.

Everything fails open: with Redis down, the book is read from PostgreSQL as before."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction

from common import hotcache

ALL_BOOKS = "book:v:all"


def version_key(*, side: str, asset_id: int, fiat_id: int) -> str:
    return f"book:v:{side}:{asset_id}:{fiat_id}"


def book_changed(*, side: str | None, asset_id: int, fiat_id: int) -> None:
    """An offer of this book (both sides when `side` is None) or its pair's index price
    changed: readers build the book afresh, now and once the change commits."""
    sides = [side] if side else ["buy", "sell"]
    keys = [version_key(side=s, asset_id=asset_id, fiat_id=fiat_id) for s in sides] + [ALL_BOOKS]

    def bump() -> None:
        hotcache.incr_many(keys)

    bump()
    transaction.on_commit(bump)


def offer_changed(offer: Any) -> None:
    book_changed(side=offer.side, asset_id=offer.asset_id, fiat_id=offer.fiat_id)


def cached(
    *, book: tuple[str, int, int] | None, variant: str, build: Callable[[], Any]
) -> tuple[Any, bool]:
    """The public part of one book page: from the cache when built at the book's current
    version, else `build()` (stored for ORDER_BOOK_CACHE_SECONDS). `book` is (side, asset id,
    fiat id), or None for a page across books; `variant` names everything else the page depends
    on (filters, page, format). Returns (value, was it a hit)."""
    value, hit, _ = cached_with(book=book, variant=variant, build=build)
    return value, hit


def cached_with(
    *,
    book: tuple[str, int, int] | None,
    variant: str,
    build: Callable[[], Any],
    also: list[str] | None = None,
) -> tuple[Any, bool, dict[str, Any]]:
    """`cached`, and the cache keys `also` read in the same round trip (the API's book reads
    the viewer's blocked set with its page: one MGET for both). Returns (value, was it a hit,
    {key of `also`: its value, where present})."""
    vkey = version_key(side=book[0], asset_id=book[1], fiat_id=book[2]) if book else ALL_BOOKS
    ekey = "book:page:" + hashlib.sha256(f"{vkey}|{variant}".encode()).hexdigest()[:32]
    got = hotcache.get_many([vkey, ekey, *(also or [])])
    extra = {k: got[k] for k in also or [] if k in got}
    version = got.get(vkey)
    entry = got.get(ekey)
    if entry is not None and entry[0] == version:
        return entry[1], True, extra
    value = build()
    timeout = int(getattr(settings, "ORDER_BOOK_CACHE_SECONDS", 1))
    if timeout > 0:
        hotcache.set(ekey, (version, value), timeout)
    return value, False, extra
