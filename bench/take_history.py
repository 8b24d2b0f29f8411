"""A trade's requests against the trader's history: does a take cost more for a trader (a bot)
with a long history of trades than for a new one? Each history size is measured in the same run,
against no history at all as the baseline.

    flock /tmp/bench.lock scripts/with-services.sh .venv/bin/python bench/take_history.py \
        --history 0,20000,200000 --trades 60

The taker (trader 0) gets HISTORY completed trades, spread evenly over the last 365 days (about
one in twelve inside the 30-day limit window), against the makers of the book, copied in SQL
from one real trade, each rated by its seller; the makers get them as their history too. Then
`--trades` whole trades go through the API in-process (Django's test client, bench.settings: the
whole WSGI stack), the taker against each maker in turn: the taker reads the book (every offer
asks for REQUIRED completed trades), takes, marks paid, the seller releases and reads its wallets
(each copy's escrow hold and its posting are on the ledger too), and the taker's public profile
is read. Reported per request: CPU ms of this process (Python) and of its PostgreSQL backends,
the read replica's included (/proc), and the slowest statements of the book, the take, the
wallets and the profile.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as C

DB = "bench_take_history"
MAKERS = 6
REQUESTS = (
    "book (the taker)",
    "take",
    "mark-paid",
    "release",
    "wallets (the seller)",
    "profile (the taker's)",
)
REQUIRED = 10  # completed trades each offer asks of its taker, set after the warm-up
BOOK = "/api/v1/offers/?side=sell&asset=BTC&fiat=EUR"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", default="0,20000,200000", help="history sizes, ascending")
    parser.add_argument("--trades", type=int, default=60, help="trades measured per size")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds per size")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sizes = [int(x) for x in args.history.split(",")]
    if sizes != sorted(sizes):
        parser.error("--history: ascending sizes (each adds to the one before)")

    C.need_services()
    t_all = time.perf_counter()
    info = C.machine()
    C.create_db(DB)
    C.django_setup(
        DB,
        API_RATE_LIMIT_KEY="1000000/s",
        API_RATE_LIMIT_IP="1000000/s",
        TAKES_PER_MAKER_PER_MINUTE="1000000",
    )
    C.migrate_quietly()
    from django.db import connection, connections
    from django.test import Client

    from bench.load import AMOUNT, FUND_PASSWORD, seed

    users = seed(MAKERS + 1, 1)["users"]
    taker, makers = users[0], users[1:]
    client = Client(HTTP_HOST="127.0.0.1")

    call = C.api_caller(client)

    from marketplace.models import Offer

    offers = dict(Offer.objects.values_list("maker__username", "id"))

    def backends_cpu() -> float:
        return C.backends_cpu(replica=True)

    # Per request and statement: its wall time (round trip and server), summed by its start.
    statement_ms: dict[tuple[str, str], float] = defaultdict(float)
    current = [""]

    def timed_statement(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            key = (current[0], " ".join(sql.split())[:90])
            statement_ms[key] += (time.perf_counter() - t0) * 1000

    def one_trade(k: int, cpu: dict[str, float], db: dict[str, float]) -> None:
        maker = makers[k % len(makers)]

        def run(name: str, *a: Any, **kw: Any) -> Any:
            d0, c0 = backends_cpu(), time.process_time()
            current[0] = name
            with (
                connection.execute_wrapper(timed_statement),
                connections["replica"].execute_wrapper(timed_statement),
            ):
                result = call(*a, **kw)
            cpu[name] += time.process_time() - c0
            db[name] += backends_cpu() - d0
            return result

        # The book as the taker reads it before a take: the offers ask for a minimum of completed
        # trades (set after the warm-up), so the viewer's own part counts the taker's trades.
        run("book (the taker)", "GET", BOOK, taker["token"])
        trade = run(
            "take",
            "POST",
            f"/api/v1/offers/{offers[maker['username']]}/take/",
            taker["token"],
            {"amount": AMOUNT},
        )
        run("mark-paid", "POST", f"/api/v1/trades/{trade['id']}/mark-paid/", taker["token"])
        run(
            "release",
            "POST",
            f"/api/v1/trades/{trade['id']}/release/",
            maker["token"],
            {"password": FUND_PASSWORD},
        )
        run("wallets (the seller)", "GET", "/api/v1/wallets/", maker["token"])
        # The taker's public record, as anyone reads it (counted fresh: its completion rate).
        run("profile (the taker's)", "GET", f"/api/v1/traders/{taker['username']}/", maker["token"])

    warm_cpu: dict[str, float] = defaultdict(float)
    for k in range(4 * len(makers)):  # imports, prepared statements, each maker's first check
        one_trade(k, warm_cpu, defaultdict(float))
    # Every offer now asks for REQUIRED completed trades (the taker has the warm-up's 24): the book
    # read by the taker and each take check the taker's count. The takes that follow invalidate
    # the book's cached part, which carries the requirement.
    from escrow.services import settlements_execute_pending

    settlements_execute_pending()  # the warm-up's trades completed, as a worker would
    Offer.objects.update(min_taker_trades=REQUIRED)
    for k in range(len(makers)):
        one_trade(k, warm_cpu, defaultdict(float))
    template = _template_trade(connection)

    results: list[dict[str, Any]] = []
    have = 0
    for size in sizes:
        with C.stopwatch(f"history {size}") as took:
            if size > have:
                _add_history(connection, template, have, size - have)
                have = size
        cpu: dict[str, float] = defaultdict(float)
        db: dict[str, float] = defaultdict(float)
        statement_ms.clear()
        for k in range(args.rounds * args.trades):
            one_trade(k, cpu, db)
        n = args.rounds * args.trades
        counts = _history_counts(connection, taker_name=taker["username"])
        results.append(
            {
                "history": size,
                "setup_s": took["seconds"],
                "counts": counts,
                "per_request": {
                    name: {"python_ms": cpu[name] / n * 1000, "pg_ms": db[name] / n * 1000}
                    for name in REQUESTS
                },
                "slowest_statements": {
                    name: sorted(
                        ((sql, ms / n) for (req, sql), ms in statement_ms.items() if req == name),
                        key=lambda kv: -kv[1],
                    )[:4]
                    for name in (
                        "book (the taker)",
                        "take",
                        "wallets (the seller)",
                        "profile (the taker's)",
                    )
                },
            }
        )
        row = results[-1]["per_request"]
        print(
            f"    history {size}: "
            + ", ".join(
                f"{name} {row[name]['python_ms']:.1f} + {row[name]['pg_ms']:.1f} ms"
                for name in REQUESTS
            ),
            flush=True,
        )
    C.close_django()
    C.drop_db(DB)
    payload = {
        "args": vars(args),
        "info": info,
        "results": results,
        "total_s": time.perf_counter() - t_all,
    }
    C.save_results("take_history", payload)
    report = render(payload)
    print("\n" + report)
    if not args.no_write:
        C.write_section("Take against the trader's history (`bench/take_history.py`)", report)


def _template_trade(connection: Any) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM escrow_trade ORDER BY id LIMIT 1")
        return int(cursor.fetchone()[0])


# Columns copied from the template trade as they are; the rest are set per copy.
_SET = {"id", "state", "created_at", "updated_at", "paid_at", "released_at", "closed_at"}
_SET |= {"escrow_hold_id", "payment_deadline", "maker_id", "seller_id", "offer_id"}


# The copies: {cols} and {src} are the model's column names (escrow.models.Trade).
_HISTORY_SQL = """
WITH makers AS (
    SELECT row_number() OVER (ORDER BY o.id) - 1 AS n, o.id AS offer_id, o.maker_id
    FROM marketplace_offer o WHERE o.maker_id <> (SELECT taker_id FROM escrow_trade
                                                 WHERE id = %(template)s)
), copies AS (
    SELECT g.i, now() - interval '1 hour'
           - make_interval(secs => 31536000.0 * (g.i - %(start)s + 0.5) / %(count)s)
           AS at
    FROM generate_series(%(start)s, %(stop)s - 1) AS g(i)
)
INSERT INTO escrow_trade ({cols}, state, created_at, updated_at, paid_at,
                          released_at, closed_at, payment_deadline, maker_id,
                          seller_id, offer_id)
SELECT {src}, 'completed', c.at, c.at, c.at, c.at, c.at, c.at, m.maker_id,
       m.maker_id, m.offer_id
FROM escrow_trade t, copies c
JOIN makers m ON m.n = c.i %% (SELECT count(*) FROM makers)
WHERE t.id = %(template)s
"""


# Each copy's escrow hold on the ledger, posted: a pending transfer from the seller's account and
# its resolution, as the take and the settlement wrote them (both against the template trade's
# escrow account: the wallet reads only the seller's side). Unsealed, like a fresh backlog.
_HISTORY_LEDGER_SQL = """
WITH holds AS (
    INSERT INTO ledger_transfer (idempotency_key, asset_id, debit_account_id, credit_account_id,
                                 amount, kind, flags, reference, memo, created_at, prev_hash,
                                 hash, leaf_hash)
    SELECT 'history:' || t.id || ':hold', t.asset_id, a.id, h.credit_account_id, t.amount,
           'escrow_hold', 'pending', t.id, '', t.created_at, '', '', ''
    FROM escrow_trade t
    JOIN ledger_ledgeraccount a ON a.user_id = t.seller_id AND a.kind = 'user'
        AND a.asset_id = t.asset_id
    JOIN ledger_transfer h ON h.id = (SELECT escrow_hold_id FROM escrow_trade
                                      WHERE id = %(template)s)
    WHERE t.id >= %(first)s
    RETURNING id, asset_id, debit_account_id, credit_account_id, amount, reference, created_at
)
INSERT INTO ledger_transfer (idempotency_key, asset_id, debit_account_id, credit_account_id, amount,
                             kind, flags, pending_id, reference, memo, created_at, prev_hash, hash,
                             leaf_hash)
SELECT 'history:' || reference || ':post', asset_id, debit_account_id, credit_account_id, amount,
       'escrow_hold', 'post_pending', id, reference, '', created_at, '', '', ''
FROM holds
"""


_HISTORY_FEEDBACK_SQL = """
INSERT INTO escrow_feedback (trade_id, author_id, target_id, rating, comment, created_at, reply)
SELECT t.id, t.seller_id, t.buyer_id, 'positive', '', t.created_at, ''
FROM escrow_trade t WHERE t.id >= %(first)s
"""


# The running 30-day volumes (escrow.models.TradeVolumeDay) as the takes would have kept them,
# counted afresh from every trade, the copies included.
_HISTORY_VOLUMES_SQL = """
DELETE FROM escrow_tradevolumeday;
INSERT INTO escrow_tradevolumeday (user_id, day, eur)
SELECT party, (t.created_at AT TIME ZONE 'UTC')::date, SUM(t.value_eur)
FROM escrow_trade t, LATERAL (VALUES (t.buyer_id), (t.seller_id)) AS p(party)
WHERE t.value_eur IS NOT NULL AND t.state NOT IN ('cancelled', 'expired')
GROUP BY 1, 2
"""


def _add_history(connection: Any, template: int, start: int, count: int) -> None:
    """`count` completed trades more for the taker, each against one of the makers in turn,
    spread evenly over the last year (an hour ago at the latest); in one statement."""
    from escrow.models import Trade

    copied = [
        f.column for f in Trade._meta.concrete_fields if f.column not in _SET and f.column != "id"
    ]
    cols = ", ".join(copied)
    src = ", ".join(f"t.{c}" for c in copied)
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(max(id), 0) + 1 FROM escrow_trade")
        first = cursor.fetchone()[0]
        cursor.execute(
            _HISTORY_SQL.format(cols=cols, src=src),
            {"template": template, "start": start, "stop": start + count, "count": count},
        )
        # Triggers off for the copies (the server's superuser): each hold is resolved in the same
        # statement, so the open holds (ledger/0011's trigger) would end as they were, through a
        # year's churn at once that production spreads over the year for autovacuum.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(_HISTORY_LEDGER_SQL, {"template": template, "first": first})
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("ANALYZE ledger_transfer")
        # Each copy rated by its seller, as a busy bot's profile would be (feedback_summary).
        cursor.execute(_HISTORY_FEEDBACK_SQL, {"first": first})
        cursor.execute("SELECT to_regclass('escrow_tradevolumeday') IS NOT NULL")
        if cursor.fetchone()[0]:  # the running 30-day volumes, where the code keeps them
            cursor.execute(_HISTORY_VOLUMES_SQL)
    try:  # the traders' counts the copies changed, folded as the beat would, where kept
        from escrow.services import trader_counts_fold
    except ImportError:
        pass
    else:
        trader_counts_fold()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE escrow_trade")


def _history_counts(connection: Any, *, taker_name: str) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT count(*), count(*) FILTER (WHERE t.created_at >= now() - interval '30 days')
            FROM escrow_trade t JOIN auth_user u ON u.id = t.buyer_id WHERE u.username = %s
            """,
            [taker_name],
        )
        total, recent = cursor.fetchone()
    return {"taker_trades": int(total), "taker_trades_30d": int(recent)}


def render(payload: dict[str, Any]) -> str:
    args, results = payload["args"], payload["results"]
    base = results[0]["per_request"]
    lines = [
        "```",
        "flock /tmp/bench.lock scripts/with-services.sh .venv/bin/python bench/take_history.py "
        f"--history {args['history']} --trades {args['trades']} --rounds {args['rounds']}",
        "```",
        "",
        *C.machine_lines(payload["info"]),
        f"- Whole run: {payload['total_s'] / 60:.1f} min.",
        "",
        f"The taker has HISTORY completed trades against {MAKERS} makers, spread evenly over the "
        "last 365 days (copied in SQL from a real trade); then "
        f"{args['rounds'] * args['trades']} whole trades go through the API in-process "
        "(bench.settings, Django's test client), the taker against each maker in turn: the "
        f"book as the taker reads it (every offer asks for {REQUIRED} completed trades), take, "
        "mark paid, release, the seller's wallets, the taker's public profile (each copy "
        "rated by its seller). CPU ms a "
        "request: this process (Python) + its PostgreSQL backends, the replica's included; the "
        f"ratio is each request against its cost at the first size ({results[0]['history']}) "
        "in the same run. The copies' escrow holds and their postings are on the ledger too.",
        "",
        "| history (in 30 days) | "
        + " | ".join(f"{name}: Python + PostgreSQL ms (vs baseline)" for name in REQUESTS)
        + " | the slowest statements of the book / the take / the wallets / the profile (ms a request) |",
        "|---|" + "---|" * (len(REQUESTS) + 1),
    ]

    def total(row: dict[str, Any], name: str) -> float:
        return float(row[name]["python_ms"] + row[name]["pg_ms"])

    for r in results:
        p = r["per_request"]
        slow = " / ".join(
            "; ".join(f"`{sql[:50]}...` {ms:.2f}" for sql, ms in r["slowest_statements"][req][:2])
            for req in r["slowest_statements"]
        )
        cells = []
        for name in REQUESTS:
            if name not in p or name not in base:  # an older run's payload
                cells.append("")
                continue
            ratio = total(p, name) / total(base, name)
            cells.append(
                f"{p[name]['python_ms']:.1f} + {p[name]['pg_ms']:.1f} "
                + (
                    f"(**{ratio:.2f}x**)"
                    if name not in ("mark-paid", "release")
                    else f"({ratio:.2f}x)"
                )
            )
        lines.append(
            f"| {r['history']} ({r['counts']['taker_trades_30d']}) | "
            + " | ".join(cells)
            + f" | {slow} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
