"""Installment collection: every due installment taken from the borrower's wallet and paid to
the lenders pro rata, less the platform's fee on their interest (one transfer to the fee
account per installment); a wallet that can't cover one makes the loan late.

Two paths with the same amounts and the same idempotency keys, so that an installment is never
paid twice whichever path (or worker) gets to it first:
- loan_collect: one loan in its own transaction, transfer by transfer (ledger.transfer_post);
- installments_collect_due (beat): a batch of loans per transaction with a constant number of
  statements (the loans locked with SKIP LOCKED, every transfer of the batch posted by
  ledger.transfers_post_select, the installments, loans and audit events written by one
  statement each). A loan whose borrower's wallet does not cover what the batch owes from it,
  or whose last installment this is (the collateral goes back), goes to loan_collect."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from common.errors import ApplicationError, InsufficientFunds
from common.money import fmt
from common.transactions import durable_atomic
from ledger import services as ledger
from ledger.models import LedgerAccount, Transfer
from ledger.services.transfers import transfers_post_select
from lending.models import Loan, LoanEvent
from lending.services.loans import (
    OPEN_STATES,
    UNPAID,
    K,
    L,
    S,
    _lenders,
    _lock_loan,
    _pay,
    _pay_fee,
    _return_collateral,
    fee_on_interest,
)
from lending.services.schedule import lender_shares
from lending.services.transitions import (
    SYSTEM,
    _check,
    _loan_transition,
    announce,
    event,
    system_event,
)

logger = logging.getLogger(__name__)

# Loans per transaction of installments_collect_due: large enough that the batch's fixed
# statements are cheap per installment, small enough that a batch holds its locks briefly.
COLLECT_BATCH = 500


def installment_payouts(
    *,
    principals: list[Decimal],
    interests: list[Decimal],
    n: int,
    lenders: list[tuple[int, Decimal]],
    interest_fee: Decimal,
    precision: int,
) -> tuple[list[tuple[int, Decimal]], Decimal]:
    """What installment `n` pays each lender (their principal and interest shares, less the fee
    on their interest) and the fee account (the sum of those fees). Together exactly the
    installment: the borrower never pays more because of the fee."""
    weights = [amount for _, amount in lenders]
    p = lender_shares(parts=principals, n=n, weights=weights, precision=precision)
    i = lender_shares(parts=interests, n=n, weights=weights, precision=precision)
    payouts: list[tuple[int, Decimal]] = []
    fees = Decimal(0)
    for (lender_id, _), pp, ii in zip(lenders, p, i, strict=True):
        fee = fee_on_interest(ii, interest_fee, precision)
        fees += fee
        payouts.append((lender_id, pp + ii - fee))
    return payouts, fees


def _inst_key(loan_id: int, n: int, lender_id: int) -> str:
    return f"loan:{loan_id}:inst:{n}:lender:{lender_id}"


def _fee_key(loan_id: int, n: int) -> str:
    return f"loan:{loan_id}:inst:{n}:fee"


def _paid_reason(n: int, total: Decimal, precision: int) -> str:
    # notifications/loans.py reads the number and the amount back from this text
    return f"installment {n} paid: {fmt(total, precision)}"


def _lock_accounts(ids: Iterable[int]) -> None:
    """Every ledger account a collection touches, locked at once in pk order (as a batch of
    installments_collect_due locks them): the single-transfer services would take them two at a
    time, and holding one pair while waiting for the next can deadlock against a batch."""
    list(
        LedgerAccount.objects.select_for_update(no_key=True)
        .filter(pk__in=sorted(set(ids)))
        .order_by("pk")
        .values_list("pk")
    )


# --- one loan --------------------------------------------------------------------------------


def loan_collect(*, loan_id: int) -> int:
    """Collect every installment of one loan that is due, in order, from the borrower's wallet;
    the first that the wallet can't cover makes the loan late. Returns how many were paid."""
    now = timezone.now()
    paid = 0
    with durable_atomic():
        loan = _lock_loan(loan_id)
        if loan.state not in OPEN_STATES:
            return 0
        rows = list(loan.installments.order_by("n"))
        lenders = _lenders(loan)
        prec = loan.asset.precision
        principals = [r.principal for r in rows]
        interests = [r.interest for r in rows]
        wallet = ledger.account_for_user(user=loan.borrower, asset=loan.asset)
        if any(r.status in UNPAID and r.due_at <= now for r in rows):
            accounts = ledger.accounts_for_users({(lid, loan.asset_id) for lid, _ in lenders})
            fee_account = [ledger.account_fees(asset=loan.asset).pk] if loan.interest_fee else []
            _lock_accounts([wallet.pk, *accounts.values(), *fee_account])
        fees_before = loan.fees
        for inst in rows:
            if inst.status not in UNPAID or inst.due_at > now:
                continue
            payouts, fees = installment_payouts(
                principals=principals, interests=interests, n=inst.n, lenders=lenders,
                interest_fee=loan.interest_fee, precision=prec,
            )  # fmt: skip
            try:
                with transaction.atomic():  # a savepoint: a short wallet undoes this one only
                    for lender_id, amount in payouts:
                        _pay(loan=loan, key=_inst_key(loan.pk, inst.n, lender_id),
                             lender_id=lender_id, amount=amount, kind=K.LOAN_INSTALLMENT,
                             source=wallet)  # fmt: skip
                    _pay_fee(loan=loan, key=_fee_key(loan.pk, inst.n), amount=fees, source=wallet)
            except InsufficientFunds:
                if inst.status != S.MISSED:
                    inst.status = S.MISSED
                    inst.save(update_fields=["status"])
                if loan.state == L.ACTIVE:
                    _loan_transition(loan=loan, to=L.LATE, actor=None, role=SYSTEM,
                                     reason=f"installment {inst.n} not covered")  # fmt: skip
                break
            inst.status, inst.paid_at = S.PAID, now
            inst.save(update_fields=["status", "paid_at"])
            paid += 1
            event(request_id=loan.pk, subject="loan", old=loan.state, new=loan.state, actor=None,
                  role=SYSTEM, reason=_paid_reason(inst.n, inst.total, prec))  # fmt: skip
        else:
            if all(r.status == S.PAID for r in rows):
                _return_collateral(
                    loan, loan.collateral_amount, f"loan:{loan.pk}:collateral:return"
                )
                _loan_transition(loan=loan, to=L.REPAID, actor=None, role=SYSTEM,
                                 reason=gettext_noop("last installment paid"))  # fmt: skip
            elif loan.state == L.LATE:
                _loan_transition(loan=loan, to=L.ACTIVE, actor=None, role=SYSTEM,
                                 reason=gettext_noop("overdue installments collected"))  # fmt: skip
        if loan.fees != fees_before:
            # after a transition that saved the loan too: its update_fields leave `fees` out
            Loan.objects.filter(pk=loan.pk).update(fees=loan.fees, updated_at=now)
    return paid


# --- a batch of loans ------------------------------------------------------------------------

# The next batch: open loans after `after` with an installment due, locked in id order; a loan
# another transaction holds (a repayment, a liquidation, another worker's batch) is skipped, and
# whoever holds it collects it or the next run does.
_LOCK_BATCH = """
    SELECT l.request_id, l.borrower_id, l.asset_id, l.state, l.interest_fee, a.precision
    FROM lending_loan l JOIN ledger_asset a ON a.id = l.asset_id
    WHERE l.state = ANY(%(open)s) AND l.request_id > %(after)s
      AND EXISTS (SELECT 1 FROM lending_installment i
                  WHERE i.loan_id = l.request_id AND i.status = ANY(%(unpaid)s)
                    AND i.due_at <= %(now)s)
    ORDER BY l.request_id
    LIMIT %(size)s
    FOR UPDATE OF l SKIP LOCKED
"""

# The batch's transfers, from arrays built in Python (transfers_post_select's columns).
_BATCH_TRANSFERS = """
    SELECT k AS idempotency_key, a AS asset_id, d AS debit_account_id, c AS credit_account_id,
           amt AS amount, kd AS kind, %(single)s AS flags, NULL::bigint AS pending_id,
           ref AS reference, '' AS memo, NULL::numeric AS released, ord
    FROM unnest(%(keys)s::text[], %(assets)s::bigint[], %(debits)s::bigint[],
                %(credits)s::bigint[], %(amounts)s::numeric[], %(kinds)s::text[],
                %(refs)s::bigint[])
         WITH ORDINALITY AS u(k, a, d, c, amt, kd, ref, ord)
"""


def _pg_array(values: Iterable[object]) -> str:
    """A PostgreSQL array literal of plain values (ids, amounts, keys without spaces, commas or
    quotes): far cheaper than having the driver adapt every element."""
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


@dataclass(slots=True)
class _Batch:
    """What a set-based batch writes, column by column."""

    keys: list[str]
    assets: list[int]
    debits: list[int]
    credits: list[int]
    amounts: list[Decimal]
    kinds: list[str]
    refs: list[int]
    inst_loans: list[int]
    inst_ns: list[int]
    loan_ids: list[int]  # loans whose row changes: a fee, or late -> active
    loan_fees: list[Decimal]
    loan_cured: list[bool]
    events: list[LoanEvent]


class _StaleBatch(Exception):
    """The batch found installments in another state than it read: undo it, go loan by loan."""


def installments_collect_due(*, batch_size: int = COLLECT_BATCH) -> int:
    """Beat: collect what is due on every open loan, `batch_size` loans per transaction with a
    constant number of statements; a loan the batch can't take whole goes through loan_collect
    after the batch committed. Returns how many installments were paid."""
    total, after = 0, 0
    while True:
        last, paid, careful = _collect_batch(after=after, size=batch_size, now=timezone.now())
        if last is None:
            return total
        total += paid
        for loan_id in careful:
            try:
                total += loan_collect(loan_id=loan_id)
            except ApplicationError:
                logger.exception("loan #%s: collection failed", loan_id)
        after = last


def _collect_batch(*, after: int, size: int, now: datetime) -> tuple[int | None, int, list[int]]:
    """One batch: (the last loan id locked or None when there was none, installments paid,
    loans left to loan_collect)."""
    with durable_atomic(), connection.cursor() as cursor:
        cursor.execute(
            _LOCK_BATCH,
            {"open": list(OPEN_STATES), "unpaid": list(UNPAID), "after": after, "now": now,
             "size": size},
        )  # fmt: skip
        loans = cursor.fetchall()
        if not loans:
            return None, 0, []
        ids = _pg_array(row[0] for row in loans)
        # Read after the lock (a new snapshot): what a worker that held a loan just paid is seen.
        # (whether it is due, computed here: no date to parse per row)
        cursor.execute(
            "SELECT loan_id, n, due_at <= %s, principal, interest, status "
            "FROM lending_installment WHERE loan_id = ANY(%s::bigint[]) ORDER BY loan_id, n",
            [now, ids],
        )
        installments: dict[int, list[tuple[int, bool, Decimal, Decimal, str]]]
        installments = defaultdict(list)
        for loan_id, n, is_due, principal, interest, status in cursor.fetchall():
            installments[loan_id].append((n, is_due, principal, interest, status))
        cursor.execute(
            "SELECT request_id, lender_id, amount FROM lending_loancommitment "
            "WHERE request_id = ANY(%s::bigint[]) ORDER BY request_id, id",
            [ids],
        )
        lenders: dict[int, list[tuple[int, Decimal]]] = defaultdict(list)
        for loan_id, lender_id, amount in cursor.fetchall():
            lenders[loan_id].append((lender_id, amount))
        accounts = ledger.accounts_for_users(
            {(borrower, asset) for _, borrower, asset, *_ in loans}
            | {(lid, asset) for loan_id, _, asset, *_ in loans for lid, _ in lenders[loan_id]}
        )
        fee_accounts = ledger.accounts_fees({row[2] for row in loans if row[4] > 0})
        wallets = {accounts[(borrower, asset)] for _, borrower, asset, *_ in loans}
        cursor.execute(
            "SELECT id, credits_posted - debits_posted - debits_pending "
            "FROM ledger_ledgeraccount WHERE id = ANY(%s::bigint[])",
            [_pg_array(wallets)],
        )
        available = dict(cursor.fetchall())

        # What each loan owes now, and from which wallet.
        owed: dict[int, Decimal] = defaultdict(Decimal)  # wallet -> sum over its loans
        due: dict[int, list[int]] = {}  # loan -> positions of its due installments
        for loan_id, borrower, asset, *_ in loans:
            rows = installments[loan_id]
            positions = [k for k, r in enumerate(rows) if r[4] in UNPAID and r[1]]
            if positions:  # else paid by whoever held the loan before us
                due[loan_id] = positions
                owed[accounts[(borrower, asset)]] += sum(rows[k][2] + rows[k][3] for k in positions)
        careful: list[int] = []
        batch = _Batch([], [], [], [], [], [], [], [], [], [], [], [], [])
        for loan_id, borrower, asset, state, interest_fee, prec in loans:
            if loan_id not in due:
                continue
            wallet = accounts[(borrower, asset)]
            rows = installments[loan_id]
            if available.get(wallet, Decimal(0)) < owed[wallet] or len(due[loan_id]) == sum(
                1 for r in rows if r[4] != S.PAID
            ):
                # Short wallet: loan_collect pays what it can, in order, and makes it late. Last
                # installment: loan_collect returns the collateral too.
                careful.append(loan_id)
                continue
            _plan_loan(batch, loan_id, asset, state, interest_fee, prec, rows, due[loan_id],
                       lenders[loan_id], wallet, accounts, fee_accounts, now)  # fmt: skip
        if not batch.inst_loans:
            return loans[-1][0], 0, careful
        try:
            with transaction.atomic():  # a savepoint: an overdraft undoes the batch only
                _write_batch(batch, now)
        except (IntegrityError, _StaleBatch):
            # A wallet spent meanwhile (the database refused an overdraft), or a key already used:
            # loan_collect checks each transfer and pays what can be paid.
            logger.warning("installment batch after loan #%s undone: loan by loan", after,
                           exc_info=True)  # fmt: skip
            return loans[-1][0], 0, sorted([*careful, *set(batch.inst_loans)])
        announce(batch.events)
        return loans[-1][0], len(batch.inst_loans), careful


def _plan_loan(
    batch: _Batch,
    loan_id: int,
    asset: int,
    state: str,
    interest_fee: Decimal,
    prec: int,
    rows: list[tuple[int, bool, Decimal, Decimal, str]],
    positions: list[int],
    lenders: list[tuple[int, Decimal]],
    wallet: int,
    accounts: dict[tuple[int, int], int],
    fee_accounts: dict[int, int],
    now: datetime,
) -> None:
    """Add one loan's due installments to the batch, as loan_collect would pay them."""
    principals = [r[2] for r in rows]
    interests = [r[3] for r in rows]
    fees_total = Decimal(0)
    for k in positions:
        n, _, principal, interest, _ = rows[k]
        payouts, fees = installment_payouts(
            principals=principals, interests=interests, n=n, lenders=lenders,
            interest_fee=interest_fee, precision=prec,
        )  # fmt: skip
        for lender_id, amount in payouts:
            if amount > 0:
                batch.keys.append(_inst_key(loan_id, n, lender_id))
                batch.credits.append(accounts[(lender_id, asset)])
                batch.amounts.append(amount)
                batch.kinds.append(K.LOAN_INSTALLMENT)
        if fees > 0:
            batch.keys.append(_fee_key(loan_id, n))
            batch.credits.append(fee_accounts[asset])
            batch.amounts.append(fees)
            batch.kinds.append(K.LOAN_FEE)
            fees_total += fees
        added = len(batch.keys) - len(batch.debits)
        batch.debits += [wallet] * added
        batch.assets += [asset] * added
        batch.refs += [loan_id] * added
        batch.inst_loans.append(loan_id)
        batch.inst_ns.append(n)
        batch.events.append(
            system_event(loan_id=loan_id, state=state, at=now,
                         reason=_paid_reason(n, principal + interest, prec))
        )  # fmt: skip
    cured = state == L.LATE  # every overdue installment is in this batch
    if cured:
        _check("loan", loan_id, L.LATE, L.ACTIVE, SYSTEM)
        batch.events.append(
            system_event(loan_id=loan_id, state=L.LATE, new=L.ACTIVE, at=now,
                         reason=gettext_noop("overdue installments collected"))
        )  # fmt: skip
    if cured or fees_total:
        batch.loan_ids.append(loan_id)
        batch.loan_fees.append(fees_total)
        batch.loan_cured.append(cured)


def _write_batch(batch: _Batch, now: datetime) -> None:
    """The batch's writes, one statement per table (the ledger's: a few)."""
    transfers_post_select(
        _BATCH_TRANSFERS,
        {
            "keys": _pg_array(batch.keys),
            "assets": _pg_array(batch.assets),
            "debits": _pg_array(batch.debits),
            "credits": _pg_array(batch.credits),
            "amounts": _pg_array(batch.amounts),
            "kinds": _pg_array(batch.kinds),
            "refs": _pg_array(batch.refs),
            "single": Transfer.Flags.SINGLE,
        },
    )
    with connection.cursor() as cur:
        cur.execute(
            """
            UPDATE lending_installment i SET status = %s, paid_at = %s
            FROM unnest(%s::bigint[], %s::int[]) AS u(loan_id, n)
            WHERE i.loan_id = u.loan_id AND i.n = u.n AND i.status = ANY(%s)
            """,
            [S.PAID, now, _pg_array(batch.inst_loans), _pg_array(batch.inst_ns), list(UNPAID)],
        )
        if cur.rowcount != len(batch.inst_loans):
            raise _StaleBatch(f"{cur.rowcount} installments paid, not {len(batch.inst_loans)}")
        if batch.loan_ids:
            cur.execute(
                """
                UPDATE lending_loan l SET
                    fees = l.fees + u.fee,
                    state = CASE WHEN u.cured THEN %s ELSE l.state END,
                    late_since = CASE WHEN u.cured THEN NULL ELSE l.late_since END,
                    updated_at = %s
                FROM unnest(%s::bigint[], %s::numeric[], %s::boolean[]) AS u(id, fee, cured)
                WHERE l.request_id = u.id
                """,
                [L.ACTIVE, now, _pg_array(batch.loan_ids), _pg_array(batch.loan_fees),
                 _pg_array("t" if c else "f" for c in batch.loan_cured)],
            )  # fmt: skip
    LoanEvent.objects.bulk_create(batch.events)
