"""pytest: the DATABASE_URL / REDIS_URL that `make test` exports (PostgreSQL and Redis)."""

import tempfile
from decimal import Decimal

from .base import *  # noqa: F403
from .base import env

DEBUG = False
SECRET_KEY = env("SECRET_KEY", default="test-only-not-secret")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.locmem.EmailBackend")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# A fixed, public, test-only checkpoint key, so the test process and its Celery worker agree.
LEDGER_SIGNING_KEY = env(
    "LEDGER_SIGNING_KEY", default="9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
)
LEDGER_CHECKPOINT_EVERY = env.int("LEDGER_CHECKPOINT_EVERY", default=4)

# Uploaded attachments and evidence go to a throwaway folder.
PRIVATE_MEDIA_ROOT = env("PRIVATE_MEDIA_ROOT", default=tempfile.mkdtemp(prefix="private-media-"))

# Tests about trading shouldn't trip over KYC limits; the KYC tests set the real ones explicitly.
_NO_LIMIT = {"per_trade": Decimal("1e12"), "per_30_days": Decimal("1e12")}
KYC_LIMITS_EUR = {0: _NO_LIMIT, 1: _NO_LIMIT, 2: _NO_LIMIT}

# Tests open many offers and trades from a few traders in a moment: the abuse caps are off here;
# their tests (marketplace/tests/test_abuse.py, escrow/tests/test_abuse.py) set them.
MAX_OPEN_OFFERS = {0: 100_000, 1: 100_000, 2: 100_000}
MAX_UNPAID_TRADES = 100_000
TAKES_PER_MAKER_PER_MINUTE = 100_000
# issue 20: the daily cancellation limit (escrow/tests/test_trader_rules.py sets the real 3).
CANCEL_LIMIT_PER_DAY = 100_000
# Fixtures price offers freely (e.g. 1,000 EUR/BTC to sort a book); the price tests set 20.
PRICE_PROTECTION_PCT = Decimal(1_000_000)

# One client (127.0.0.1) makes every test request, and the counters live in Redis across
# tests: limits high here; the throttling test sets its own.
API_RATE_LIMITS = {"key": "100000/min", "ip": "100000/min", "auth": "100000/min"}

# The webhook tests deliver to their own plain-http receiver on 127.0.0.1 (loopback only: other
# private addresses stay refused). Production refuses to start with either of these on.
WEBHOOK_ALLOW_HTTP = True
WEBHOOK_ALLOW_PRIVATE_ADDRESSES_FOR_TESTS = True

# Every test client signs up from 127.0.0.1 and the counters live in Redis across tests: the
# sign-up throttle test sets its own limit.
SIGNUP_PER_ADDRESS_PER_HOUR = 0

# Parallel test processes (pytest-xdist) share one Redis server but not one database: each worker
# caches in a Redis database of its own (gw0 -> 1, gw1 -> 2, ...), so one's "last seen", rate-limit
# counters or cache.clear() never reach another's. The Celery broker stays on REDIS_URL.
_WORKER = env("PYTEST_XDIST_WORKER", default="")
if _WORKER.startswith("gw") and _WORKER[2:].isdigit():
    from urllib.parse import urlsplit, urlunsplit

    _url = urlsplit(CACHES["default"]["LOCATION"])  # noqa: F405
    CACHES["default"]["LOCATION"] = urlunsplit(  # noqa: F405
        _url._replace(path=f"/{1 + int(_WORKER[2:]) % 15}")
    )

# The chain is off unless a test asks for a node: the `evm` fixture (conftest.py) starts its own
# Anvil and sets EVM_TEST_RPC_URL (and the keys) for this process and the workers it starts.
# EVM_RPC_URL, which `make test` exports for its shared node, is not read here.
EVM_RPC_URL = env("EVM_TEST_RPC_URL", default="")
EVM_CONFIRMATIONS = env.int("EVM_CONFIRMATIONS", default=2)

# --- pooled connections and the read replica (issue 17) ---
# The pool as in production, sized for the tests' threads: a live server serves each request on
# a thread of its own, and the concurrency tests race dozens of threads at once (the pool grows
# to what they hold and shrinks back). The fault tests check the pool's timeout on a dead database.
for _alias in ("default", "replica"):
    if "pool" in DATABASES[_alias]["OPTIONS"]:  # noqa: F405
        DATABASES[_alias]["OPTIONS"]["pool"]["max_size"] = env.int(  # noqa: F405
            "DATABASE_POOL_MAX_SIZE", default=100
        )
if "pool" in DATABASES["default"]["OPTIONS"]:  # noqa: F405
    DATABASES["default"]["OPTIONS"]["pool"]["timeout"] = env.float(  # noqa: F405
        "DATABASE_POOL_TIMEOUT", default=10.0
    )
# `make test` starts a real streaming replica (scripts/with-services.sh: DATABASE_REPLICA_URL) and
# the `replica` alias mirrors the test database on it; no read goes there unless a test asks
# (the `read_replica` fixture of tests/test_read_replica.py): a test inside a transaction that the
# replica never sees would read nothing there.
READ_REPLICA = False
# --- end ---
# --- LIVE PUSH (issue 18) --------------------------------------------------------------------
# Each xdist worker's channel layer and event streams in its own Redis database, like its cache:
# two workers' users share ids (their databases differ), their events must not meet.
LIVE_ENABLED = False
LIVE_REDIS_URL = CACHES["default"]["LOCATION"]  # noqa: F405
CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"] = LIVE_REDIS_URL  # type: ignore[index]  # noqa: F405

# The order book's 1-second cache (marketplace.book_cache) would carry a page from one test into
# the next (the database is emptied between tests, the Redis entry and its version are not):
# off here; marketplace/tests/test_book_cache.py switches it on.
ORDER_BOOK_CACHE_SECONDS = 0
BLOCKED_CACHE_SECONDS = 0  # the same for a viewer's cached blocked set (issue 17, lean API)
# Every prepared read (common.prepared) is also built by Django with its real values, and the
# test fails unless both give the same statement and parameters.
PREPARED_READS_CHECK = True
