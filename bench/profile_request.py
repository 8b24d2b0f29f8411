#!/usr/bin/env python
"""Where each ms of one API request goes (issue 17): N requests of a URL, in this process, through
Django's WSGI handler (the whole middleware stack, as gunicorn calls it), profiled with
pyinstrument, itemised twice.

    scripts/with-services.sh .venv/bin/python bench/profile_request.py --requests 1000

1. A fresh database `bench_profile` on the throwaway server, bench.settings (DEBUG off, the
   pooled connection, the API's rate limits lifted as bench/load.py lifts them), seeded as
   bench/load.py seeds it (traders with a token, a deposit and sell offers of BTC for EUR).
2. Per URL (default: the yardstick, the trivial endpoint and the API book, each with a trader's
   token as bench/load.py calls them): --warm requests, then --requests timed without a profiler
   (wall and this process's CPU per request), then --requests again under pyinstrument.
3. Printed per URL, as ms per request:
   - by stage: the request's path through Django and DRF (each middleware's own code, DRF's
     request wrapping, authentication, throttles, permissions, content negotiation, the view,
     finalize_response, rendering): each sample goes to the innermost stage on its stack;
   - by kind of work: SQL (psycopg and the backend), ORM, Redis (the client and Django's cache),
     serializers, JSON, logging, the rest: each sample goes to the innermost kind on its stack;
   - the top frames by their own time.
   The stages and kinds each sum to the profiled time per request (the profiler's own overhead
   is in it: compare with the unprofiled wall time above it).

Not a test and not the throughput: bench/load.py measures that, over HTTP with gunicorn. This
says what a request spends its time on, single-threaded, with PostgreSQL and Redis on the same
machine (their wait is in the SQL and Redis figures)."""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as C

DB = "bench_profile"
YARDSTICK = "/api/v1/bench/select-1/"
TRIVIAL = "/api/v1/ledger/public-key/"
BOOK = "/api/v1/offers/?side=sell&asset=BTC&fiat=EUR"
LIFTED = "1000000/s"

# A frame: (function, file path, class name or ""). Rules are tried in order; the first that
# matches names the frame's stage (or kind). A sample goes to the innermost named frame.
Rule = tuple[str, Callable[[str, str, str], bool]]


def _file(*parts: str) -> Callable[[str, str, str], bool]:
    return lambda fn, path, cls: any(p in path for p in parts)


def _func(path_part: str, *names: str) -> Callable[[str, str, str], bool]:
    return lambda fn, path, cls: path_part in path and fn in names


def _middleware(fn: str, path: str, cls: str) -> bool:
    return fn in ("__call__", "process_request", "process_response", "process_view") and (
        "Middleware" in cls or "NotForApi" in cls
    )


STAGES: list[Rule] = [
    ("DRF: rendering (JSONRenderer)", _func("rest_framework/response.py", "rendered_content")),
    ("DRF: finalize_response (+ headers)", _func("", "finalize_response")),
    ("DRF: content negotiation", _func("", "perform_content_negotiation")),
    ("DRF: authentication + throttles, one Redis trip (ApiView.initial)", _func("common/api.py", "_authenticate_and_throttle")),
    ("DRF: authentication", _func("", "perform_authentication")),
    ("DRF: throttles", _func("", "check_throttles")),
    ("DRF: permissions", _func("", "check_permissions")),
    ("DRF: request wrapping (initialize_request)", _func("", "initialize_request")),
    ("DRF: dispatch, the rest", _func("rest_framework/views.py", "dispatch", "initial")),
    ("the view (handler)", _file("/bench/urls.py")),
    ("the view (handler)", lambda fn, path, cls: fn in ("get", "post") and "/site-packages/" not in path and "Api" in cls),
    ("Django: URL resolving", _file("django/urls/")),
    ("Django: view wrappers (csrf_exempt, replica_reads...)", _func("", "_view_wrapper", "wrapper_view", "view")),
    ("middleware: {cls}", _middleware),
    ("Django: WSGI handler, request/response objects", _file("django/core/handlers/", "django/http/")),
]  # fmt: skip

KINDS: list[Rule] = [
    ("SQL: psycopg + PostgreSQL's answer", _file("/psycopg/", "/psycopg_pool/")),
    ("SQL: Django's backend (cursor, execute wrappers)", _file("django/db/backends/", "django/db/utils.py", "django/db/transaction.py", "django/db/__init__.py")),
    ("ORM: query building, compiling, model rows", _file("django/db/models/")),
    ("Redis: redis-py + Redis's answer", _file("/redis/")),
    ("Redis: Django's cache layer (pickling, keys)", _file("django/core/cache/", "pickle")),
    ("DRF serializers and fields", _file("rest_framework/serializers.py", "rest_framework/fields.py", "rest_framework/relations.py")),
    ("JSON encoding (renderer)", _file("rest_framework/renderers.py", "rest_framework/utils/encoders.py", "json/encoder.py", "json/__init__.py", "orjson")),
    ("logging", _file("/logging/")),
    ("Django signals", _file("django/dispatch/")),
    ("translation, settings, lazy objects", _file("django/utils/translation/", "django/conf/", "django/utils/functional.py")),
    ("DRF, the rest", _file("rest_framework/")),
    ("Django, the rest", _file("/django/")),
    ("other libraries", _file("/site-packages/")),
    # The standard library and built-ins (socket, copy, re...) count as their caller's work.
    ("project code (own lines)", lambda fn, path, cls: "/lib/python3" not in path and not path.startswith("<") and path != ""),
]  # fmt: skip


def _name(rules: list[Rule], fn: str, path: str, cls: str) -> str | None:
    for label, match in rules:
        if match(fn, path, cls):
            return label.format(cls=cls or fn)
    return None


def itemise(session: Any, rules: list[Rule]) -> dict[str, float]:
    """Seconds per label over the whole session: each frame's own time goes to the innermost
    labelled frame on its stack (itself included)."""
    out: dict[str, float] = defaultdict(float)

    def walk(frame: Any, current: str) -> None:
        # pyinstrument's synthetic frames ([self], ...) hold their parent's own time.
        label = None
        if not frame.is_synthetic:
            label = _name(
                rules, frame.function or "", frame.file_path or "", frame.class_name or ""
            )
        here = label or current
        children = frame.children
        own = frame.time - sum(c.time for c in children)
        out[here] += max(0.0, own)
        for child in children:
            walk(child, here)

    root = session.root_frame()
    if root is not None:
        walk(root, "outside the request")  # the stdlib frames above the handler
    return out


def own_times(session: Any) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)

    def walk(frame: Any, where: str) -> None:
        if not frame.is_synthetic:
            name = f"{frame.class_name}.{frame.function}" if frame.class_name else frame.function
            where = f"{Path(frame.file_path or '?').name}:{frame.line_no} {name}"
        own = frame.time - sum(c.time for c in frame.children)
        out[where] += max(0.0, own)
        for child in frame.children:
            walk(child, where)

    root = session.root_frame()
    if root is not None:
        walk(root, "?")
    return out


def wsgi_caller(token: str) -> Callable[[str], tuple[str, bytes]]:
    """A function that GETs a path through Django's WSGI handler, as gunicorn would."""
    from django.core.wsgi import get_wsgi_application

    app = get_wsgi_application()

    def call(path: str) -> tuple[str, bytes]:
        path_info, _, query = path.partition("?")
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "HTTP_HOST": "127.0.0.1",
            "REMOTE_ADDR": "127.0.0.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_AUTHORIZATION": f"Token {token}",
            "HTTP_ACCEPT": "*/*",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        status: list[str] = []
        body = app(environ, lambda s, h, exc_info=None: status.append(s))
        try:
            data = b"".join(body)
        finally:
            close = getattr(body, "close", None)
            if close:
                close()
        return status[0], data

    return call


def profile_url(
    call: Callable[[str], tuple[str, bytes]],
    path: str,
    n: int,
    warm: int,
    interval: float,
    tree: bool = False,
) -> dict[str, Any]:
    from pyinstrument import Profiler

    for _ in range(warm):
        status, body = call(path)
    if not status.startswith("200"):
        sys.exit(f"{path}: {status} {body[:300]!r}")
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        call(path)
    wall = (time.perf_counter() - t0) / n * 1000
    cpu = (time.process_time() - c0) / n * 1000
    profiler = Profiler(interval=interval, async_mode="disabled")
    profiler.start()
    for _ in range(n):
        call(path)
    session = profiler.stop()
    if tree:
        print(
            profiler.output_text(unicode=True, color=False, show_all=False, time="percent_of_total")
        )
    total = session.duration / n * 1000
    return {
        "wall_ms": wall,
        "cpu_ms": cpu,
        "profiled_ms": total,
        "bytes": len(body),
        "stages": {k: v / n * 1000 for k, v in itemise(session, STAGES).items()},
        "kinds": {k: v / n * 1000 for k, v in itemise(session, KINDS).items()},
        "own": {k: v / n * 1000 for k, v in own_times(session).items()},
    }


def show(path: str, got: dict[str, Any], yard: dict[str, Any] | None, top: int) -> None:
    ratio = f"; {yard['wall_ms'] / got['wall_ms']:.2f}x the yardstick's rate" if yard else ""
    print(
        f"\n== GET {path}: {got['wall_ms']:.3f} ms a request ({got['cpu_ms']:.3f} ms of this "
        f"process's CPU){ratio}; {got['bytes']} bytes; profiled {got['profiled_ms']:.3f} ms"
    )
    for title, items in (("by stage", got["stages"]), ("by kind of work", got["kinds"])):
        print(f"  -- {title} (ms a request)")
        for label, ms in sorted(items.items(), key=lambda kv: -kv[1]):
            if ms >= 0.005:
                print(f"    {ms:7.3f}  {label}")
    print(f"  -- top {top} frames by own time (ms a request)")
    for where, ms in sorted(got["own"].items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {ms:7.3f}  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="per URL, timed and profiled")
    parser.add_argument("--warm", type=int, default=100)
    parser.add_argument("--traders", type=int, default=16)
    parser.add_argument("--offers-each", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.0001, help="sampling, seconds")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--url", action="append", help="a path to profile (repeatable); default: the yardstick, "
        "the trivial endpoint and the API book",
    )  # fmt: skip
    parser.add_argument("--tree", action="store_true", help="print pyinstrument's call tree too")
    parser.add_argument("--keep-db", action="store_true", help="reuse bench_profile as it is")
    args = parser.parse_args()
    C.need_services()
    env = {"API_RATE_LIMIT_KEY": LIFTED, "API_RATE_LIMIT_IP": LIFTED}
    if not args.keep_db:
        C.create_db(DB)
    C.django_setup(DB, **env)
    if not args.keep_db:
        from bench.load import seed

        C.migrate_quietly()
        token = seed(args.traders, args.offers_each)["users"][0]["token"]
    else:
        from django.contrib.auth import get_user_model

        from accounts.services import token_rotate

        token = token_rotate(user=get_user_model().objects.order_by("pk").first()).key
    C.close_django()
    call = wsgi_caller(token)
    paths = args.url or [YARDSTICK, TRIVIAL, BOOK]
    print("\n".join(C.machine_lines(C.machine())))
    print(f"{args.requests} requests each, pyinstrument every {args.interval * 1e6:.0f} us")
    yard: dict[str, Any] | None = None
    for path in paths:
        got = profile_url(call, path, args.requests, args.warm, args.interval, args.tree)
        show(path, got, yard if path != YARDSTICK else None, args.top)
        if path == YARDSTICK:
            yard = got
    C.close_django()


if __name__ == "__main__":
    main()
