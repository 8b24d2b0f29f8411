"""Settlement: the outbox rows a release, refund or split queued, claimed in batches by Celery
workers (FOR UPDATE SKIP LOCKED) and posted on the ledger exactly once; a settlement that keeps
failing goes to `failed`, the moderators' queue, and back to pending by their retry.

Longer than most modules on purpose: the set-based batch (SQL) and the careful one-by-one path
settle the same rules and must change together, so they live side by side."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, NamedTuple, cast

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext

from common.errors import InvalidTransition, NotFound
from common.transactions import durable_atomic
from escrow.models import EscrowEvent, Settlement, Trade
from escrow.services import transitions
from escrow.services.transitions import (
    SYSTEM,
    TRANSITIONS,
    S,
    _announce_failed,
    _escrow_transition,
    _require_moderator,
    announce_many,
)
from ledger import services as ledger
from ledger.models import LedgerAccount, Transfer
from ledger.services.transfers import transfers_post_select as ledger_transfers_post_select

logger = logging.getLogger(__name__)

# --- settlement -------------------------------------------------------------------------------


class _Claim(NamedTuple):
    """A claimed settlement, as read (a tuple, not a model: batches are thousands of rows)."""

    pk: int
    trade_id: int
    kind: str
    buyer_amount: Decimal | None


_CLAIM_FIELDS = ("pk", "trade_id", "kind", "buyer_amount")

# Database errors that say nothing about the settlement itself (a lost connection, a lock or
# statement timeout, a deadlock, a serialization failure): raised out of the claim, so that the
# whole claim rolls back and the task retries it with backoff; never counted as an attempt.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)


def _due() -> Q:
    """Pending, and not failed within SETTLEMENT_REQUEUE_AFTER: a settlement that has just failed
    is tried again by its own message (the sweeper's), not by every batch that comes along, which
    under a backlog would spend its SETTLEMENT_MAX_ATTEMPTS within seconds."""
    cutoff = timezone.now() - settings.SETTLEMENT_REQUEUE_AFTER
    return Q(status=Settlement.Status.PENDING) & (
        Q(last_attempt_at__isnull=True) | Q(last_attempt_at__lt=cutoff)
    )


def settlement_execute(*, settlement_id: int, batch_size: int = 1) -> int:
    """Settle this settlement, plus up to batch_size - 1 other pending ones that no other worker
    holds (FOR UPDATE SKIP LOCKED), in one transaction; each exactly once, safe to re-run.
    Returns how many were settled."""
    with durable_atomic():
        # This one first (waiting if another worker has it: then it is done when we get it)...
        claimed = [
            _Claim(*row)
            for row in Settlement.objects.select_for_update()
            .filter(pk=settlement_id, status=Settlement.Status.PENDING)
            .values_list(*_CLAIM_FIELDS)
        ]
        if batch_size > 1:
            # ... then whatever else is pending and free, so busy workers share the backlog.
            claimed += [
                _Claim(*row)
                for row in Settlement.objects.select_for_update(skip_locked=True)
                .filter(_due())
                .exclude(pk=settlement_id)
                .order_by("queued_at", "pk")
                .values_list(*_CLAIM_FIELDS)[: batch_size - 1]
            ]
        return _settle_claimed(claimed)


def settlements_execute_many(*, settlement_ids: list[int], batch_size: int = 1) -> int:
    """Settle those of these settlements that are still pending (waiting for any that another
    worker holds: then it is done when we get it), plus other pending ones that no other worker
    holds (FOR UPDATE SKIP LOCKED) up to batch_size in all, in one transaction; each exactly
    once, safe to re-run. The batched form of settlement_execute, for the ids that many releases
    published together (common.outbox coalesces them). Returns how many were settled."""
    ids = sorted(set(settlement_ids))
    if not ids:
        return 0
    with durable_atomic():
        # These first, locked in pk order (two workers holding overlapping lists queue instead
        # of deadlocking)...
        claimed = [
            _Claim(*row)
            for row in Settlement.objects.select_for_update()
            .filter(pk__in=ids, status=Settlement.Status.PENDING)
            .order_by("pk")
            .values_list(*_CLAIM_FIELDS)
        ]
        if batch_size > len(claimed):
            # ... then whatever else is pending and free, so busy workers share the backlog.
            claimed += [
                _Claim(*row)
                for row in Settlement.objects.select_for_update(skip_locked=True)
                .filter(_due())
                .exclude(pk__in=ids)
                .order_by("queued_at", "pk")
                .values_list(*_CLAIM_FIELDS)[: batch_size - len(claimed)]
            ]
        return _settle_claimed(claimed)


def settlements_execute_pending(*, batch_size: int = 200) -> int:
    """Claim a batch of pending settlements no other worker holds and settle them together."""
    with durable_atomic():
        claimed = [
            _Claim(*row)
            for row in Settlement.objects.select_for_update(skip_locked=True)
            .filter(_due())
            .order_by("queued_at", "pk")
            .values_list(*_CLAIM_FIELDS)[:batch_size]
        ]
        return _settle_claimed(claimed)


def _settle_claimed(claimed: list[_Claim]) -> int:
    if not claimed:
        return 0
    rest = claimed
    settled = 0
    if connection.vendor == "postgresql":
        try:
            # A savepoint: should the database refuse any part of the batch (a hold resolved
            # already, an overdraft), nothing of it stays and the one-by-one path sorts it out.
            with transaction.atomic():
                settled, rest = _settle_batch(claimed)
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            # Not only IntegrityError: whatever else breaks the batch (a DataError, a bug) is
            # also sorted out one by one, where each settlement's failure is counted, instead of
            # failing the whole claim again on every run, with nothing counted.
            logger.warning(
                "batch of %s settlements refused (%s); settling one by one",
                len(claimed),
                type(exc).__name__,
                exc_info=True,
            )
            settled, rest = 0, claimed
    return settled + _settle_one_by_one(rest)


# A settlement's kind -> (the state it settles, the final state): system moves of TRANSITIONS.
_SETTLING: dict[str, tuple[str, str]] = {
    Settlement.Kind.RELEASE: (S.RELEASING, S.COMPLETED),
    Settlement.Kind.REFUND: (S.REFUNDING, S.REFUNDED),
    Settlement.Kind.SPLIT: (S.SPLITTING, S.SPLIT),
}
assert all(SYSTEM in TRANSITIONS[move] for move in _SETTLING.values())


_EVENT_FIELDS = [f.attname for f in EscrowEvent._meta.concrete_fields]
assert _EVENT_FIELDS == [
    "id", "trade_id", "old_state", "new_state", "actor_id", "actor_role", "reason", "created_at",
    "announced",
], _EVENT_FIELDS  # fmt: skip


def _pg_array(values: Any) -> str:
    """A PostgreSQL array literal of ints, Decimals, None or plain words, for `%s::type[]`:
    building the text is far cheaper than having the driver adapt every element."""
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


# The transfers of a settlement, as _settle_one posts them, for every settlement of a batch at
# once: a release posts the hold and pays the buyer the amount less the buyer's fee, the fees
# (both sides') to the fee account; a split with a share posts the share of the hold and pays it
# out; a refund (or a split without a share) voids the hold. Same keys, kinds and flags.
_SETTLEMENT_TRANSFERS = """
    SELECT 'trade:' || t.id || ':' || x.step AS idempotency_key, t.asset_id,
           x.debit AS debit_account_id, x.credit AS credit_account_id, x.amount, x.kind, x.flags,
           x.pending_id, t.id AS reference, '' AS memo, x.released, u.n * 4 + x.n AS ord
    FROM unnest(%(trades)s::bigint[], %(kinds)s::text[], %(shares)s::numeric[],
                %(buyer_accounts)s::bigint[], %(fee_accounts)s::bigint[])
         WITH ORDINALITY AS u(trade_id, settles, share, buyer_account, fee_account, n)
    JOIN escrow_trade t ON t.id = u.trade_id
    JOIN ledger_transfer h ON h.id = t.escrow_hold_id
    CROSS JOIN LATERAL (
        SELECT CASE WHEN u.settles = %(release)s THEN h.amount ELSE u.share END,
               CASE WHEN u.settles = %(release)s THEN t.amount - t.buyer_fee ELSE u.share END,
               CASE WHEN u.settles = %(release)s THEN t.buyer_fee + t.seller_fee ELSE 0 END
    ) AS m(posted, payout, fee)
    CROSS JOIN LATERAL (VALUES
        (0, 'post', h.debit_account_id, h.credit_account_id, m.posted, h.kind, %(post)s, h.id,
         h.amount),
        (1, 'payout', h.credit_account_id, u.buyer_account, m.payout, %(payout_kind)s,
         %(single)s, NULL::bigint, NULL::numeric),
        (2, 'fee', h.credit_account_id, u.fee_account, m.fee, %(fee_kind)s, %(single)s, NULL,
         NULL),
        (3, 'void', h.debit_account_id, h.credit_account_id, h.amount, h.kind, %(void)s, h.id,
         h.amount)
    ) AS x(n, step, debit, credit, amount, kind, flags, pending_id, released)
    WHERE CASE WHEN m.posted > 0 THEN x.n < 2 OR (x.n = 2 AND m.fee > 0) ELSE x.n = 3 END
"""


def _settle_batch(claimed: list[_Claim]) -> tuple[int, list[_Claim]]:
    """Settle a claimed batch with a constant number of statements (PostgreSQL) and no Python
    object per row: the trades locked in pk order, moved to their final state with one audit
    event each, the outbox rows marked done, then every ledger transfer built and posted in SQL
    (ledger transfers_post_select: one INSERT, one UPDATE of the balances, the accounts locked
    last). The same moves, keys and rows as _settle_one, which handles whatever does not fit
    here (returned as the rest)."""
    by_trade = {c.trade_id: c for c in claimed}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT t.id, t.state, t.buyer_id, t.asset_id, h.flags, h.amount, h.debit_account_id
            FROM escrow_trade t JOIN ledger_transfer h ON h.id = t.escrow_hold_id
            WHERE t.id = ANY(%s::bigint[]) ORDER BY t.id FOR UPDATE OF t
            """,
            [_pg_array(sorted(by_trade))],
        )
        rows = cursor.fetchall()
    locked = {row[0] for row in rows}
    rest = [c for c in claimed if c.trade_id not in locked]
    fits: list[tuple[_Claim, int, int]] = []  # (settlement, buyer id, asset id), in trade order
    sellers = set()
    for trade_id, state, buyer_id, asset_id, hold_flags, held, seller_account in rows:
        c = by_trade[trade_id]
        if (
            state != _SETTLING[c.kind][0]
            or hold_flags != Transfer.Flags.PENDING
            or (c.kind == Settlement.Kind.SPLIT and not (0 <= (c.buyer_amount or 0) <= held))
        ):
            rest.append(c)
        else:
            fits.append((c, buyer_id, asset_id))
            sellers.add(seller_account)
    if not fits:
        return 0, rest
    buyers = ledger.accounts_for_users({(b, a) for _, b, a in fits})
    fees = ledger.accounts_fees({a for _, _, a in fits})
    now = timezone.now()
    trades = _pg_array(c.trade_id for c, _, _ in fits)
    kinds = _pg_array(c.kind for c, _, _ in fits)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE escrow_trade t SET state = u.new, closed_at = %s, updated_at = %s
            FROM unnest(%s::bigint[], %s::text[]) AS u(id, new) WHERE t.id = u.id
            """,
            [now, now, trades, _pg_array(_SETTLING[c.kind][1] for c, _, _ in fits)],
        )
        cursor.execute(
            """
            INSERT INTO escrow_escrowevent (trade_id, old_state, new_state, actor_role, reason,
                                            created_at, announced)
            SELECT id, old, new, %s, 'settled (' || kind || ')', %s, false
            FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[])
                 WITH ORDINALITY AS u(id, old, new, kind, n)
            ORDER BY n
            RETURNING id, trade_id, old_state, new_state, reason
            """,
            [
                SYSTEM,
                now,
                trades,
                _pg_array(_SETTLING[c.kind][0] for c, _, _ in fits),
                _pg_array(_SETTLING[c.kind][1] for c, _, _ in fits),
                kinds,
            ],
        )
        events = cursor.fetchall()
        cursor.execute(
            "UPDATE escrow_settlement SET status = %s, attempts = attempts + 1, settled_at = %s "
            "WHERE id = ANY(%s::bigint[])",
            [Settlement.Status.DONE, now, _pg_array(c.pk for c, _, _ in fits)],
        )
    # Last, so that the accounts stay locked only for the balance UPDATEs and the commit; the
    # ones other batches also touch (the fee account, sellers, buyers) the shortest, after the
    # trades' escrow accounts (which only the holder of the trade's row lock touches).
    ledger_transfers_post_select(
        _SETTLEMENT_TRANSFERS,
        {
            "trades": trades,
            "kinds": kinds,
            "shares": _pg_array(c.buyer_amount for c, _, _ in fits),
            "buyer_accounts": _pg_array(buyers[(b, a)] for _, b, a in fits),
            "fee_accounts": _pg_array(fees[a] for _, _, a in fits),
            "release": Settlement.Kind.RELEASE,
            "post": Transfer.Flags.POST_PENDING,
            "void": Transfer.Flags.VOID_PENDING,
            "single": Transfer.Flags.SINGLE,
            "payout_kind": Transfer.Kind.TRADE_PAYOUT,
            "fee_kind": Transfer.Kind.TRADE_FEE,
        },
        shared_accounts=sellers | set(buyers.values()) | set(fees.values()),
    )
    announce_many(
        [
            # positional: Model.__init__'s fast path (_EVENT_FIELDS), a third cheaper per event
            # (the django-stubs plugin checks positional fields in another order than _EVENT_FIELDS)
            EscrowEvent(pk, trade_id, old, new, None, SYSTEM, reason, now, False)  # type: ignore[misc]
            for pk, trade_id, old, new, reason in events
        ]
    )
    return len(fits), rest


def _settle_one_by_one(claimed: list[_Claim]) -> int:
    """The careful path (SQLite, and whatever a batch could not take): each settlement in its own
    savepoint through the single-transfer services, so one that fails is undone without undoing
    the others, and counted (_attempt_failed): it stays pending for the sweeper to retry, and
    after SETTLEMENT_MAX_ATTEMPTS it is `failed`, for a moderator. A transient database error
    (TRANSIENT_ERRORS) is not the settlement's fault: it is raised, and the task retries the
    claim with backoff."""
    if not claimed:
        return 0
    # Already locked by the claim: read as models for the single-transfer services.
    settlements = Settlement.objects.in_bulk([c.pk for c in claimed])
    trades = {
        t.pk: t
        for t in Trade.objects.select_for_update(of=("self",))
        .select_related(
            "asset", "buyer", "escrow_hold__credit_account", "escrow_hold__debit_account"
        )
        .filter(pk__in=sorted(c.trade_id for c in claimed))
        .order_by("pk")
    }
    _lock_batch_accounts(trades.values())
    settled = 0
    failed: list[Settlement] = []
    for c in claimed:
        settlement = settlements[c.pk]
        try:
            with transaction.atomic():
                _settle_one(settlement, trades[c.trade_id])
            settled += 1
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:
            # The savepoint undid the attempt; its bookkeeping is written here, in the claim's
            # transaction, so that it stays.
            if _attempt_failed(settlement, exc):
                failed.append(settlement)
    if failed:
        _announce_failed(failed)
    return settled


def _attempt_failed(settlement: Settlement, exc: Exception) -> bool:
    """Count a failed attempt, with its error; True if it was the last one (now `failed`).

    Any error from the posting counts the same: a refusal from the ledger or the state machine
    (the ApplicationError family: InsufficientFunds, a hold already resolved, a trade no longer
    settling) as much as an unexpected exception. A refusal is judged against rows other
    transactions change (balances, the trade), so it is retried too, a sweep apart (_due); the
    settlement is `failed` after SETTLEMENT_MAX_ATTEMPTS attempts, a few minutes, and the
    moderators and both parties are told once."""
    settlement.refresh_from_db()  # _settle_one may have changed it before the savepoint undid it
    settlement.attempts += 1
    error = f"{type(exc).__name__}: {exc}"
    settlement.last_error = error[: Settlement._meta.get_field("last_error").max_length]
    settlement.last_attempt_at = timezone.now()
    final: bool = settlement.attempts >= settings.SETTLEMENT_MAX_ATTEMPTS
    if final:
        settlement.status = Settlement.Status.FAILED
    settlement.save(update_fields=["status", "attempts", "last_error", "last_attempt_at"])
    if final:
        logger.error(
            "settlement %s (trade #%s) failed %s times; it is failed, for a moderator to retry",
            settlement.pk,
            settlement.trade_id,
            settlement.attempts,
            exc_info=exc,
        )
    else:
        logger.warning(
            "settlement %s (trade #%s): attempt %s of %s failed; it stays pending",
            settlement.pk,
            settlement.trade_id,
            settlement.attempts,
            settings.SETTLEMENT_MAX_ATTEMPTS,
            exc_info=exc,
        )
    return final


def _lock_batch_accounts(trades: Any) -> None:
    """Lock every account the batch touches up front, in pk order: two workers settling
    overlapping batches (the same buyer, the fee account) queue instead of deadlocking."""
    ids: set[int] = set()
    for trade in trades:
        hold = trade.escrow_hold
        ids.update({hold.debit_account_id, hold.credit_account_id})
        ids.add(ledger.account_for_user(user=trade.buyer, asset=trade.asset).pk)
        ids.add(ledger.account_fees(asset=trade.asset).pk)
    list(
        LedgerAccount.objects.select_for_update(no_key=True)
        .filter(pk__in=sorted(ids))
        .order_by("pk")
        .values_list("pk")
    )


def _settle_one(settlement: Settlement, trade: Trade) -> None:
    hold = cast(Transfer, trade.escrow_hold)  # every settling trade has its hold
    escrow_account = hold.credit_account
    key = f"trade:{trade.pk}"
    if settlement.kind == Settlement.Kind.RELEASE:
        ledger.transfer_post_pending(idempotency_key=f"{key}:post", pending=hold)
        _pay_out(trade, escrow_account, buyer_gets=trade.buyer_receives, fee=trade.fee)
        final = S.COMPLETED
    elif settlement.kind == Settlement.Kind.REFUND:
        ledger.transfer_void_pending(idempotency_key=f"{key}:void", pending=hold)
        final = S.REFUNDED
    else:
        share = settlement.buyer_amount or Decimal(0)
        if share > 0:
            ledger.transfer_post_pending(idempotency_key=f"{key}:post", pending=hold, amount=share)
            _pay_out(trade, escrow_account, buyer_gets=share, fee=Decimal(0))
        else:
            ledger.transfer_void_pending(idempotency_key=f"{key}:void", pending=hold)
        final = S.SPLIT
    _escrow_transition(
        trade_id=trade.pk,
        to=final,
        actor=None,
        reason=f"settled ({settlement.kind})",
        joined=False,
        savepoint=False,
    )
    settlement.status = Settlement.Status.DONE
    settlement.attempts += 1
    settlement.settled_at = timezone.now()
    settlement.save(update_fields=["status", "attempts", "settled_at"])


def _pay_out(trade: Trade, escrow_account: Any, *, buyer_gets: Decimal, fee: Decimal) -> None:
    ledger.transfer_post(
        idempotency_key=f"trade:{trade.pk}:payout",
        debit=escrow_account,
        credit=ledger.account_for_user(user=trade.buyer, asset=trade.asset),
        amount=buyer_gets,
        kind="trade_payout",
        reference=trade.pk,
    )
    if fee > 0:
        ledger.transfer_post(
            idempotency_key=f"trade:{trade.pk}:fee",
            debit=escrow_account,
            credit=ledger.account_fees(asset=trade.asset),
            amount=fee,
            kind="trade_fee",
            reference=trade.pk,
        )


def settlements_requeue_stale() -> int:
    """Re-queue settlements no worker finished within SETTLEMENT_REQUEUE_AFTER (lost messages)."""
    cutoff = timezone.now() - settings.SETTLEMENT_REQUEUE_AFTER
    ids = list(
        Settlement.objects.filter(
            status=Settlement.Status.PENDING, queued_at__lt=cutoff
        ).values_list("pk", flat=True)[:1000]
    )
    requeued = 0
    for settlement_id in ids:
        # Compare-and-set on queued_at: two sweepers racing queue each settlement once.
        if Settlement.objects.filter(
            pk=settlement_id, status="pending", queued_at__lt=cutoff
        ).update(queued_at=timezone.now()):
            transitions._enqueue(settlement_id)
            requeued += 1
    return requeued


def settlement_retry(*, settlement_id: int, actor: Any) -> Settlement:
    """A moderator puts a failed settlement back in the queue with its attempts reset (once what
    refused it is fixed); it settles like any other, each transfer once (keyed by the trade)."""
    _require_moderator(actor)
    with durable_atomic():
        # Locked: two moderators retrying together queue it once (the second is refused).
        settlement = Settlement.objects.select_for_update().filter(pk=settlement_id).first()
        if settlement is None:
            raise NotFound(
                gettext("Settlement #{settlement_id} not found.").format(
                    settlement_id=settlement_id
                )
            )
        if settlement.status != Settlement.Status.FAILED:
            raise InvalidTransition(
                gettext(
                    "Settlement #{settlement_id} is {status}: only a failed one can be retried."
                ).format(settlement_id=settlement_id, status=settlement.get_status_display())
            )
        attempts = settlement.attempts
        settlement.status = Settlement.Status.PENDING
        settlement.attempts = 0
        settlement.queued_at = timezone.now()
        settlement.save(update_fields=["status", "attempts", "queued_at"])
        # The audit trace (with the admin's LogEntry): who retried what, after which error.
        logger.warning(
            "settlement %s (trade #%s) retried by %s (user %s) after %s failed attempts: %s",
            settlement.pk,
            settlement.trade_id,
            actor.get_username(),
            actor.pk,
            attempts,
            settlement.last_error,
        )
        transaction.on_commit(lambda: transitions._enqueue(settlement.pk))
    return settlement
