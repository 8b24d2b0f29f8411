"""Accounts and transfers: the only code that writes transfers and balances.

transfer_* run inside the caller's transaction and lock the two accounts in pk order, so two
transfers over the same accounts queue instead of deadlocking.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils.translation import gettext

from common.errors import Conflict, InsufficientFunds, InvalidTransition
from common.money import fmt
from common.prepared import PreparedRead, insert
from ledger.models import Asset, LedgerAccount, Transfer

logger = logging.getLogger(__name__)

Flags = Transfer.Flags
Kind = LedgerAccount.Kind

# --- accounts ---------------------------------------------------------------------------------


# A user's account of an asset, read on every take and move of money (common.prepared).
_USER_ACCOUNT = PreparedRead(
    lambda user_id, asset_id: LedgerAccount.objects.filter(
        kind=Kind.USER, user_id=user_id, asset_id=asset_id
    )
)


def account_for_user(*, user: Any, asset: Asset) -> LedgerAccount:
    found = _USER_ACCOUNT.first(user.pk, asset.pk)
    if found is not None:
        return found
    account, _ = LedgerAccount.objects.get_or_create(
        kind=Kind.USER, user=user, asset=asset, defaults={"code": f"user:{user.pk}:{asset.code}"}
    )
    return account


def account_world(*, asset: Asset) -> LedgerAccount:
    account, _ = LedgerAccount.objects.get_or_create(
        code=f"world:{asset.code}", defaults={"kind": Kind.WORLD, "asset": asset}
    )
    return account


def account_custody(*, asset: Asset, place: str) -> LedgerAccount:
    """Where the platform's coins of `asset` are (`deposits`: the users' deposit addresses,
    `hot`: the hot wallet): an outside-world account (it goes negative), so minus its balance is
    what sits there. A chain deposit debits `deposits`, a sweep moves deposits -> hot, a
    withdrawal credits `hot`, gas spent is `hot` -> world."""
    account, _ = LedgerAccount.objects.get_or_create(
        code=f"custody:{asset.code}:{place}", defaults={"kind": Kind.WORLD, "asset": asset}
    )
    return account


def account_fees(*, asset: Asset) -> LedgerAccount:
    account, _ = LedgerAccount.objects.get_or_create(
        code=f"fees:{asset.code}", defaults={"kind": Kind.FEES, "asset": asset}
    )
    return account


def account_escrow(*, trade_id: int, asset: Asset, new: bool = False) -> LedgerAccount:
    """The trade's escrow account; `new`: the trade was created in the caller's transaction, so
    its account cannot exist yet (one INSERT, no look-up first and no savepoint)."""
    code = f"escrow:trade:{trade_id}"
    if new:
        return insert([LedgerAccount(code=code, kind=Kind.ESCROW, asset=asset)])[0]
    account, _ = LedgerAccount.objects.get_or_create(
        code=code, defaults={"kind": Kind.ESCROW, "asset": asset}
    )
    return account


def account_hold(*, code: str, asset: Asset) -> LedgerAccount:
    """An escrow-kind account under any code (e.g. `loan:collateral:7`): where a higher app's
    holds sit. The code names the owner; the ledger does not read it."""
    account, _ = LedgerAccount.objects.get_or_create(
        code=code, defaults={"kind": Kind.ESCROW, "asset": asset}
    )
    if account.asset_id != asset.pk:
        raise Conflict(
            gettext("Account {code!r} holds {asset}, not {asset2}.").format(
                code=code, asset=account.asset, asset2=asset
            )
        )
    return account


def accounts_for_users(pairs: set[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """{(user_id, asset_id): account id} for many users at once, creating the missing ones."""
    found = _user_accounts(pairs)
    missing = pairs - found.keys()
    if missing:
        codes = dict(Asset.objects.filter(pk__in={a for _, a in missing}).values_list("pk", "code"))
        LedgerAccount.objects.bulk_create(
            [
                LedgerAccount(kind=Kind.USER, user_id=u, asset_id=a, code=f"user:{u}:{codes[a]}")
                for u, a in sorted(missing)
            ],
            ignore_conflicts=True,  # another worker created it meanwhile: use theirs
        )
        found |= _user_accounts(missing)
    return found


def _user_accounts(pairs: set[tuple[int, int]]) -> dict[tuple[int, int], int]:
    rows = LedgerAccount.objects.filter(
        kind=Kind.USER, user_id__in={u for u, _ in pairs}, asset_id__in={a for _, a in pairs}
    ).values_list("user_id", "asset_id", "pk")
    return {(u, a): pk for u, a, pk in rows if (u, a) in pairs}


def accounts_fees(asset_ids: set[int]) -> dict[int, int]:
    """{asset_id: fee account id} for these assets, creating the missing ones (one query when
    they all exist: account_fees is the only maker of fee accounts, one per asset)."""
    found: dict[int, int] = dict(
        LedgerAccount.objects.filter(
            kind=Kind.FEES, code__startswith="fees:", asset_id__in=asset_ids
        ).values_list("asset_id", "pk")
    )
    missing = set(asset_ids) - found.keys()
    if missing:
        for asset in Asset.objects.filter(pk__in=missing):
            found[asset.pk] = account_fees(asset=asset).pk
    return found


_ENSURE_SQL = """
SELECT kind, user_id, asset_id FROM ledger_ledgeraccount
WHERE (kind = %(user)s AND user_id = ANY(%(users)s) AND asset_id = ANY(%(assets)s))
   OR (kind = %(fees)s AND code LIKE 'fees:%%' AND asset_id = ANY(%(fee_assets)s))
"""


def accounts_ensure(*, users: set[tuple[int, int]], fees: set[int]) -> None:
    """These user accounts ({(user_id, asset_id)}) and fee accounts ({asset_id}) exist after
    this: one plain query when they all do already (a release's, every time but a buyer's
    first), accounts_for_users / accounts_fees for the missing ones."""
    params: dict[str, Any] = {
        "user": Kind.USER.value,
        "users": sorted({u for u, _ in users}),
        "assets": sorted({a for _, a in users}),
        "fees": Kind.FEES.value,
        "fee_assets": sorted(fees),
    }
    with connection.cursor() as cursor:
        cursor.execute(_ENSURE_SQL, params)
        rows = cursor.fetchall()
    have_users = {(u, a) for kind, u, a in rows if kind == Kind.USER}
    have_fees = {a for kind, _, a in rows if kind == Kind.FEES}
    if users - have_users:
        accounts_for_users(users - have_users)
    if fees - have_fees:
        accounts_fees(fees - have_fees)


# --- transfers (inside the caller's transaction) ----------------------------------------------


def _locked_accounts(*ids: int) -> Any:
    # pk order, so two transfers over the same pair of accounts queue instead of deadlocking.
    # FOR NO KEY UPDATE: balances are not keys, so inserting transfers that reference an account
    # (a foreign-key check takes FOR KEY SHARE) never waits on these locks, nor they on it.
    return LedgerAccount.objects.select_for_update(no_key=True).filter(pk__in=ids).order_by("pk")


# A transfer's pair of accounts (common.prepared: its statement built once).
_LOCK_PAIR = PreparedRead(lambda first, second: _locked_accounts(first, second))


def _lock_accounts(*ids: int) -> dict[int, LedgerAccount]:
    unique = sorted(set(ids))
    rows = _LOCK_PAIR(*unique) if len(unique) == 2 else _locked_accounts(*unique)
    return {a.pk: a for a in rows}


# A transfer's two balances in one statement (two UPDATEs through the ORM before: a round trip
# and its statement building each, on every take and every settlement).
_BALANCES_SQL = """
UPDATE ledger_ledgeraccount AS a
SET debits_pending = v.dp, debits_posted = v.dpo,
    credits_pending = v.cp, credits_posted = v.cpo
FROM (VALUES {rows}) AS v(id, dp, dpo, cp, cpo)
WHERE a.id = v.id
"""
_BALANCES_ROW = "(%s::bigint, %s::numeric, %s::numeric, %s::numeric, %s::numeric)"


def _save_balances(*accounts: LedgerAccount) -> None:
    """Write the four balance columns of these locked accounts (the same account once)."""
    unique = list({a.pk: a for a in accounts}.values())
    params: list[Any] = []
    for a in unique:
        params += [a.pk, a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted]
    sql = _BALANCES_SQL.format(rows=", ".join([_BALANCES_ROW] * len(unique)))
    with connection.cursor() as cursor:  # the primary: the accounts are locked there
        cursor.execute(sql, params)


def _existing(idempotency_key: str, **expected: Any) -> Transfer | None:
    """The transfer already posted under this key, if it is the same transfer; else a conflict."""
    found = Transfer.objects.filter(idempotency_key=idempotency_key).first()
    if found is None:
        return None
    for field, value in expected.items():
        if getattr(found, field) != value:
            raise Conflict(
                gettext(
                    "Idempotency key {idempotency_key!r} was already used for a different transfer."
                ).format(idempotency_key=idempotency_key),
                code="idempotency_conflict",
            )
    return found


def _assert_can_debit(account: LedgerAccount, amount: Decimal) -> None:
    if account.kind != Kind.WORLD and account.available < amount:
        raise InsufficientFunds(
            gettext("Insufficient {code} balance: {v1} available, {v2} needed.").format(
                code=account.asset.code,
                v1=fmt(account.available, account.asset.precision),
                v2=fmt(amount, account.asset.precision),
            ),
            fields={"amount": [gettext("Insufficient balance.")]},
        )


def transfer_post(
    *,
    idempotency_key: str,
    debit: LedgerAccount,
    credit: LedgerAccount,
    amount: Decimal,
    kind: str,
    pending: bool = False,
    reference: int | None = None,
    memo: str = "",
    new_key: bool = False,
) -> Transfer:
    """Move `amount` (or hold it, when pending) from debit to credit; posts once per key.
    `new_key`: the caller knows no transfer can have this key yet (it names a row this same
    transaction inserted), so it is not looked up first; the key's unique index still holds."""
    assert transaction.get_connection().in_atomic_block, "transfer_post needs a transaction"
    if debit.asset_id != credit.asset_id:
        raise Conflict(gettext("A transfer moves one asset: the two accounts differ."))
    if amount <= 0:
        raise Conflict(gettext("A transfer amount must be positive."))
    flags = Flags.PENDING if pending else Flags.SINGLE
    locked = _lock_accounts(debit.pk, credit.pk)
    found = None
    if not new_key:
        found = _existing(
            idempotency_key,
            debit_account_id=debit.pk,
            credit_account_id=credit.pk,
            amount=amount,
            flags=flags,
        )
    if found is not None:
        return found
    dr, cr = locked[debit.pk], locked[credit.pk]
    _assert_can_debit(dr, amount)
    if pending:
        dr.debits_pending += amount
        cr.credits_pending += amount
    else:
        dr.debits_posted += amount
        cr.credits_posted += amount
    _save_balances(dr, cr)
    (transfer,) = insert(
        [
            Transfer(
                idempotency_key=idempotency_key,
                asset_id=debit.asset_id,
                debit_account=dr,
                credit_account=cr,
                amount=amount,
                kind=kind,
                flags=flags,
                reference=reference,
                memo=memo,
            )
        ]
    )
    return transfer


def _resolve(*, idempotency_key: str, pending: Transfer, post_amount: Decimal | None) -> Transfer:
    assert transaction.get_connection().in_atomic_block, "resolving a hold needs a transaction"
    flags = Flags.VOID_PENDING if post_amount is None else Flags.POST_PENDING
    locked = _lock_accounts(pending.debit_account_id, pending.credit_account_id)
    if found := _existing(idempotency_key, pending_id=pending.pk, flags=flags):
        return found
    if pending.flags != Flags.PENDING:
        raise InvalidTransition(gettext("Only a pending transfer can be posted or voided."))
    if Transfer.objects.filter(pending_id=pending.pk).exists():
        raise InvalidTransition(gettext("Hold #{pk} was already resolved.").format(pk=pending.pk))
    if post_amount is not None and not (0 < post_amount <= pending.amount):
        raise Conflict(gettext("A hold can be posted for at most its amount."))
    dr, cr = locked[pending.debit_account_id], locked[pending.credit_account_id]
    dr.debits_pending -= pending.amount
    cr.credits_pending -= pending.amount
    if post_amount is not None:
        dr.debits_posted += post_amount
        cr.credits_posted += post_amount
    _save_balances(dr, cr)
    (transfer,) = insert(
        [
            Transfer(
                idempotency_key=idempotency_key,
                asset_id=pending.asset_id,
                debit_account=dr,
                credit_account=cr,
                amount=pending.amount if post_amount is None else post_amount,
                kind=pending.kind,
                flags=flags,
                pending=pending,
                reference=pending.reference,
            )
        ]
    )
    return transfer


def transfer_post_pending(
    *, idempotency_key: str, pending: Transfer, amount: Decimal | None = None
) -> Transfer:
    """Post a hold, fully or in part (the rest goes back to the debit account); once only."""
    return _resolve(
        idempotency_key=idempotency_key, pending=pending, post_amount=amount or pending.amount
    )


def transfer_void_pending(*, idempotency_key: str, pending: Transfer) -> Transfer:
    """Release a hold entirely back to its debit account; once only."""
    return _resolve(idempotency_key=idempotency_key, pending=pending, post_amount=None)


# --- many transfers at once (PostgreSQL: one statement per table) ------------------------------


@dataclass(frozen=True, slots=True)
class TransferSpec:
    """One transfer of a batch. For post_pending / void_pending, `pending_id` names the hold and
    `pending_amount` its amount (the part of it that is released from both accounts)."""

    idempotency_key: str
    asset_id: int
    debit_account_id: int
    credit_account_id: int
    amount: Decimal
    kind: str
    flags: str
    pending_id: int | None = None
    pending_amount: Decimal | None = None
    reference: int | None = None
    memo: str = ""


def transfers_post_many(specs: list[TransferSpec]) -> int:
    """Post a batch of transfers given one by one (transfers_post_select over their columns)."""
    assert transaction.get_connection().in_atomic_block, "transfers_post_many needs a transaction"
    if not specs:
        return 0
    for s in specs:
        if s.flags in (Flags.POST_PENDING, Flags.VOID_PENDING) and (
            s.pending_id is None or s.pending_amount is None
        ):
            raise ValueError(f"{s.flags} needs pending_id and pending_amount: {s}")
    columns = list(zip(*((
        s.idempotency_key, s.asset_id, s.debit_account_id, s.credit_account_id, s.amount,
        s.kind, s.flags, s.pending_id, s.reference, s.memo, s.pending_amount,
    ) for s in specs), strict=True))  # fmt: skip
    return transfers_post_select(
        """
        SELECT k AS idempotency_key, a AS asset_id, d AS debit_account_id,
               c AS credit_account_id, amt AS amount, kd AS kind, f AS flags, p AS pending_id,
               t AS reference, m AS memo, r AS released, n AS ord
        FROM unnest(%(k)s::text[], %(a)s::bigint[], %(d)s::bigint[], %(c)s::bigint[],
                    %(amt)s::numeric[], %(kd)s::text[], %(f)s::text[], %(p)s::bigint[],
                    %(t)s::bigint[], %(m)s::text[], %(r)s::numeric[])
             WITH ORDINALITY AS u(k, a, d, c, amt, kd, f, p, t, m, r, n)
        """,
        dict(
            zip(
                ["k", "a", "d", "c", "amt", "kd", "f", "p", "t", "m", "r"],
                map(list, columns),
                strict=True,
            )
        ),
    )


# The columns a batch's SELECT yields, in this order, for transfers_post_select.
_BATCH_COLUMNS = (
    "idempotency_key, asset_id, debit_account_id, credit_account_id, amount, kind, flags, "
    "pending_id, reference, memo"
)


def transfers_post_select(
    select_sql: str, params: dict[str, Any], *, shared_accounts: Collection[int] = ()
) -> int:
    """Post the transfers a SELECT yields, inside the caller's transaction, with a constant number
    of statements and no per-transfer work in Python: one INSERT ... SELECT of every transfer
    (in the order of the SELECT's `ord` column, so ids and later seqs follow it), the balance
    changes summed per account in the same statement, then the accounts locked in pk order (FOR
    NO KEY UPDATE, which the transfers' foreign-key checks do not conflict with) and one UPDATE
    of every balance.

    `select_sql` yields the columns of _BATCH_COLUMNS plus `ord` and `released`, with named
    placeholders (%(name)s) for `params`. A post_pending / void_pending row names its hold in
    pending_id and its amount in `released` (NULL for other rows): that amount is released from
    both accounts' pending columns, as _resolve does. All or nothing: the database refuses a
    reused idempotency key, a hold resolved twice, a non-positive amount, equal accounts or an
    overdraft (IntegrityError), and the caller's savepoint undoes the batch; the caller then
    retries item by item with the checks of transfer_post / _resolve.

    The accounts are locked last, so concurrent batches hold them only for the UPDATE and the
    commit; `shared_accounts` (those concurrent batches also touch: the fee account, busy
    users) even later, after the others are updated, in their own small UPDATE. Each group is
    locked in pk order; the order between the groups is safe when no other transaction waits
    for one of the other accounts while holding a shared one (e.g. the others are escrow
    accounts of trades whose rows the caller holds locked). PostgreSQL only."""
    assert transaction.get_connection().in_atomic_block, "posting a batch needs a transaction"
    with connection.cursor() as cursor:
        # The deltas travel back as array literals (text), which the UPDATE casts again: nothing
        # is parsed into Python objects or dumped from them.
        cursor.execute(
            f"""
            WITH batch AS MATERIALIZED ({select_sql}),
            posted AS (
                INSERT INTO ledger_transfer ({_BATCH_COLUMNS}, created_at, prev_hash, hash,
                                             leaf_hash)
                SELECT {_BATCH_COLUMNS}, now(), '', '', '' FROM batch ORDER BY ord
                RETURNING 1
            ), deltas AS (
                SELECT account, sum(dp) AS dp, sum(dd) AS dd, sum(cp) AS cp, sum(cd) AS cd
                FROM (
                    SELECT debit_account_id AS account,
                           CASE flags WHEN %(pending)s THEN amount
                                      ELSE -COALESCE(released, 0) END AS dp,
                           CASE WHEN flags IN (%(single)s, %(post)s) THEN amount ELSE 0 END AS dd,
                           0 AS cp, 0 AS cd
                    FROM batch
                    UNION ALL
                    SELECT credit_account_id, 0, 0,
                           CASE flags WHEN %(pending)s THEN amount ELSE -COALESCE(released, 0) END,
                           CASE WHEN flags IN (%(single)s, %(post)s) THEN amount ELSE 0 END
                    FROM batch
                ) AS m
                GROUP BY account
            )
            SELECT (SELECT count(*) FROM posted), {
                ", ".join(
                    f"array_agg({column} ORDER BY account) FILTER (WHERE {which})::text"
                    for which in ("NOT account = ANY(%(shared)s)", "account = ANY(%(shared)s)")
                    for column in ("account", "dp", "dd", "cp", "cd")
                )
            }
            FROM deltas
            """,  # noqa: S608 - select_sql is the caller's code, never user input
            {
                **params,
                "pending": Flags.PENDING,
                "single": Flags.SINGLE,
                "post": Flags.POST_PENDING,
                "shared": sorted(shared_accounts),
            },
        )
        posted, *groups = cursor.fetchone()
        if not posted:
            return 0
        for ids, *deltas in (groups[:5], groups[5:]):
            if ids is None:
                continue
            cursor.execute(
                "SELECT count(*) FROM (SELECT id FROM ledger_ledgeraccount "
                "WHERE id = ANY(%s::bigint[]) ORDER BY id FOR NO KEY UPDATE) AS locked",
                [ids],
            )
            cursor.execute(
                """
                UPDATE ledger_ledgeraccount a SET
                    debits_pending = a.debits_pending + u.dp,
                    debits_posted = a.debits_posted + u.dd,
                    credits_pending = a.credits_pending + u.cp,
                    credits_posted = a.credits_posted + u.cd
                FROM unnest(%s::bigint[], %s::numeric[], %s::numeric[], %s::numeric[],
                            %s::numeric[]) AS u(id, dp, dd, cp, cd)
                WHERE a.id = u.id
                """,
                [ids, *deltas],
            )
    return int(posted)
