"""The read replica: which reads may go there, and the router that sends them (docs/scaling.md).

A read goes to the `replica` alias only when all of these hold:
- the view (or block) that makes it said so: `@replica_reads` on a read-only view whose readers
  accept a second of lag (the order book, public profiles, trade history lists, proofs of sealed
  entries). Nothing else is routed: a read that must see the caller's own writes (the trade room
  after an action, wallets) stays on the primary by default;
- it is not inside a transaction on the primary (then it must see that transaction's writes);
- its model belongs to the domain apps (never sessions, tokens, 2FA devices or lockouts: the
  views resolve the requesting user on the primary before the scope starts, and a just-written
  session must never be read stale and saved back);
- settings.READ_REPLICA (DATABASE_REPLICA_URL is set), the replica answers (a connection error
  keeps it out for REPLICA_RETRY_SECONDS: a circuit breaker, so each request does not wait for a
  timeout) and its replay lags at most REPLICA_MAX_LAG_SECONDS (measured at most every
  REPLICA_CHECK_SECONDS per process).

A view whose replica read fails half-way is run again on the primary (it is a read-only view), and
so is one that finds nothing there (a row a second old may not have reached the replica yet).
Writes always go to the primary, whatever an instance's `_state.db` says.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db import InterfaceError as DjangoInterfaceError
from django.db import OperationalError as DjangoOperationalError
from django.db.models import Model
from django.http import Http404
from rest_framework.exceptions import NotFound as ApiNotFound

from common.errors import NotFound

logger = logging.getLogger(__name__)

REPLICA = "replica"
# The apps whose rows may be read a second late. Not: sessions, authtoken, otp_*, axes, admin,
# contenttypes (authentication and its state are read on the primary, before the scope).
REPLICA_APP_LABELS = frozenset(
    {"auth", "accounts", "ledger", "marketplace", "escrow", "disputes", "lending"}
)

# Lag in seconds: 0 on a primary or a standby that has replayed all it received; otherwise the
# age of the last transaction it replayed. (A standby cut off from its primary receives nothing
# and looks current: monitor pg_stat_wal_receiver too, docs/scaling.md.)
LAG_SQL = """
SELECT CASE
    WHEN NOT pg_is_in_recovery() THEN 0
    WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
    ELSE COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()), 0)
END
"""


@dataclass
class _Scope:
    alias: str
    used: bool = False


_scope: ContextVar[_Scope | None] = ContextVar("replica_scope", default=None)


class _Health:
    """Per process: the replica's last measured state and the circuit breaker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down_until = 0.0
        self.checked_at = float("-inf")
        self.usable = False
        self.checking = False
        self.reason = ""

    def reset(self) -> None:
        with self.lock:
            self.__init__()  # type: ignore[misc]


health = _Health()


def _measure_lag() -> float:
    with connections[REPLICA].cursor() as cursor:
        cursor.execute(LAG_SQL)
        row = cursor.fetchone()
    return float(row[0]) if row and row[0] is not None else 0.0


def replica_failed(exc: BaseException) -> None:
    """The replica's connection failed: keep reads off it for REPLICA_RETRY_SECONDS."""
    with health.lock:
        first = time.monotonic() >= health.down_until
        health.down_until = time.monotonic() + settings.REPLICA_RETRY_SECONDS
        health.usable = False
        health.checked_at = float("-inf")
        health.reason = "down"
    if first:
        logger.warning(
            "read replica unavailable, reading from the primary for %ss: %s",
            settings.REPLICA_RETRY_SECONDS,
            exc,
        )
    with suppress(DatabaseError):
        connections[REPLICA].close()


def replica_alias() -> str:
    """`replica` when it is configured, answers and is within the lag bound; else `default`."""
    if not settings.READ_REPLICA:
        return DEFAULT_DB_ALIAS
    now = time.monotonic()
    with health.lock:
        if now < health.down_until:
            return DEFAULT_DB_ALIAS
        fresh = now - health.checked_at < settings.REPLICA_CHECK_SECONDS
        if fresh or health.checking:
            # another thread is measuring: go by the last answer rather than wait for it
            return REPLICA if health.usable else DEFAULT_DB_ALIAS
        health.checking = True
    try:
        lag = _measure_lag()
    except DatabaseError as exc:
        with health.lock:
            health.checking = False
        replica_failed(exc)
        return DEFAULT_DB_ALIAS
    usable = lag <= settings.REPLICA_MAX_LAG_SECONDS
    with health.lock:
        was, health.usable = health.reason, usable
        health.reason = "ok" if usable else "lagging"
        health.checked_at = time.monotonic()
        health.checking = False
    if health.reason != was and was:
        log = logger.info if usable else logger.warning
        log("read replica %s (replay lag %.1fs)", health.reason, lag)
    return REPLICA if usable else DEFAULT_DB_ALIAS


@contextmanager
def reads_from_replica(alias: str | None = None) -> Iterator[_Scope]:
    """Reads in this block may come from the replica (see the module's rules)."""
    scope = _Scope(alias=alias or replica_alias())
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def _resolve_user(args: tuple[Any, ...]) -> None:
    # The requesting user (session, token, 2FA device) is read before the scope: on the primary.
    for arg in args[:2]:
        if hasattr(arg, "user") and hasattr(arg, "META"):
            getattr(arg.user, "pk", None)
            return


def _rendered(response: Any) -> Any:
    # A TemplateResponse renders after the view returns: render it inside the scope. (A DRF
    # Response has no template and its data is built already; DRF renders it later.)
    if getattr(response, "template_name", None) and not response.is_rendered:
        response.render()
    return response


View = TypeVar("View", bound=Callable[..., Any])


def replica_reads(view: View) -> View:
    """Marks a read-only view (or a DRF handler method) whose reads may lag by a second."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _resolve_user(args)
        with reads_from_replica() as scope:
            try:
                return _rendered(view(*args, **kwargs))
            except (DjangoOperationalError, DjangoInterfaceError) as exc:
                if not scope.used:
                    raise
                # The replica died under this read: once more, on the primary.
                replica_failed(exc)
            except (Http404, NotFound, ApiNotFound):
                if not scope.used:
                    raise
                # Not there yet, perhaps: the primary has the last word.
        with reads_from_replica(DEFAULT_DB_ALIAS):
            return _rendered(view(*args, **kwargs))

    return cast(View, wrapped)


class ReplicaRouter:
    """Sends the reads of a `replica_reads` scope to the replica; everything else to `default`."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        scope = _scope.get()
        if (
            scope is None
            or scope.alias == DEFAULT_DB_ALIAS
            or model._meta.app_label not in REPLICA_APP_LABELS
            or connections[DEFAULT_DB_ALIAS].in_atomic_block
        ):
            # Explicitly the primary: an instance read on the replica must not pull its
            # related rows from there outside the scope.
            return DEFAULT_DB_ALIAS
        scope.used = True
        return scope.alias

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        # Same rows on both: an object read on the replica may point at one from the primary.
        if {obj1._state.db, obj2._state.db} <= {DEFAULT_DB_ALIAS, REPLICA, None}:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        # The replica is a read-only copy: migrations run on the primary and stream to it. The
        # `direct` alias (session locks) is the primary itself, reached around PgBouncer.
        return False if db in (REPLICA, "direct") else None


# --- session locks --------------------------------------------------------------------------------

SESSION_LOCK_ALIAS = "direct"


@contextmanager
def session_lock(key: int) -> Iterator[bool]:
    """A PostgreSQL session advisory lock (`pg_try_advisory_lock`) held for the block: yields
    whether it was free. A session lock belongs to one server session, so behind PgBouncer in
    transaction mode (DATABASE_BEHIND_PGBOUNCER) it must not go through `default`, whose server
    connection changes hands between transactions: with DATABASE_DIRECT_URL set it is taken on
    the `direct` alias (straight to PostgreSQL, no pool, closed at the end of the request or
    task), else on `default`. A process that dies loses the lock with its connection."""
    alias = SESSION_LOCK_ALIAS if SESSION_LOCK_ALIAS in settings.DATABASES else DEFAULT_DB_ALIAS
    conn = connections[alias]
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
        held = bool(cursor.fetchone()[0])
    try:
        yield held
    finally:
        if held:
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
