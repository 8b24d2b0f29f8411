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

A take changes only how much is left of one offer (and of its maker's others, whose depth is
the maker's balance): it does not bump the book's version but appends "offer.maker" to the book's
change log (`offer_taken`: a plain Redis string of the latest changes, each with its number, at
once and on commit like the bumps). An entry remembers the log's last number
when it was built; a reader that finds later changes gives them to the caller's `patch`, which
reads again from PostgreSQL only the page's rows of those offers and makers (the API's book: one
statement for a few rows, instead of the whole page rebuilt after every take), and stores the
patched page for what is left of the entry's life, never longer. A caller without `patch` (the
HTML pages), a row that left the book, or a log that lost changes (begun again once it grew to
LOG_BYTES, or after it expired) build the page afresh as before.

Everything fails open: with Redis down, the book is read from PostgreSQL as before."""

from __future__ import annotations

import hashlib
import time
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


def log_key(*, side: str, asset_id: int, fiat_id: int) -> str:
    return f"book:log:{side}:{asset_id}:{fiat_id}"


def _counter_key(lkey: str) -> str:
    return lkey + ":n"


# How long a log may grow before it begins again (keeping its numbering): ~100 changes, a few
# seconds of takes on the busiest book; a page built before a new beginning is built afresh
# once. An entry lives ORDER_BOOK_CACHE_SECONDS, the log LOG_SECONDS after its last change.
LOG_BYTES = 2048
LOG_SECONDS = 60

# KEYS[1] the log, KEYS[2] its counter, KEYS[3..] counters to bump as incr_many does; ARGV: a
# first number for a new counter (the time in microseconds: above any number an older one
# gave), the change, LOG_BYTES, LOG_SECONDS. The log: "<n>=<offer>.<maker>;" per change, oldest
# first. Redis's own APPEND and INCR: string work in Lua costs far more (0.4 ms of Redis CPU a
# change on a 200-change log, measured).
_APPEND_LUA = """
local seq = redis.call('INCR', KEYS[2])
if seq == 1 then
    seq = tonumber(ARGV[1])
    redis.call('SET', KEYS[2], ARGV[1])
end
local item = string.format('%d', seq) .. '=' .. ARGV[2] .. ';'
if redis.call('APPEND', KEYS[1], item) > tonumber(ARGV[3]) then
    redis.call('SET', KEYS[1], item)
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
for i = 3, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then
        redis.call('INCR', KEYS[i])
    else
        redis.call('SET', KEYS[i], ARGV[1])
    end
end
return seq
"""

# A log begun by a reader (KEYS as above, no counters to bump), unless one exists: its number.
_BEGIN_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
local seq = redis.call('INCR', KEYS[2])
if seq == 1 then
    seq = tonumber(ARGV[1])
    redis.call('SET', KEYS[2], ARGV[1])
end
redis.call('SET', KEYS[1], string.format('%d', seq) .. '=0.0;', 'EX', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return seq
"""


def offer_taken(offer: Any) -> None:
    """A take left less of `offer` (and of its maker's balance): its book's readers patch those
    rows (`cached_with`'s `patch`) instead of rebuilding the page, now and once the take
    commits. Pages across books are rebuilt (their version is bumped). With a cache that is not
    Redis, as offer_changed; with Redis failing, nothing more is tried (a bump would fail the
    same way, and wait as long): the entries' second bounds what they show."""
    if hotcache.raw_client() is None:
        offer_changed(offer)
        return
    lkey = log_key(side=offer.side, asset_id=offer.asset_id, fiat_id=offer.fiat_id)
    change = f"{int(offer.pk)}.{int(offer.maker_id)}"

    def append() -> None:
        args = [time.time_ns() // 1000, change, LOG_BYTES, LOG_SECONDS]
        hotcache.run_script(_APPEND_LUA, [lkey, _counter_key(lkey), ALL_BOOKS], args)

    append()
    transaction.on_commit(append)


def _changes_after(log: bytes | None, seen: int) -> tuple[set[int], set[int]] | None:
    """The offers and makers a log names after change number `seen` (0: there was no log when
    the entry was built), or None when some may be missing from it."""
    if log is None:
        return (set(), set()) if seen == 0 else None
    if seen == 0:
        return None  # a log begun after the entry: some of its first changes may be gone
    last = _last_number(log)
    if last == seen:
        return set(), set()
    # Numbers are consecutive within a log: the first change after `seen` is seen + 1.
    mark = b"%d=" % (seen + 1)
    if log.startswith(mark):
        start = 0
    else:
        at = log.find(b";" + mark)
        if last < seen or at < 0:
            return None  # begun again past the entry, or expired between
        start = at + 1
    offers: set[int] = set()
    makers: set[int] = set()
    for item in log[start:-1].split(b";"):
        offer, _, maker = item.partition(b"=")[2].partition(b".")
        offers.add(int(offer))
        makers.add(int(maker))
    return offers, makers


def _last_number(log: bytes | None) -> int:
    if not log:
        return 0
    return int(log[:-1].rsplit(b";", 1)[-1].partition(b"=")[0])


def cached(
    *, book: tuple[str, int, int] | None, variant: str, build: Callable[[], Any]
) -> tuple[Any, bool]:
    """The public part of one book page: from the cache when built at the book's current
    version, else `build()` (stored for ORDER_BOOK_CACHE_SECONDS). `book` is (side, asset id,
    fiat id), or None for a page across books; `variant` names everything else the page depends
    on (filters, page, format). Returns (value, was it a hit)."""
    value, hit, _ = cached_with(book=book, variant=variant, build=build)
    return value, hit


Patch = Callable[[Any, set[int], set[int]], Any]


def cached_with(
    *,
    book: tuple[str, int, int] | None,
    variant: str,
    build: Callable[[], Any],
    also: list[str] | None = None,
    patch: Patch | None = None,
) -> tuple[Any, bool, dict[str, Any]]:
    """`cached`, and the cache keys `also` read in the same round trip (the API's book reads
    the viewer's blocked set with its page: one MGET for both). With `patch`, a page that takes
    changed since it was built is `patch(page, offer ids, maker ids)` (None: build it afresh;
    the page itself: none of its rows changed, and it is not stored again).
    Returns (value, was it a hit, {key of `also`: its value, where present})."""
    vkey = version_key(side=book[0], asset_id=book[1], fiat_id=book[2]) if book else ALL_BOOKS
    lkey = log_key(side=book[0], asset_id=book[1], fiat_id=book[2]) if book else None
    ekey = "book:page:" + hashlib.sha256(f"{vkey}|{variant}".encode()).hexdigest()[:32]
    timeout = int(getattr(settings, "ORDER_BOOK_CACHE_SECONDS", 1))
    keys = [vkey, ekey, *(also or [])]
    raw = hotcache.get_many_raw([*keys, lkey]) if lkey else None
    if raw is None:  # no Redis, or no log for this page: as before the log
        got = hotcache.get_many(keys)
        log: bytes | None = None
    else:
        got = {k: hotcache.loads(v) for k, v in zip(keys, raw, strict=False) if v is not None}
        log = raw[-1]
    extra = {k: got[k] for k in also or [] if k in got}
    version = got.get(vkey)
    entry = got.get(ekey)
    now = time.time()
    if entry is not None and len(entry) == 4 and entry[0] == version:
        _, seen, built_at, value = entry
        changed = _changes_after(log, seen) if lkey else (set(), set())
        if changed is not None and not changed[0]:
            return value, True, extra
        if changed is not None and patch is not None:
            patched = patch(value, *changed)
            if patched is value:  # none of the changes is on this page: nothing to store
                return value, True, extra
            if patched is not None:
                left_ms = int((built_at + timeout - now) * 1000)
                hotcache.set_ms(ekey, (version, _last_number(log), built_at, patched), left_ms)
                return patched, False, extra
    seen = _last_number(log)
    if lkey and raw is not None and log is None and timeout > 0:
        seen = _begin_log(lkey)
    value = build()
    if timeout > 0:
        hotcache.set(ekey, (version, seen, now, value), timeout)
    return value, False, extra


def _begin_log(lkey: str) -> int:
    """A log for a book that has none (no take for LOG_SECONDS), begun before a page is built
    so the page knows where the takes after it start (else the next take would rebuild it):
    its first change names no offer. The number, or 0 when another process began it first."""
    keys = [lkey, _counter_key(lkey)]
    began = hotcache.run_script(_BEGIN_LUA, keys, [time.time_ns() // 1000, LOG_SECONDS])
    return int(began or 0)
