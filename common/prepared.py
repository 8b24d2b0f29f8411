"""Reads, UPDATEs by key and INSERTs whose SQL Django builds once per process (issue 17: the
request path).

Building and compiling a query costs Django far more than running it: the trade a move locks,
with the eight rows it joins, took 1.05 ms to build and compile and 0.12 ms to run; a trade's
events 0.54 and 0.09 (docs/scaling.md). A hot read whose shape never changes, only its values,
is declared once:

    TRADE_LOCKED = PreparedRead(
        lambda trade_id: Trade.objects.select_related("asset").select_for_update().filter(pk=trade_id)
    )
    trade = TRADE_LOCKED.one(trade_id)         # or TRADE_LOCKED(trade_id): a list

The first call builds the queryset with stand-in values of the same types, compiles it, and
remembers where each stand-in landed among the statement's parameters; every call then runs that
statement with its own values and builds the instances as Django's ModelIterable does (the joined
rows of select_related, annotations, the database's converters). A values() build is declared as
PreparedRows instead: each row a tuple of the statement's columns, in their SELECT order. The
database is chosen per call by the routers (a locking read goes to the primary, others may go to
the replica inside common.db.replica_reads), and a locking read outside a transaction is refused
as Django refuses it.

What a build may do: filters, joins, ordering, locks, annotations and a slice, as any queryset,
but no prefetch_related (one statement); its arguments (ints, strings and aware datetimes, each a
whole parameter: an exact or a comparison lookup, an `__in` of separate arguments) may change only
the values of the statement, never its shape: no `if` on them, no list argument. With settings.PREPARED_READS_CHECK (the test settings)
every call also builds the queryset with its real values and fails unless Django would have run
the same statement with the same parameters, so the suite proves each declared read."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar, cast

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections, router
from django.db.models import NOT_PROVIDED, Model, QuerySet, signals
from django.db.models.query import (  # type: ignore[attr-defined]
    ModelIterable,
    get_related_populators,
)
from django.db.transaction import TransactionManagementError

M = TypeVar("M", bound=Model)

# Stand-ins, far from any real id, text or time, one per argument. The text has no letters, so
# a build that upper- or lower-cases its argument keeps it (its caller then passes the value
# as the build would make it, or the check fails).
# (Within a 32-bit integer's range: Django refuses a lookup on an IntegerField beyond it.)
_INT_BASE = -1_987_654_321
# Beyond a 64-bit integer (no column holds one: hostile input), Django answers without asking the
# database (no rows for `=`, all for `<`): such a call is left to Django.
_INT8 = range(-(2**63), 2**63)
_STR_MARK = "\ue000\u00a7{}\u00a7\ue000"
_TIME_BASE = datetime(1901, 2, 3, 4, 5, 6, tzinfo=UTC)


def _stand_in(i: int, value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return _TIME_BASE + timedelta(microseconds=i)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(
            f"a prepared read's argument {i} is {type(value).__name__}: ints, strings and aware "
            "datetimes only"
        )
    return _INT_BASE - i if isinstance(value, int) else _STR_MARK.format(i)


@dataclass(frozen=True)
class _Plan:
    sql: str
    params: tuple[Any, ...]
    slots: tuple[tuple[int, ...], ...]  # for each argument: its positions among the params
    kinds: tuple[type, ...]
    model: type[Model]
    for_write: bool
    using: str | None
    compiler: Any
    init_list: tuple[str, ...]
    model_slice: slice | None
    populators_of: Callable[[str], list[Any]]
    annotation_col_map: dict[str, int]
    converters: dict[int, Any]
    col_count: int | None  # the columns kept of each row (None: all)

    def bind(self, args: Sequence[Any]) -> list[Any]:
        if len(args) != len(self.kinds):
            raise TypeError(f"a prepared read takes {len(self.kinds)} arguments, got {len(args)}")
        params = list(self.params)
        for value, kind, positions in zip(args, self.kinds, self.slots, strict=True):
            if isinstance(value, bool) or not isinstance(value, kind):
                raise TypeError(f"a prepared read's {kind.__name__} argument got {value!r}")
            for position in positions:
                # An int the backend typed (psycopg's Int4, for a subquery's count): typed again.
                typed = type(self.params[position])
                params[position] = value if typed is type(value) else typed(value)
        return params


def _typed_int(value: Any) -> bool:
    """An int the database backend wrapped to send its type (psycopg's Int4, Int8), not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and type(value) is not int


def _beyond_int8(args: Sequence[Any]) -> bool:
    return any(type(a) is int and a not in _INT8 for a in args)


class _Prepared:
    """What both kinds share: the statement built once (thread-safe), run with new values."""

    def __init__(self, build: Callable[..., QuerySet[Any, Any]]) -> None:
        self._build = build
        self._plan: _Plan | None = None
        self._lock = threading.Lock()

    def _run(self, args: Sequence[Any]) -> tuple[_Plan, str, Any]:
        plan = self._plan or self._prepare(args)
        params = plan.bind(args)
        if getattr(settings, "PREPARED_READS_CHECK", False):
            self._check(plan, args, params)
        db = plan.using or (
            router.db_for_write(plan.model) if plan.for_write else router.db_for_read(plan.model)
        )
        connection = connections[db]
        if plan.for_write and connection.get_autocommit():
            raise TransactionManagementError(
                "select_for_update cannot be used outside of a transaction."
            )
        with connection.cursor() as cursor:
            cursor.execute(plan.sql, params)
            rows: Any = cursor.fetchall()
        if plan.col_count is not None:
            rows = [row[: plan.col_count] for row in rows]
        if plan.converters:
            rows = plan.compiler.apply_converters(rows, plan.converters)
        return plan, db, rows

    def _prepare(self, args: Sequence[Any]) -> _Plan:
        with self._lock:
            if self._plan is None:
                self._plan = self._compile(args)
            return self._plan

    def _compile(self, args: Sequence[Any]) -> _Plan:
        stand_ins = [_stand_in(i, value) for i, value in enumerate(args)]
        queryset = self._build(*stand_ins)
        if queryset._prefetch_related_lookups:  # type: ignore[attr-defined]
            raise ValueError("a prepared read runs one statement: no prefetch_related()")
        compiler = queryset.query.get_compiler(using=DEFAULT_DB_ALIAS)
        sql, params = compiler.as_sql()
        slots = []
        for i, stand_in in enumerate(stand_ins):
            positions = tuple(
                j
                for j, p in enumerate(params)
                if (type(p) is type(stand_in) or (type(stand_in) is int and _typed_int(p)))
                and p == stand_in
            )
            # A string inside another parameter (`__contains`'s %...%) is not bound alone.
            wrapped = isinstance(stand_in, str) and any(
                isinstance(p, str) and stand_in in p and p != stand_in for p in params
            )
            if not positions or wrapped:
                raise ValueError(
                    f"a prepared read's argument {i} is not a whole parameter of its statement "
                    "(bind it by an exact lookup)"
                )
            slots.append(positions)
        klass_info = compiler.klass_info
        select = compiler.select
        model_slice = None
        instances = queryset._iterable_class is ModelIterable
        if instances:  # else values()' tuples: PreparedRows
            fields = klass_info["select_fields"]
            model_slice = slice(fields[0], fields[-1] + 1)
        columns = [s[0] for s in select[0 : compiler.col_count]]
        # The populators hold the alias their instances record: one list per database.
        by_db: dict[str, list[Any]] = {}

        def populators_of(db: str) -> list[Any]:
            if db not in by_db:
                by_db[db] = get_related_populators(klass_info, select, db)
            return by_db[db]

        return _Plan(
            sql=sql,
            params=tuple(params),
            slots=tuple(slots),
            kinds=tuple(type(a) for a in args),
            model=queryset.model,
            for_write=bool(queryset.query.select_for_update),
            using=queryset._db,  # type: ignore[attr-defined]
            compiler=compiler,
            init_list=tuple(f[0].target.attname for f in select[model_slice or slice(0)]),
            model_slice=model_slice,
            populators_of=populators_of,
            annotation_col_map=dict(compiler.annotation_col_map or {}),
            converters=compiler.get_converters(columns),
            col_count=compiler.col_count if compiler.has_extra_select else None,
        )

    def _check(self, plan: _Plan, args: Sequence[Any], params: list[Any]) -> None:
        queryset = self._build(*args)
        sql, real = queryset.query.get_compiler(using=DEFAULT_DB_ALIAS).as_sql()
        if sql != plan.sql or list(real) != params:
            raise AssertionError(
                "a prepared read's statement depends on its values, not only its parameters:\n"
                f"prepared: {plan.sql} {params}\nDjango's: {sql} {list(real)}"
            )


class PreparedRows(_Prepared):
    """A values() or values_list() read declared once: each row a tuple of the statement's
    columns, in their SELECT order."""

    def __call__(self, *args: Any) -> list[tuple[Any, ...]]:
        if _beyond_int8(args):
            return [tuple(row.values()) for row in self._build(*args)]
        return [tuple(row) for row in self._run(args)[2]]


class PreparedRead(_Prepared, Generic[M]):
    """A read of instances declared once (see the module's docstring)."""

    def __init__(self, build: Callable[..., QuerySet[M, M]]) -> None:
        super().__init__(build)

    def __call__(self, *args: Any) -> list[M]:
        if _beyond_int8(args):
            return list(self._build(*args))
        plan, db, rows = self._run(args)
        if plan.model_slice is None:
            raise TypeError("a values() read is a PreparedRows")
        populators = plan.populators_of(db)
        found: list[M] = []
        for row in rows:
            obj = plan.model.from_db(db, plan.init_list, row[plan.model_slice])
            for populator in populators:
                populator.populate(row, obj)
            for name, position in plan.annotation_col_map.items():
                setattr(obj, name, row[position])
            found.append(cast(M, obj))
        return found

    def one(self, *args: Any) -> M:
        """The one row, as QuerySet.get(): DoesNotExist or MultipleObjectsReturned otherwise."""
        found = self(*args)
        if len(found) == 1:
            return found[0]
        model = self._plan.model if self._plan else Model
        if not found:
            raise model.DoesNotExist(f"{model.__name__} matching query does not exist.")  # type: ignore[attr-defined]
        raise model.MultipleObjectsReturned(f"get() returned more than one {model.__name__}.")  # type: ignore[attr-defined]

    def first(self, *args: Any) -> M | None:
        found = self(*args)
        return found[0] if found else None


# --- writes: an UPDATE by primary key, built once per model and fields -----------------------

_UPDATES: dict[tuple[type[Model], tuple[str, ...]], tuple[str, list[Any]]] = {}


def _update_plan(model: type[Model], names: Sequence[str]) -> tuple[str, list[Any]]:
    key = (model, tuple(names))
    plan = _UPDATES.get(key)
    if plan is None:
        meta = model._meta
        # A field by its name or its attname (`escrow_hold` or `escrow_hold_id`), as save().
        by_name = {n: f for f in meta.concrete_fields for n in (f.name, f.attname)}
        fields: list[Any] = [by_name.get(n) for n in names]
        if any(f is None or f.primary_key for f in fields):
            raise ValueError(f"{model.__name__}: only concrete, non-key fields: {names}")
        quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
        sets = ", ".join(f"{quote(f.column)} = %s" for f in fields)
        # Quoted names from the model's metadata; every value a placeholder.
        table, key_column = quote(meta.db_table), quote(cast(Any, meta.pk).column)
        sql = f"UPDATE {table} SET {sets} WHERE {key_column} = %s"  # noqa: S608
        plan = _UPDATES[key] = (sql, fields)
    return plan


def save_fields(obj: Model, fields: Sequence[str]) -> None:
    """`obj.save(update_fields=fields)`, with its UPDATE built once per model and fields (it
    cost Django 0.24 ms a save, against 0.07 for running it): each field's pre_save (auto_now)
    and database value as Django's own save, and DatabaseError when no row was updated. A model
    with pre_save or post_save receivers, or an instance not yet saved, is saved by Django."""
    model = type(obj)
    if (
        obj._state.adding
        or obj.pk is None
        or signals.pre_save.has_listeners(model)
        or signals.post_save.has_listeners(model)
    ):
        obj.save(update_fields=list(fields))
        return
    sql, plan_fields = _update_plan(model, fields)
    obj._prepare_related_fields_for_save(operation_name="save", fields=plan_fields)  # type: ignore[attr-defined]
    db = router.db_for_write(model, instance=obj)
    connection = connections[db]
    values = [f.get_db_prep_save(f.pre_save(obj, False), connection) for f in plan_fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, obj.pk])
        if cursor.rowcount == 0:
            raise DatabaseError("Save with update_fields did not affect any rows.")
    obj._state.db = db


def update_by_pk(model: type[Model], pk: Any, **values: Any) -> int:
    """`model.objects.filter(pk=pk).update(**values)` for plain values (no expressions), its
    statement built once; as QuerySet.update, no pre_save (auto_now) and no signals. Returns
    the rows updated."""
    sql, plan_fields = _update_plan(model, list(values))
    db = router.db_for_write(model)
    connection = connections[db]
    params = [
        f.get_db_prep_save(v, connection) for f, v in zip(plan_fields, values.values(), strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, pk])
        return int(cursor.rowcount)


# --- writes: an INSERT of new rows, built once per model and number of rows ------------------

_INSERTS: dict[tuple[type[Model], int], tuple[str, list[Any]]] = {}


def _insert_plan(model: type[Model], rows: int) -> tuple[str, list[Any]]:
    key = (model, rows)
    plan = _INSERTS.get(key)
    if plan is None:
        meta = model._meta
        fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field]
        quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
        columns = ", ".join(quote(f.column) for f in fields)
        one = "(" + ", ".join(["%s"] * len(fields)) + ")"
        # Quoted names from the model's metadata; every value a placeholder.
        table, key_column = quote(meta.db_table), quote(cast(Any, meta.pk).column)
        sql = (
            f"INSERT INTO {table} ({columns}) VALUES {', '.join([one] * rows)} "  # noqa: S608
            f"RETURNING {key_column}"
        )
        plan = _INSERTS[key] = (sql, fields)
    return plan


def _insert_by_django(model: type[Model], objs: Sequence[Model]) -> bool:
    """Whether Django must write these rows itself: receivers of its save signals, a parent
    model, a key already set, a database default, or a value that is an expression."""
    meta = model._meta
    if (
        meta.parents
        or meta.auto_field is None
        or signals.pre_save.has_listeners(model)
        or signals.post_save.has_listeners(model)
    ):
        return True
    fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field]
    if any(getattr(f, "db_default", NOT_PROVIDED) is not NOT_PROVIDED for f in fields):
        return True
    return any(
        obj.pk is not None
        or any(hasattr(getattr(obj, f.attname), "resolve_expression") for f in fields)
        for obj in objs
    )


def insert(objs: Sequence[M]) -> list[M]:
    """Write new instances of one model, as `Model.objects.bulk_create(objs)` (each one's
    `save()` for one), in one INSERT built once per model and number of rows (Django built one
    in 0.1-0.3 ms, twice the time of running it): each field's pre_save (auto_now_add) and
    database value as Django's own, the new keys set on the instances. Rows Django must write
    itself (_insert_by_django) go through bulk_create, or save() for one row of a model whose
    post_save has receivers (so they hear of it, as after create()). Returns `objs`."""
    if not objs:
        return list(objs)
    model = type(objs[0])
    if any(type(obj) is not model for obj in objs):
        raise TypeError("insert() writes rows of one model")
    if _insert_by_django(model, objs):
        if len(objs) == 1 and signals.post_save.has_listeners(model):
            objs[0].save(force_insert=True)  # one row: its receivers hear of it, as create()
            return list(objs)
        return model._default_manager.bulk_create(objs)
    sql, fields = _insert_plan(model, len(objs))
    db = router.db_for_write(model)
    connection = connections[db]
    params: list[Any] = []
    for obj in objs:
        obj._prepare_related_fields_for_save(operation_name="insert")  # type: ignore[attr-defined]
        params += [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        keys = cursor.fetchall()
    auto = cast(Any, model._meta.auto_field)
    for obj, (key,) in zip(objs, keys, strict=True):
        setattr(obj, auto.attname, key)
        obj._state.adding = False
        obj._state.db = db
    return list(objs)
