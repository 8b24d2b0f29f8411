"""What both benchmark scripts share: the throwaway server's databases, Django in this process
or a spawned one, the machine's description, and their section of BENCHMARKS.md."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BENCH_KEY = "4c8b0c5d9e6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70819203"
# BENCH_MD: write the section elsewhere (e.g. when measuring a clean `git archive` of a commit).
BENCHMARKS_MD = Path(os.environ.get("BENCH_MD") or ROOT / "BENCHMARKS.md")


def need_services() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        sys.exit(
            "needs PostgreSQL: run as scripts/with-services.sh .venv/bin/python "
            f"bench/{Path(sys.argv[0]).name} [args]"
        )
    return url


def db_url(name: str) -> str:
    """DATABASE_URL with another database name on the same server."""
    parts = urlsplit(need_services())
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin_connect(autocommit: bool = True):
    """A psycopg connection to the maintenance database, for CREATE/DROP DATABASE."""
    import psycopg

    return psycopg.connect(db_url("postgres"), autocommit=autocommit)


def drop_db(name: str) -> None:
    with admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_db(name: str, template: str | None = None) -> None:
    """A fresh (empty, or copied from `template`) database; an old one of that name is dropped."""
    drop_db(name)
    with admin_connect() as conn:
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')


def django_setup(database: str, **env: str) -> None:
    """Point Django (bench.settings = config.settings.local for production-like workers) at
    `database` on the throwaway server and set it up; in this process, or in a spawned child."""
    os.environ["DATABASE_URL"] = db_url(database)
    # scripts/with-services.sh may start a streaming replica of the whole server: the views
    # marked replica_reads then read the bench's database there, not the test database.
    replica = os.environ.get("DATABASE_REPLICA_URL")
    if replica:
        os.environ["DATABASE_REPLICA_URL"] = urlunsplit(
            urlsplit(replica)._replace(path=f"/{database}")
        )
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ.setdefault("LEDGER_SIGNING_KEY", BENCH_KEY)
    os.environ.setdefault("DEBUG", "0")
    # A handful of users make thousands of trades: lift the tier-0 30-day volume limit (the
    # limit checks still run in offer_take, with their queries).
    os.environ.setdefault("KYC_TIER0_PER_30_DAYS", "1000000000")
    os.environ.update(env)
    import django

    django.setup()


def migrate_quietly() -> float:
    from django.core.management import call_command

    t0 = time.perf_counter()
    call_command("migrate", interactive=False, verbosity=0)
    return time.perf_counter() - t0


def api_caller(client: Any) -> Any:
    """`call(method, path, token, body=None)`: one request through Django's test client with the
    token (a POST with a fresh Idempotency-Key), asserting a 200 or 201; its JSON."""

    def call(method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"HTTP_AUTHORIZATION": f"Token {token}"}
        if method == "POST":
            headers["HTTP_IDEMPOTENCY_KEY"] = uuid.uuid4().hex
            response = client.post(path, body or {}, content_type="application/json", **headers)
        else:
            response = client.get(path, **headers)
        assert response.status_code in (200, 201), (path, response.status_code, response.content)
        return response.json()

    return call


def backends_cpu(*, replica: bool = False) -> float:
    """CPU seconds so far of this database's PostgreSQL client backends (/proc, clock ticks:
    sum it over many requests); with `replica`, the read replica's too, when there is one (the
    reads that may lag run there: the book's, the trade lists')."""
    from django.conf import settings
    from django.db import connections

    aliases = ["default"] + (["replica"] if replica and settings.READ_REPLICA else [])
    pids = []
    for alias in aliases:
        with connections[alias].cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend'"
            )
            pids += [row[0] for row in cursor.fetchall()]
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def close_django() -> None:
    """Close this process's connections, the pooled ones too (a database copied as a template,
    or dropped, must have no session left)."""
    from django.db import connections

    connections.close_all()
    for conn in connections.all(initialized_only=True):
        if getattr(conn, "pool", None) is not None:
            conn.close_pool()


# --- the machine --------------------------------------------------------------------------------


def _meminfo_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def pg_version() -> str:
    with admin_connect() as conn:
        return conn.execute("SHOW server_version").fetchone()[0]


def pg_settings(*names: str) -> dict[str, str]:
    with admin_connect() as conn:
        return {n: conn.execute(f"SHOW {n}").fetchone()[0] for n in names}


def code_version() -> str:
    """The commit measured, and whether the working tree differed from it (bench/ aside)."""
    if os.environ.get("BENCH_CODE_VERSION"):
        return os.environ["BENCH_CODE_VERSION"]
    try:
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run(
            [*git, "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", ".", ":!bench", ":!BENCHMARKS.md"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}" + (" + uncommitted changes" if dirty else "")


def machine() -> dict[str, str]:
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    import django

    flags = pg_settings("fsync", "synchronous_commit", "full_page_writes", "shared_buffers")
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": nproc,
        "cpu": _cpu_model(),
        "memory": f"{_meminfo_gib():.1f} GiB",
        "postgres": f"PostgreSQL {pg_version()} (scripts/with-services.sh: "
        + ", ".join(f"{k}={v}" for k, v in flags.items())
        + ")",
        "python": f"Python {platform.python_version()}, Django {django.get_version()}",
        "kernel": platform.release(),
        "code": code_version(),
    }


def machine_lines(info: dict[str, str]) -> list[str]:
    return [
        f"- Date: {info['date']}",
        f"- Machine: `nproc` = {info['nproc']} ({info['cpu']}), {info['memory']} RAM, "
        f"Linux {info['kernel']}",
        f"- Database: {info['postgres']}",
        f"- {info['python']}; code: {info['code']}",
    ]


_COMMAND: str | None = None  # the stored command, when re-rendering saved results


def command_line() -> str:
    if _COMMAND:
        return _COMMAND
    rel = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    args = " ".join(sys.argv[1:])
    return f"scripts/with-services.sh .venv/bin/python {rel}{(' ' + args) if args else ''}"


def save_results(name: str, payload: dict[str, Any]) -> Path:
    """Keep the raw figures (JSON, in the temp dir) so the section can be re-rendered with
    `--render FILE` without measuring again."""
    path = Path(tempfile.gettempdir()) / f"bench_{name}.json"
    path.write_text(json.dumps({**payload, "command": command_line()}, indent=1, default=str))
    print(f"raw results: {path}")
    return path


def load_results(path: str) -> dict[str, Any]:
    global _COMMAND
    data = json.loads(Path(path).read_text())
    _COMMAND = data["command"]
    return data


# --- BENCHMARKS.md ------------------------------------------------------------------------------

HEADER = """# Benchmarks

Measured by the scripts in `bench/` (benchmarks, not tests: nothing here asserts a time). Each
script rewrites only its own section below; run it again to refresh the figures. The PostgreSQL
that `scripts/with-services.sh` starts is a throwaway test server with `fsync=off`,
`synchronous_commit=off` and `full_page_writes=off`: that flatters every write-heavy figure here
(and pgbench equally), so read the ratios, not the absolute numbers, as what carries over to a
production server.
"""


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between this script's markers in BENCHMARKS.md."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block
    BENCHMARKS_MD.write_text(text)
    print(f"\nwrote the '{name}' section of {BENCHMARKS_MD}")


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (also readable as plain text in the terminal)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


@contextmanager
def stopwatch(label: str) -> Iterator[dict[str, float]]:
    box: dict[str, float] = {}
    print(f"... {label}", flush=True)
    t0 = time.perf_counter()
    yield box
    box["seconds"] = time.perf_counter() - t0
    print(f"    {label}: {box['seconds']:.1f} s", flush=True)


class CpuMeter:
    """Whole-machine CPU use from /proc/stat between start() and stop(): busy cores on average."""

    def __init__(self) -> None:
        self._t0: tuple[int, int] | None = None

    @staticmethod
    def _read() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields[:8]) - idle, sum(fields[:8])

    def start(self) -> None:
        self._t0 = self._read()

    def stop(self) -> float:
        assert self._t0 is not None
        busy, total = self._read()
        frac = (busy - self._t0[0]) / max(1, total - self._t0[1])
        return frac * (os.cpu_count() or 1)


def fmt_rate(x: float) -> str:
    if x >= 100_000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}"


def background_load(seconds: float = 2.0) -> float:
    """CPU cores other processes use over `seconds` (this benchmark idle meanwhile)."""
    meter = CpuSplit()
    meter.start()
    time.sleep(seconds)
    return meter.stop()["others"]


def wait_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (up to max_wait seconds) until the machine is nearly idle; returns the load seen last.
    Other processes on a 2-core machine (a test suite, say) skew every figure here."""
    deadline = time.monotonic() + max_wait
    load = background_load()
    while load > threshold and time.monotonic() < deadline:
        print(f"    machine busy ({load:.2f} cores in use by others); waiting", flush=True)
        time.sleep(10)
        load = background_load()
    return load


class CpuSplit:
    """The machine's busy CPU over a phase, split into ours and others'. Ours: this process and
    its descendants, and our PostgreSQL server (postmaster and backends), reaped children
    included (os.times, /proc cutime/cstime), so short-lived backends count too. Others': the
    rest of the machine (other people's test suites on a shared box). All in cores."""

    _tick = os.sysconf("SC_CLK_TCK")

    def __init__(self) -> None:
        self._busy = CpuMeter()
        self._ours0 = 0.0
        self._t0 = 0.0

    @classmethod
    def _procs(cls) -> dict[int, tuple[int, float, float]]:
        """pid -> (ppid, own CPU s, reaped children's CPU s); zombies still report theirs."""
        procs: dict[int, tuple[int, float, float]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                raw = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            rest = raw[raw.rindex(")") + 2 :].split()
            # after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
            own = (int(rest[11]) + int(rest[12])) / cls._tick
            reaped = (int(rest[13]) + int(rest[14])) / cls._tick
            procs[int(entry.name)] = (int(rest[1]), own, reaped)
        return procs

    @staticmethod
    def postmaster() -> int | None:
        services = os.environ.get("TEST_SERVICES_DIR")
        if services:
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(Path(services, "pgdata", "postmaster.pid").read_text().split()[0])
        return None

    @classmethod
    def ours_cpu(cls) -> float:
        me = os.getpid()
        t = os.times()
        total = t.user + t.system + t.children_user + t.children_system
        procs = cls._procs()
        roots = {me}
        pm = cls.postmaster()
        if pm in procs:
            roots.add(pm)
            total += procs[pm][1] + procs[pm][2]
        for pid, (ppid, own, reaped) in procs.items():
            if pid in roots:
                continue
            p, depth = ppid, 0
            while p > 1 and depth < 64:
                if p in roots:
                    total += own + reaped
                    break
                p = procs[p][0] if p in procs else 0
                depth += 1
        return total

    def start(self) -> None:
        self._busy.start()
        self._ours0 = self.ours_cpu()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        ours = (self.ours_cpu() - self._ours0) / max(1e-9, time.monotonic() - self._t0)
        busy = self._busy.stop()
        return {"busy": busy, "ours": ours, "others": max(0.0, busy - ours)}
