#!/usr/bin/env python
"""Margin calls and liquidations after a 30% fall of the collateral's price, over N active loans.

    flock /tmp/bench.lock scripts/with-services.sh .venv/bin/python bench/lending_liquidation.py

1. pgbench on the same server (-i -s 10; -c 8 -j 2 -T S -M prepared): the yardstick
   (`--pgbench-seconds 0` skips it).
2. Setup: a pool of lenders and borrowers; nine loans through the services (three pairs: USDT
   against ETH, USDT against BTC, ETH against BTC; one, two or three lenders each) with
   LENDING_INTEREST_FEE 0.10, set 20 days back (interest accrued, nothing due yet); then N
   loans copied from them set-based by SQL (request, loan, commitments with the lenders
   rotated, installments, the loan's collateral account), each with its own collateral amount
   so that the starting LTVs spread from 0.25 to 0.75 (most low); the borrowers' deposits and
   every collateral transfer posted through the ledger's batch service (transfers_post_many).
   The setup's entries are sealed, verify_ledger must pass, and the database is kept as a
   template.
3. On a fresh copy: ETH and BTC fall 30% in EUR through marketplace's price_index_set (its
   listeners off: lending's would queue the check_ltv task, which runs the same
   loans_check_ltv), then loans_check_ltv() runs in this process, timed, every statement
   counted (connection.execute_wrapper), split into lending's own and those of the listeners
   that run on commit (notifications: in-app notes, webhooks).
4. Checks: each liquidated loan has one `liquidated` event and one liquidation transfer per
   lender and key; no open loan is left at or past the liquidation line, every open loan past
   the margin-call line is margin called; a second check finds nothing to do; the new entries
   are sealed and verify_ledger passes.

Not a test: nothing asserts a time. Writes its section of BENCHMARKS.md (--no-write: don't).
"""

from __future__ import annotations

import argparse
import contextvars
import sys
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as C

RUN_DB = "bench_liquidation"
TEMPLATE_DB = "bench_liquidation_template"
FALL = Decimal("0.30")
# (asset borrowed, collateral, weight in %); both collateral assets fall, so ETH against BTC
# keeps its LTV: those loans are the untouched part of the book.
PAIRS = [("USDT", "ETH", 45), ("USDT", "BTC", 35), ("ETH", "BTC", 20)]
LENDERS_PER_LOAN = [(1, 60), (2, 25), (3, 15)]  # (lenders, weight in %)
PRINCIPAL = {"USDT": Decimal(1500), "ETH": Decimal(1)}
SPLITS = {1: [Decimal(1)], 2: [Decimal("0.6"), Decimal("0.4")],
          3: [Decimal("0.5"), Decimal("0.3"), Decimal("0.2")]}  # fmt: skip
DAYS_BACK = 20


def _pick(weights: list[tuple[Any, int]], u: float) -> Any:
    edge = 0.0
    for value, weight in weights:
        edge += weight / 100
        if u < edge:
            return value
    return weights[-1][0]


def _start_ltv(i: int) -> Decimal:
    """Loan i's LTV at setup: 0.25 + 0.50 u^1.5 for u spread evenly over [0, 1) (golden-ratio
    steps): most loans low, a tail up to 0.75 (prices moved since some were taken)."""
    u = (i * 0.6180339887498949) % 1.0
    return Decimal("0.25") + Decimal("0.50") * Decimal(repr(u**1.5))


# --- setup ---------------------------------------------------------------------------------------


def build_template(loans: int, lenders: int, borrowers: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import connection, transaction
    from django.utils import timezone

    from ledger import services as ledger
    from ledger.models import Asset
    from ledger.replay import verify_ledger
    from lending import services
    from lending.models import Installment, Loan, LoanCommitment, LoanRequest
    from marketplace.services import price_index_set

    C.close_django()
    C.create_db(RUN_DB)
    migrate_s = C.migrate_quietly()
    t0 = time.perf_counter()
    for code, price in (("BTC", "85000"), ("ETH", "3000"), ("USDT", "0.92")):
        price_index_set(asset_code=code, fiat_code="EUR", price=price)
    eur = {"BTC": Decimal(85000), "ETH": Decimal(3000), "USDT": Decimal("0.92")}
    assets = {a.code: a for a in Asset.objects.all()}
    User = get_user_model()
    unusable = make_password(None)
    User.objects.bulk_create(
        [User(username=f"bench_lender_{k}", password=unusable) for k in range(lenders)]
        + [User(username=f"bench_borrower_{k}", password=unusable) for k in range(borrowers)]
    )
    pool = list(
        User.objects.filter(username__startswith="bench_lender_")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    debtors = list(
        User.objects.filter(username__startswith="bench_borrower_")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    people = User.objects.in_bulk(pool[:3] + debtors[:9])
    for pk in pool[:3]:
        for code in ("USDT", "ETH"):
            ledger.deposit_credit(user=people[pk], asset_code=code, amount="100000",
                                  reference="bench", actor=None)  # fmt: skip
    # nine loans through the services: each pair with one, two and three lenders
    templates: dict[tuple[int, int], int] = {}
    for p, (asset, collateral, _) in enumerate(PAIRS):
        for k in (1, 2, 3):
            borrower = people[debtors[len(templates)]]
            held = (PRINCIPAL[asset] * Decimal("1.02") * eur[asset] / eur[collateral] / Decimal(
                "0.5"
            )).quantize(Decimal(10) ** -assets[collateral].precision)  # fmt: skip
            ledger.deposit_credit(user=borrower, asset_code=collateral, amount=str(held),
                                  reference="bench", actor=None)  # fmt: skip
            request = services.loan_request_create(
                borrower=borrower, asset=asset, amount=str(PRINCIPAL[asset]), annual_rate="5",
                term_months=6, plan="amortized", collateral_asset=collateral,
                collateral_amount=str(held), funding_deadline=timezone.now() + timedelta(days=2),
            )  # fmt: skip
            for lender, share in zip(pool, SPLITS[k], strict=False):
                services.loan_request_fund(request_id=request.pk, lender=people[lender],
                                           amount=str(PRINCIPAL[asset] * share))  # fmt: skip
            templates[p, k] = request.pk
    back = timedelta(days=DAYS_BACK)
    Loan.objects.filter(pk__in=templates.values()).update(
        activated_at=timezone.now() - back  # type: ignore[operator]
    )
    for row in Installment.objects.filter(loan_id__in=templates.values()):
        row.due_at -= back
        row.save(update_fields=["due_at"])
    debt = {
        t: sum(r.principal + r.interest for r in Installment.objects.filter(loan_id=t))
        for t in templates.values()
    }
    # the copies: template, borrower, collateral amount, lender rotation
    copies = loans - len(templates)
    with connection.cursor() as cur:
        cur.execute(
            "SELECT nextval(pg_get_serial_sequence('lending_loanrequest', 'id')) "
            "FROM generate_series(1, %s)",
            [copies],
        )
        ids = [r[0] for r in cur.fetchall()]
    tpl, owner, amounts, rotation = [], [], [], []
    for i in range(copies):
        u = (i * 0.7548776662466927) % 1.0
        p = _pick([(j, w) for j, (_, _, w) in enumerate(PAIRS)], u)
        k = _pick(LENDERS_PER_LOAN, (i * 0.5698402909980532) % 1.0)
        asset, collateral, _ = PAIRS[p]
        t = templates[p, k]
        prec = assets[collateral].precision
        value = debt[t] * eur[asset] / _start_ltv(i) / eur[collateral]
        tpl.append(t)
        owner.append(debtors[i % len(debtors)])
        amounts.append(value.quantize(Decimal(10) ** -prec))
        rotation.append(i % len(pool))
    copied_s = _copy_loans(ids, tpl, owner, amounts, rotation, pool)
    # the borrowers' deposits, then every copy's collateral into its account: ledger batches
    coll_asset = dict(Loan.objects.filter(pk__in=ids).values_list("pk", "collateral_asset_id"))
    owed: Counter[tuple[int, int]] = Counter()
    for pk, who, amount in zip(ids, owner, amounts, strict=True):
        owed[who, coll_asset[pk]] += amount
    wallets = ledger.accounts_for_users(set(owed))
    world = {a.pk: ledger.account_world(asset=a).pk for a in assets.values()}
    from ledger.models import LedgerAccount

    boxes = dict(
        LedgerAccount.objects.filter(code__startswith="loan:collateral:").values_list("code", "pk")
    )
    with transaction.atomic():
        ledger.transfers_post_many([
            ledger.TransferSpec(
                idempotency_key=f"bench:deposit:{who}:{a}", asset_id=a,
                debit_account_id=world[a], credit_account_id=wallets[who, a], amount=total,
                kind="deposit", flags="single",
            )
            for (who, a), total in sorted(owed.items())
        ])  # fmt: skip
        ledger.transfers_post_many([
            ledger.TransferSpec(
                idempotency_key=f"loan:{pk}:collateral", asset_id=coll_asset[pk],
                debit_account_id=wallets[who, coll_asset[pk]],
                credit_account_id=boxes[f"loan:collateral:{pk}"], amount=amount,
                kind="loan_collateral", flags="single", reference=pk,
            )
            for pk, who, amount in zip(ids, owner, amounts, strict=True)
        ])  # fmt: skip
    setup_s = time.perf_counter() - t0
    assert Loan.objects.filter(state="active").count() == loans
    assert LoanRequest.objects.filter(state="active").count() == loans
    commitments = LoanCommitment.objects.count()
    t1 = time.perf_counter()
    sealed = ledger.ledger_seal_pending()
    seal_s = time.perf_counter() - t1
    report = verify_ledger()
    if not report.ok:
        sys.exit(f"the setup's ledger does not verify: {report.errors[:3]}")
    C.close_django()
    C.create_db(TEMPLATE_DB, template=RUN_DB)
    return {
        "migrate_s": migrate_s,
        "setup_s": setup_s,
        "copy_s": copied_s,
        "commitments": commitments,
        "borrowers": borrowers,
        "sealed": sealed,
        "seal_s": seal_s,
    }


def _copy_loans(
    ids: list[int],
    tpl: list[int],
    owner: list[int],
    amounts: list[Decimal],
    rotation: list[int],
    pool: list[int],
) -> float:
    """The copies, set-based: each table's rows copied from the template loan's, with the new
    id, borrower, collateral amount and (for commitments) the lenders rotated through the pool."""
    from django.db import connection, transaction

    from ledger.models import LedgerAccount
    from lending.models import Installment, Loan, LoanCommitment, LoanRequest

    def copy(model: Any, key: str, overrides: dict[str, str], source: str) -> None:
        cols = [
            f.column
            for f in model._meta.concrete_fields
            if f.column in overrides or not f.primary_key
        ]
        select = ", ".join(overrides.get(c, f"t.{c}") for c in cols)
        cur.execute(
            f"INSERT INTO {model._meta.db_table} ({', '.join(cols)}) "  # noqa: S608 - bench SQL
            f"SELECT {select} FROM bench_copies c JOIN {source} t ON t.{key} = c.tpl "
            "ORDER BY c.id"
        )

    t0 = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE bench_copies ON COMMIT DROP AS SELECT * FROM "
            "unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::numeric[], %s::int[]) "
            "AS u(id, tpl, borrower, coll, rot)",
            [ids, tpl, owner, amounts, rotation],
        )
        copy(LoanRequest, "id", {"id": "c.id", "borrower_id": "c.borrower",
             "collateral_amount": "c.coll", "collateral_hold_id": "NULL"},
             "lending_loanrequest")  # fmt: skip
        copy(Loan, "request_id", {"request_id": "c.id", "borrower_id": "c.borrower",
             "collateral_amount": "c.coll"}, "lending_loan")  # fmt: skip
        copy(
            LoanCommitment,
            "request_id",
            {
                "request_id": "c.id",
                "hold_id": "NULL",
                "lender_id": f"(ARRAY[{','.join(map(str, pool))}]::bigint[])"
                f"[((c.rot + t.j) % {len(pool)}) + 1]",
            },
            "(SELECT *, row_number() OVER (PARTITION BY request_id ORDER BY id) - 1 AS j "
            "FROM lending_loancommitment)",
        )
        copy(Installment, "loan_id", {"loan_id": "c.id"}, "lending_installment")
        account_cols = [f.column for f in LedgerAccount._meta.concrete_fields if not f.primary_key]
        values = {
            "code": "'loan:collateral:' || c.id",
            "asset_id": "l.collateral_asset_id",
            "kind": "'escrow'",
            "user_id": "NULL",
            "created_at": "now()",
        }
        cur.execute(
            f"INSERT INTO ledger_ledgeraccount ({', '.join(account_cols)}) "  # noqa: S608
            f"SELECT {', '.join(values.get(c, '0') for c in account_cols)} "
            "FROM bench_copies c JOIN lending_loan l ON l.request_id = c.id ORDER BY c.id"
        )
    return time.perf_counter() - t0


# --- the run ------------------------------------------------------------------------------------

in_listener: contextvars.ContextVar[bool] = contextvars.ContextVar("in_listener", default=False)


def _tagged(listener: Any) -> Any:
    """The listener, with its statements and time counted apart from lending's own."""

    def run(*args: Any) -> None:
        token = in_listener.set(True)
        t0 = time.perf_counter()
        try:
            listener(*args)
        finally:
            run.seconds += time.perf_counter() - t0  # type: ignore[attr-defined]
            in_listener.reset(token)

    run.seconds = 0.0  # type: ignore[attr-defined]
    return run


def run_check(batch: int | None) -> dict[str, Any]:
    from django.conf import settings
    from django.db import connection

    from bench.settlement import _sql_kind, seal_and_verify
    from ledger.models import Transfer
    from lending import services
    from lending.models import Loan, LoanCommitment, LoanEvent
    from marketplace import services as market

    C.close_django()
    C.create_db(RUN_DB, template=TEMPLATE_DB)
    # the price moves: ETH and BTC fall 30% in EUR (the lending listener, which would queue
    # the check_ltv task, off: this process runs the check itself)
    saved, market.price_listeners[:] = market.price_listeners[:], []
    moved = {}
    for code in ("ETH", "BTC"):
        from marketplace.models import PriceIndex

        old = PriceIndex.objects.get(asset__code=code, fiat__code="EUR").price
        moved[code] = (old, (old * (1 - FALL)).quantize(Decimal("0.01")))
        market.price_index_set(asset_code=code, fiat_code="EUR", price=str(moved[code][1]))
    market.price_listeners[:] = saved
    hooks = {
        "events": services.event_listeners,
        "margin calls": services.margin_call_listeners,
        "blocked": services.liquidation_blocked_listeners,
    }
    wrapped = {name: [_tagged(f) for f in hook] for name, hook in hooks.items()}
    originals = {name: hook[:] for name, hook in hooks.items()}
    for name, hook in hooks.items():
        hook[:] = wrapped[name]
    kinds: Counter[str] = Counter()
    counts = Counter()

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        where = "listeners" if in_listener.get() else "lending"
        counts[where] += 1
        kinds[f"{where}: {_sql_kind(sql)}"] += 1
        return execute(sql, params, many, context)

    open_before = Loan.objects.filter(state__in=["active", "late"]).count()
    connection.ensure_connection()
    split = C.CpuSplit()
    split.start()
    t0 = time.perf_counter()
    with connection.execute_wrapper(count):
        result = services.loans_check_ltv(batch_size=batch)
    wall = time.perf_counter() - t0
    cpu = split.stop()
    listener_s = sum(f.seconds for fs in wrapped.values() for f in fs)
    for name, hook in hooks.items():
        hook[:] = originals[name]
    # checks
    problems: list[str] = []
    liquidated = Loan.objects.filter(state="liquidated")
    n_liq = liquidated.count()
    if n_liq != result["liquidated"]:
        problems.append(f"{n_liq} loans liquidated, the check says {result['liquidated']}")
    twice = (
        Counter(
            LoanEvent.objects.filter(new_state="liquidated").values_list("request_id", flat=True)
        ).most_common(1)
        or [(None, 0)]
    )[0][1]
    if twice > 1:
        problems.append("a loan has two liquidated events")
    keys = Transfer.objects.filter(idempotency_key__contains=":liquidation:")
    lender_transfers = keys.filter(kind="loan_liquidation").count()
    commitments = LoanCommitment.objects.filter(request__loan__state="liquidated").count()
    if lender_transfers > commitments:
        problems.append(f"{lender_transfers} lender transfers for {commitments} commitments")
    left = services.loans_ltv()
    at_line = [pk for pk, _, ltv in left if ltv >= settings.LENDING_LIQUIDATION_LTV]
    if at_line:
        problems.append(f"{len(at_line)} open loans left at the liquidation line")
    uncalled = [
        pk for pk, called, ltv in left if ltv >= settings.LENDING_MARGIN_CALL_LTV and not called
    ]
    if uncalled:
        problems.append(f"{len(uncalled)} open loans past the margin-call line not called")
    again = services.loans_check_ltv(batch_size=batch)
    if again["liquidated"] or again["margin_calls"]:
        problems.append(f"a second check did more: {again}")
    fees = sum(liquidated.values_list("fees_collateral", flat=True), Decimal(0))
    still_open = Loan.objects.filter(state__in=["active", "late"])
    called_only = still_open.filter(margin_called=True).count()
    untouched = still_open.filter(margin_called=False).count()
    underwater = liquidated.filter(shortfall__gt=0).count()
    sealing = seal_and_verify()
    if not sealing["verify_ok"]:
        problems.append(f"verify_ledger failed: {sealing['verify_errors']}")
    return {
        "result": result,
        "open_before": open_before,
        "moved": {k: [str(a), str(b)] for k, (a, b) in moved.items()},
        "wall": wall,
        "listener_s": listener_s,
        "statements": dict(counts),
        "kinds": dict(kinds),
        "lender_transfers": lender_transfers,
        "transfers": keys.count(),
        "underwater": underwater,
        "called_only": called_only,
        "untouched": untouched,
        "with_fee": liquidated.filter(fees_collateral__gt=0).count(),
        "fees_collateral": str(fees),
        "cpu": cpu,
        "problems": problems,
        **sealing,
    }


# --- the report ----------------------------------------------------------------------------------


def render(args: argparse.Namespace, info: dict[str, str], pgbench: dict[str, float] | None,
           setup: dict[str, Any], run: dict[str, Any], total_s: float) -> str:  # fmt: skip
    r = run["result"]
    checked = r["checked"]
    lending, listeners = run["statements"].get("lending", 0), run["statements"].get("listeners", 0)
    batch = args.batch or "default"
    tps = pgbench["c8"] if pgbench else None
    own_s = run["wall"] - run["listener_s"]
    decided = r["margin_calls"] + r["liquidated"]
    top = sorted(run["kinds"].items(), key=lambda kv: (not kv[0].startswith("lending"), -kv[1]))
    lines = [
        "## Margin calls and liquidations after a price move (`bench/lending_liquidation.py`)",
        "",
        "```",
        "flock /tmp/bench.lock " + C.command_line().removeprefix("flock /tmp/bench.lock "),
        "```",
        "",
        *C.machine_lines(info),
        f"- Whole run: {total_s / 60:.1f} min. Settings: `bench.settings`, "
        "LENDING_INTEREST_FEE 0.10 (the lines: margin call 0.75, liquidation 0.83, penalty 5%).",
        "",
        f"Setup: {args.loans} active loans ({setup['commitments']} commitments of "
        f"{args.lenders} lenders, {setup['borrowers']} borrowers): nine through the services (USDT "
        "against ETH, USDT against BTC, ETH against BTC; one, two or three lenders), 20 days "
        "old, the rest copied from them set-based by SQL with their own collateral amounts "
        "(starting LTVs 0.25 to 0.75, most low); the borrowers' deposits and every collateral "
        f"transfer posted with transfers_post_many. {setup['setup_s']:.0f} s (the copies "
        f"{setup['copy_s']:.0f} s), migrate {setup['migrate_s']:.1f} s; {setup['sealed']} "
        f"entries sealed in {setup['seal_s']:.0f} s and verified; kept as a template.",
        "",
        (
            f"Yardstick, pgbench on the same server (`pgbench -i -s 10`; `-c 8 -j 2 -T "
            f"{args.pgbench_seconds} -M prepared`): **{tps:,.0f} tps**; one client: "
            f"{pgbench['c1']:,.0f} tps."
            if pgbench
            else "Yardstick: pgbench skipped (`--pgbench-seconds 0`)."
        ),
        "",
        "The move: ETH "
        + " -> ".join(run["moved"]["ETH"])
        + " and BTC "
        + " -> ".join(run["moved"]["BTC"])
        + " EUR (-30%) through `marketplace.services.price_index_set` (its listeners off: "
        "lending's would queue the `check_ltv` task, which calls the same service), then "
        f"`lending.services.loans_check_ltv(batch_size={batch})` called in this process and "
        "timed until it returned: every margin call and liquidation decided, posted and "
        "committed, and the listeners that run on commit (notifications: in-app notes, "
        "webhooks) done.",
        "",
        C.table(
            ["", "figure"],
            [
                ["open loans checked (one LTV query)", f"{checked:,}"],
                [
                    "margin calls (first crossing, liquidated ones included)",
                    f"{r['margin_calls']:,}",
                ],
                ["  margin called, still open", f"{run['called_only']:,}"],
                ["liquidated", f"**{r['liquidated']:,}**"],
                ["  of them underwater (shortfall recorded, no fee)", f"{run['underwater']:,}"],
                ["  of them with a fee", f"{run['with_fee']:,}"],
                ["untouched (below the margin-call line)", f"{run['untouched']:,}"],
                ["liquidation transfers posted", f"{run['transfers']:,}"],
                ["**wall time, all decided and posted**", f"**{run['wall']:.1f} s**"],
                ["  of it lending's (LTV, margin calls, liquidations)", f"{own_s:.1f} s"],
                ["  of it the listeners on commit (notifications)", f"{run['listener_s']:.1f} s"],
                ["statements, lending's", f"{lending:,}"],
                ["  per loan checked", f"**{lending / checked:.4f}**"],
                ["  per margin call or liquidation", f"{lending / max(decided, 1):.4f}"],
                ["statements, the listeners'", f"{listeners:,}"],
                ["  per margin call or liquidation", f"{listeners / max(decided, 1):.2f}"],
                [
                    "liquidations/s (lending's time) / pgbench tps",
                    f"{r['liquidated'] / own_s:,.0f}/s"
                    + (f" / {tps:,.0f} = {r['liquidated'] / own_s / tps:.2f}x" if tps else ""),
                ],
                [
                    "checks",
                    "all passed" if not run["problems"] else "**" + "; ".join(run["problems"]),
                ],
                [
                    "seal + verify_ledger",
                    f"{run['sealed']} entries sealed in {run['seal_s']:.1f} s; "
                    f"{run['entries']} entries verified in {run['verify_s']:.1f} s: "
                    + ("OK" if run["verify_ok"] else "**FAILED**"),
                ],
            ],
        ),
        "",
        "Checks: the liquidated loans counted in the database equal the check's figure; no loan "
        "has two `liquidated` events; no more lender transfers than commitments of liquidated "
        "loans; afterwards no open loan is at or past the liquidation line and every open loan "
        "past the margin-call line is margin called; a second `loans_check_ltv` does nothing; "
        "verify_ledger passes on the sealed chain.",
        "",
        "The statements, by kind (counted with `connection.execute_wrapper`; BEGIN/COMMIT are "
        "not statements Django sends through it; `WITH` is the LTV query, `WITH ... INSERT` "
        "the ledger's batch):",
        "",
        C.table(["statement", "count"], [[k, f"{v:,}"] for k, v in top]),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loans", type=int, default=100_000)
    parser.add_argument("--lenders", type=int, default=50)
    parser.add_argument("--borrowers", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=None, help="default: LIQUIDATION_BATCH_SIZE")
    parser.add_argument("--pgbench-seconds", type=int, default=20, help="0: skip pgbench")
    parser.add_argument("--no-write", action="store_true", help="don't touch BENCHMARKS.md")
    args = parser.parse_args()
    if args.loans < 50:
        parser.error("--loans: at least 50")
    C.need_services()
    started = time.perf_counter()
    C.django_setup(RUN_DB, LENDING_INTEREST_FEE="0.10")
    info = C.machine()
    pgbench = None
    if args.pgbench_seconds:
        from bench.settlement import run_pgbench

        with C.stopwatch("pgbench (yardstick)"):
            pgbench = run_pgbench(args.pgbench_seconds)
    with C.stopwatch(f"setup: {args.loans} loans"):
        setup = build_template(args.loans, args.lenders, min(args.borrowers, args.loans))
    with C.stopwatch("the price move and loans_check_ltv"):
        run = run_check(args.batch)
    C.close_django()
    C.drop_db(RUN_DB)
    C.drop_db(TEMPLATE_DB)
    total_s = time.perf_counter() - started
    C.save_results("lending_liquidation", {"args": vars(args), "setup": setup, "run": run})
    report = render(args, info, pgbench, setup, run, total_s)
    print("\n" + report)
    if not args.no_write:
        C.write_section("lending_liquidation", report)
    if run["problems"]:
        sys.exit("checks failed: " + "; ".join(run["problems"]))


if __name__ == "__main__":
    main()
