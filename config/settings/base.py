"""Settings shared by every environment; everything that differs comes from the environment."""

import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from operations.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()
env.read_env(str(BASE_DIR / ".env"), overwrite=False)

# GENERAL
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
TIME_ZONE = "UTC"
USE_TZ = True
LANGUAGE_CODE = "en-us"
USE_I18N = True
# --- LANGUAGES (issue 20: i18n; LocaleMiddleware below, catalogues in locale/) ---
# The languages of the site: the browser's Accept-Language picks one for a visitor, the language
# selector (accounts.views.language_set) stores a user's choice on their profile. Catalogues are
# compiled to .mo by `manage.py compilecatalogs` (Babel, no system gettext needed).
LANGUAGES = [
    ("en", "English"),
    ("es", "Español"),
    ("pt-br", "Português (Brasil)"),
    ("ru", "Русский"),
    ("ar", "العربية"),
]
LOCALE_PATHS = [BASE_DIR / "locale"]
LANGUAGE_COOKIE_NAME = "lang"
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
LANGUAGE_COOKIE_SAMESITE = "Lax"
# --- end LANGUAGES ---
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

# DATABASES
# PostgreSQL, always (`make run` and `make test` start one): 18-decimal money held and added
# exactly, and row locks that serialize concurrent writers. No other engine is supported.
# --- pooled connections, PgBouncer and the read replica (issue 17; docs/scaling.md) ---
# Pooled by default: each process keeps psycopg's connection pool (Django's OPTIONS["pool"]) and
# takes a checked, already open connection per request or task, instead of opening a PostgreSQL
# backend each time (BENCHMARKS.md: ~4x on a request with one query). A dead database gives a
# PoolTimeout (an OperationalError: the API's clean 503) after DATABASE_POOL_TIMEOUT seconds at
# most, never a hang; the pool reconnects by itself. DATABASE_POOL=false: persistent connections
# (CONN_MAX_AGE seconds) with the same health check instead.
DATABASE_POOL = env.bool("DATABASE_POOL", default=True)
DATABASE_POOL_OPTIONS = {
    # Per process and alias: a sync gunicorn worker or a prefork Celery child uses one; threaded
    # servers (runserver, gthread, Celery's threads pool) one per busy thread.
    "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=1),
    "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=8),
    # How long a request waits for a connection before its 503.
    "timeout": env.float("DATABASE_POOL_TIMEOUT", default=5.0),
    # A failed reconnection backs off (1 s, 2 s, 4 s...): give up after this long, so that the
    # next request tries afresh and a database that is back is used within seconds.
    "reconnect_timeout": env.float("DATABASE_POOL_RECONNECT_TIMEOUT", default=3.0),
    "max_idle": 300.0,
    "max_lifetime": 1800.0,
}


# Behind PgBouncer in transaction pooling mode (docker-compose's `pgbouncer`), a server
# connection changes hands between transactions: nothing may outlive one. So no server-side
# cursors outside a transaction (Django's .iterator() would open WITH HOLD cursors) and no
# prepared statements (DATABASE_PREPARE_THRESHOLD defaults to 0 behind it). What needs a
# session of its own bypasses PgBouncer through DATABASE_DIRECT_URL: the commands below.
DATABASE_BEHIND_PGBOUNCER = env.bool("DATABASE_BEHIND_PGBOUNCER", default=False)


def _database(url: str, *, direct: str = "") -> dict[str, Any]:
    db: dict[str, Any] = env.db_url_config(url)
    if db["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured(f"{direct or 'DATABASE_URL'} must name a PostgreSQL database")
    # Money services open their own durable transactions; a request-wide one would nest them.
    db["ATOMIC_REQUESTS"] = False
    db["CONN_HEALTH_CHECKS"] = True
    options = db.setdefault("OPTIONS", {})
    # An unreachable host fails the connection attempt in seconds, not TCP's minutes.
    options.setdefault("connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5))
    # Server-side prepared statements (psycopg prepares a query its connection has run this many
    # times; PostgreSQL then skips parsing and, once its plan is generic, planning: the ORM's
    # joins cost more to plan than to run). 0 turns them off. Behind PgBouncer they need
    # max_prepared_statements > 0 there (PgBouncer >= 1.21), else set 0 here.
    prepare = env.int("DATABASE_PREPARE_THRESHOLD", default=0 if DATABASE_BEHIND_PGBOUNCER else 5)
    options["prepare_threshold"] = prepare or None
    # Parameters bound by the server (psycopg's default cursor): a client-side bound query is
    # plain text, never prepared.
    options["server_side_binding"] = bool(prepare)
    if DATABASE_POOL:
        db["CONN_MAX_AGE"] = 0  # the pool keeps the connections (Django refuses both)
        options["pool"] = dict(DATABASE_POOL_OPTIONS)
    else:
        db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    return db


# Straight to PostgreSQL, when DATABASE_URL goes through PgBouncer: migrations (session-level
# locks, long DDL), verify_ledger and export_ledger (exported snapshots, named cursors held
# across fetches), dbshell. Those commands use it for `default` when it is set.
DATABASE_DIRECT_URL = env("DATABASE_DIRECT_URL", default="")
DIRECT_DATABASE_COMMANDS = {
    "migrate",
    "verify_ledger",
    "export_ledger",
    "dbshell",
    "createcachetable",
}
_direct = (
    bool(DATABASE_DIRECT_URL)
    and Path(sys.argv[0]).name == "manage.py"
    and sys.argv[1:2] != []
    and sys.argv[1] in DIRECT_DATABASE_COMMANDS
)
DATABASES = {
    "default": _database(DATABASE_DIRECT_URL, direct="DATABASE_DIRECT_URL")
    if _direct
    else _database(env("DATABASE_URL"))
}
if DATABASE_BEHIND_PGBOUNCER and not _direct:
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
if DATABASE_DIRECT_URL:
    # Session advisory locks (the chain's sequencer and deposit watcher: common.db.session_lock)
    # on a session of their own straight to PostgreSQL: not pooled, closed after each request
    # or task, so a lock never stays with a connection someone else gets.
    DATABASES["direct"] = _database(DATABASE_DIRECT_URL, direct="DATABASE_DIRECT_URL")
    DATABASES["direct"]["OPTIONS"].pop("pool", None)
    DATABASES["direct"]["CONN_MAX_AGE"] = 0
    DATABASES["direct"]["TEST"] = {"MIRROR": "default"}

# Reads that may lag by a second (the order book, public profiles, trade history lists, proofs of
# sealed entries) go to a streaming replica: the views that make them say so (common.db.
# replica_reads) and common.db.ReplicaRouter sends them, unless the replica is down (then the
# primary, retried after REPLICA_RETRY_SECONDS) or lags more than REPLICA_MAX_LAG_SECONDS
# (measured at most every REPLICA_CHECK_SECONDS). Unset: the alias is the primary's twin and no
# read leaves the primary. In tests the replica is a mirror of the test database.
DATABASE_REPLICA_URL = env("DATABASE_REPLICA_URL", default="")
DATABASES["replica"] = (
    _database(DATABASE_REPLICA_URL, direct="DATABASE_REPLICA_URL")
    if DATABASE_REPLICA_URL
    else dict(DATABASES["default"], OPTIONS=dict(DATABASES["default"]["OPTIONS"]))
)
DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
if DATABASE_REPLICA_URL:
    # A replica that is down costs the request that finds out at most this long (then the
    # primary, and the circuit breaker spares the next ones).
    DATABASES["replica"]["OPTIONS"]["connect_timeout"] = 2  # libpq's minimum
    if DATABASE_POOL:
        DATABASES["replica"]["OPTIONS"]["pool"]["timeout"] = env.float(
            "REPLICA_POOL_TIMEOUT", default=1.0
        )
READ_REPLICA = bool(DATABASE_REPLICA_URL)
REPLICA_MAX_LAG_SECONDS = env.float("REPLICA_MAX_LAG_SECONDS", default=1.0)
REPLICA_CHECK_SECONDS = env.float("REPLICA_CHECK_SECONDS", default=1.0)
REPLICA_RETRY_SECONDS = env.float("REPLICA_RETRY_SECONDS", default=5.0)
DATABASE_ROUTERS = ["common.db.ReplicaRouter"]
# --- end ---

# APPS
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "axes",
    "csp",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "common",
    "accounts",
    "ledger",
    "marketplace",
    "escrow",
    "disputes",
    "lending",
    "notifications",
    "operations",
]

# MIDDLEWARE
MIDDLEWARE = [
    # First: /healthz, /readyz and /metrics answer before host checks and the HTTPS redirect;
    # then the request id every later log line carries, and the request metrics (operations/).
    "operations.middleware.ProbeMiddleware",
    "operations.middleware.RequestContextMiddleware",
    "operations.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language: the cookie of the language selector, else Accept-Language (issue 20).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    # --- issue 17: the lean API path. Each `config.middleware.*NotForApi` is the middleware it
    # names, skipped for /api/v1/ only (config/middleware.py says why each is safe to skip).
    "config.middleware.CsrfNotForApi",  # django.middleware.csrf.CsrfViewMiddleware
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Not skipped for the API though it needs none: the admin checks this exact path (E409),
    # and it costs nothing until a view adds a message.
    "django.contrib.messages.middleware.MessageMiddleware",
    "config.middleware.XFrameNotForApi",  # django.middleware.clickjacking...
    "django_otp.middleware.OTPMiddleware",
    "accounts.middleware.LastSeenMiddleware",
    # Times in the logged-in user's zone (issue 15: from the browser, stored on the profile).
    "config.middleware.TimeZoneNotForApi",  # accounts.middleware.TimeZoneMiddleware
    # A logged-in user's pages in the language stored on their profile (issue 20).
    "accounts.middleware.UserLanguageMiddleware",
    # Before any view: a login or signup records the device it came from.
    "config.middleware.DeviceCookieNotForApi",  # accounts.middleware.DeviceCookieMiddleware
    "config.middleware.HtmxNotForApi",  # django_htmx.middleware.HtmxMiddleware
    "config.middleware.CspNotForApi",  # csp.middleware.CSPMiddleware
    # --- end of issue 17's block
    # Last, as django-axes asks: it turns a lockout into a response.
    "axes.middleware.AxesMiddleware",
]
# Django's deploy checks look for CsrfViewMiddleware and XFrameOptionsMiddleware by name; both
# run, for every page but /api/v1/ (DRF checks CSRF itself there), as config.middleware's
# CsrfNotForApi and XFrameNotForApi (issue 17; tests/test_api_lean_path.py).
SILENCED_SYSTEM_CHECKS = ["security.W002", "security.W003"]

# TEMPLATES
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "accounts.context_processors.two_factor",
                "notifications.context_processors.unread",
            ],
        },
    },
]

# STATIC
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]

CSRF_FAILURE_VIEW = "common.views.csrf_failure"

# SECURITY HEADERS
# The UI loads only its own scripts (htmx is served from static/); htmx injects its indicator
# styles, hence 'unsafe-inline' for styles only. /api/docs/ (Swagger UI) is exempted in urls.py.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_HTTPONLY = True
# Addresses (IPs or CIDRs) of the reverse proxies in front of `web`, e.g. the TLS proxy. Only a
# request from one of them may tell the client's address in X-Forwarded-For (common.http.
# client_ip); from anyone else the header is ignored. Empty: REMOTE_ADDR is the client.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

# FILES
# Trade attachments and evidence never live under a public URL: views check who may read them.
PRIVATE_MEDIA_ROOT = env("PRIVATE_MEDIA_ROOT", default=str(BASE_DIR / "private_media"))
# Past one host, private files go to an S3-compatible bucket (AWS S3, MinIO, Ceph, R2...) through
# django-storages when PRIVATE_STORAGE_BUCKET is set; never public, never a URL (common.files).
PRIVATE_STORAGE: dict[str, Any] | None = None
if env("PRIVATE_STORAGE_BUCKET", default=""):
    PRIVATE_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env("PRIVATE_STORAGE_BUCKET"),
            "endpoint_url": env("PRIVATE_STORAGE_ENDPOINT_URL", default="") or None,
            "region_name": env("PRIVATE_STORAGE_REGION", default="") or None,
            "access_key": env("PRIVATE_STORAGE_ACCESS_KEY", default="") or None,
            "secret_key": env("PRIVATE_STORAGE_SECRET_KEY", default="") or None,
            "location": env("PRIVATE_STORAGE_PREFIX", default="") or "private",
            "default_acl": "private",
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
CHAT_ATTACHMENT_MAX_BYTES = env.int("CHAT_ATTACHMENT_MAX_BYTES", default=5 * 1024 * 1024)
# Idempotency fingerprints read the whole body, attachments included.
DATA_UPLOAD_MAX_MEMORY_SIZE = 12 * 1024 * 1024
CHAT_ATTACHMENT_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"}
# Per user and trade, counted from the chat's own rows (no cache): a burst cannot flood the room.
CHAT_MESSAGES_PER_MINUTE = env.int("CHAT_MESSAGES_PER_MINUTE", default=20)

# AUTH
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTHENTICATION_BACKENDS = [
    # Login throttling and lockout: repeated failures for a username from an IP lock it out.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=1.0)
# A right fund password is remembered this long (accounts.services.funds): the next release or
# withdrawal with the same password skips Argon2's ~200 ms of CPU. 0 hashes every time.
FUNDS_PASSWORD_MEMO_SECONDS = env.int("FUNDS_PASSWORD_MEMO_SECONDS", default=300)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "common.views.lockout"
# The address as common.http.client_ip reads it (behind a trusted proxy, the client's, never the
# proxy's): the lockout is per username and client address, so a stranger elsewhere can't lock
# anyone out.
AXES_CLIENT_IP_CALLABLE = "common.http.client_ip"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# CACHES
# One Redis for the cache (rate limits, the book's stats) and the Celery broker.
REDIS_URL = env("REDIS_URL")
# Short timeouts: a stalled Redis must not stall requests (rate limits then fail open).
CACHES = {
    "default": {
        # issue 17 (lean API path): Django's Redis backend, one redis-py client per pool
        "BACKEND": "common.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
}

# CELERY
# Always a real worker and beat (`make run` starts both). Settlement tolerates redelivery:
# late acks and requeue on a lost worker, with idempotency in PostgreSQL.
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 300,
    # A stalled broker must not stall the request that queues a task: the outbox row is already
    # committed and the sweeper re-queues it.
    "socket_timeout": 2,
    "socket_connect_timeout": 2,
}
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "escrow-expire-overdue": {"task": "escrow.tasks.expire_overdue_trades", "schedule": 15.0},
    "escrow-sweep-settlements": {"task": "escrow.tasks.sweep_settlements", "schedule": 30.0},
    "escrow-settle-pending": {"task": "escrow.tasks.settle_pending", "schedule": 60.0},
    # The traders' counts' changes into their totals (escrow.services.counts): what a read of
    # a trader's stats sums stays at about a fold's worth of their trades.
    "escrow-fold-trader-counts": {"task": "escrow.tasks.fold_trader_counts", "schedule": 15.0},
    "notifications-sweep-trade-news": {
        "task": "notifications.tasks.sweep_trade_news",
        "schedule": 30.0,
    },
    "ledger-seal": {"task": "ledger.tasks.seal_pending", "schedule": 5.0},
    "ledger-process-withdrawals": {"task": "ledger.tasks.sweep_withdrawals", "schedule": 30.0},
    "lending-collect-installments": {
        "task": "lending.tasks.collect_installments",
        "schedule": 300.0,
    },
    "lending-check-ltv": {"task": "lending.tasks.check_ltv", "schedule": 60.0},
    "lending-sweep-requests": {"task": "lending.tasks.sweep_requests", "schedule": 60.0},
    "lending-default-overdue": {"task": "lending.tasks.default_overdue", "schedule": 300.0},
    "common-prune-idempotency-records": {
        "task": "common.tasks.idempotency_records_prune",
        "schedule": 3600.0,
    },
}
# After a password change or reset, withdrawals wait this long (accounts.services.credentials).
PASSWORD_CHANGE_WITHDRAW_LOCK_HOURS = env.int("PASSWORD_CHANGE_WITHDRAW_LOCK_HOURS", default=24)
# How long an Idempotency-Key replays its first answer; older records are ignored and pruned
# hourly (common.tasks.idempotency_records_prune).
IDEMPOTENCY_TTL_HOURS = env.int("IDEMPOTENCY_TTL_HOURS", default=24)

# REST FRAMEWORK
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.TokenOrApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # issue 17: DRF's JSON, its bytes written by orjson (common/renderers.py says why the same)
    "DEFAULT_RENDERER_CLASSES": [
        "common.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "common.api.exception_handler",
    "COERCE_DECIMAL_TO_STRING": True,
    "DEFAULT_PAGINATION_CLASS": "common.api.CursorPage",
    "PAGE_SIZE": 50,
}
# How old the makers' stats shown in the order book may be (accounts.selectors.
# trader_stats_recent); 0 counts them afresh on every request.
TRADER_STATS_CACHE_SECONDS = env.int("TRADER_STATS_CACHE_SECONDS", default=60)
# Issue 17: how long a token's or API key's look-up stays cached (revocations delete it at once,
# accounts.authentication), and the order book's public part (each change to an offer or the
# price index invalidates it at once; the TTL bounds what depth a maker's balance shows).
AUTH_CACHE_SECONDS = env.int("AUTH_CACHE_SECONDS", default=30)
ORDER_BOOK_CACHE_SECONDS = env.int("ORDER_BOOK_CACHE_SECONDS", default=1)
# The bound on a viewer's cached blocked set (accounts.selectors.blocked_ids_cached) for what no
# service announces (an admin's edit); blocking and unblocking are seen on the next read.
BLOCKED_CACHE_SECONDS = env.int("BLOCKED_CACHE_SECONDS", default=60)
# Requests per period, per API key (or user) and per IP; Redis-backed through the cache.
API_RATE_LIMITS = {
    "key": env("API_RATE_LIMIT_KEY", default="600/min"),
    "ip": env("API_RATE_LIMIT_IP", default="1200/min"),
    "auth": env("API_RATE_LIMIT_AUTH", default="30/min"),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Escrow P2P marketplace API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "OfferSideEnum": "marketplace.models.Offer.Side",
        "TakerSideEnum": [("buy", "buy"), ("sell", "sell")],
        "NotificationCategoryEnum": "notifications.models.NotificationPreference.Category",
    },
    "DESCRIPTION": (
        "Trade crypto for fiat through escrow. Authenticate with `Authorization: Token <key>`. "
        "Amounts are decimal strings. POSTs accept an `Idempotency-Key` header. Errors are "
        '`{"error": {"code", "message", "fields"}}`.'
    ),
}

# MARKETPLACE RULES
# Fee rates are fractions of the trade amount, charged in the asset: the seller's side on top of
# the escrow hold, the buyer's side out of what they receive.
MAKER_FEE_RATE = Decimal(env("MAKER_FEE_RATE", default="0.001"))
TAKER_FEE_RATE = Decimal(env("TAKER_FEE_RATE", default="0.002"))
DISPUTE_DELAY = timedelta(minutes=env.int("DISPUTE_DELAY_MINUTES", default=10))
# KYC tiers: per-trade and rolling 30-day limits in EUR equivalent (0 = no documents).
KYC_LIMITS_EUR = {
    0: {
        "per_trade": Decimal(env("KYC_TIER0_PER_TRADE", default="1000")),
        "per_30_days": Decimal(env("KYC_TIER0_PER_30_DAYS", default="5000")),
    },
    1: {
        "per_trade": Decimal(env("KYC_TIER1_PER_TRADE", default="10000")),
        "per_30_days": Decimal(env("KYC_TIER1_PER_30_DAYS", default="50000")),
    },
    2: {
        "per_trade": Decimal(env("KYC_TIER2_PER_TRADE", default="100000")),
        "per_30_days": Decimal(env("KYC_TIER2_PER_30_DAYS", default="1000000")),
    },
}
# Abuse limits (docs/architecture.md §3.2). Open (not deleted) offers per maker, by KYC tier; a
# fixed price may stray at most PRICE_PROTECTION_PCT percent from its pair's index (floating
# prices follow the index). A trade is at least MIN_TRADE_EUR in EUR equivalent (no dust trades
# whose fees round away). A buyer holds at most MAX_UNPAID_TRADES funded trades, and opens at most
# TAKES_PER_MAKER_PER_MINUTE trades against one maker's offers a minute.
MAX_OPEN_OFFERS = {
    0: env.int("MAX_OPEN_OFFERS_TIER0", default=10),
    1: env.int("MAX_OPEN_OFFERS_TIER1", default=30),
    2: env.int("MAX_OPEN_OFFERS_TIER2", default=100),
}
PRICE_PROTECTION_PCT = Decimal(env("PRICE_PROTECTION_PCT", default="20"))
MIN_TRADE_EUR = Decimal(env("MIN_TRADE_EUR", default="10"))
MAX_UNPAID_TRADES = env.int("MAX_UNPAID_TRADES", default=2)
TAKES_PER_MAKER_PER_MINUTE = env.int("TAKES_PER_MAKER_PER_MINUTE", default=10)
# --- issue 20: the rules traders know from Binance P2P ---
# A buyer's cancellations counted in one day (theirs, at 00:00 in their profile's time zone, else
# UTC; expiries count, a cancel for the seller's fault doesn't) before buying pauses until the
# next day starts (escrow.services.cancellations).
CANCEL_LIMIT_PER_DAY = env.int("CANCEL_LIMIT_PER_DAY", default=3)
# A maker seen this recently is "online" in the book; Profile.last_seen is written at most every
# 5 minutes (accounts.middleware), so less than that would flicker.
MAKER_ONLINE_MINUTES = env.int("MAKER_ONLINE_MINUTES", default=10)
# The window of a seller's average release time (paid -> released, from the trade's events).
RELEASE_TIME_WINDOW_DAYS = env.int("RELEASE_TIME_WINDOW_DAYS", default=30)
# --- end issue 20 ---
KYC_DOCUMENT_MAX_BYTES = env.int("KYC_DOCUMENT_MAX_BYTES", default=10 * 1024 * 1024)
KYC_DOCUMENT_TYPES = {"image/png", "image/jpeg", "image/webp", "application/pdf"}
# Sock puppets: accounts that share a device cookie or a login address are linked (no trades
# between them; their trades and feedback don't count toward each other's figures). An address
# links only while at most this many accounts were seen at it: more is a carrier's NAT, an
# office or a café, and would link strangers.
LINK_IP_MAX_USERS = env.int("LINK_IP_MAX_USERS", default=3)
# Disputes older than this are flagged in the moderators' queue.
# Sign-ups per client address per hour (0: no limit).
SIGNUP_PER_ADDRESS_PER_HOUR = env.int("SIGNUP_PER_ADDRESS_PER_HOUR", default=5)
DISPUTE_SLA_HOURS = env.int("DISPUTE_SLA_HOURS", default=24)
# Decisions on trades worth more than this (EUR) need a second moderator's approval (four eyes).
DISPUTE_FOUR_EYES_EUR = Decimal(env("DISPUTE_FOUR_EYES_EUR", default="1000"))
EVIDENCE_MAX_BYTES = env.int("EVIDENCE_MAX_BYTES", default=20 * 1024 * 1024)
EVIDENCE_TYPES = {
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "video/mp4",
}
# Settlements claimed per batch (FOR UPDATE SKIP LOCKED): a batch has a fixed cost (~6 ms of
# Python, ~5 ms of PostgreSQL), and shared accounts are locked only for its last small UPDATE,
# so bigger batches cost little latency (bench/settlement.py: 1,000 -> 1.13x pgbench, 100 -> 0.81x).
SETTLEMENT_BATCH_SIZE = env.int("SETTLEMENT_BATCH_SIZE", default=1000)
SETTLEMENT_REQUEUE_AFTER = timedelta(seconds=env.int("SETTLEMENT_REQUEUE_SECONDS", default=60))
# Failed attempts (a refused posting, an error) before a settlement is `failed` for moderators.
SETTLEMENT_MAX_ATTEMPTS = env.int("SETTLEMENT_MAX_ATTEMPTS", default=5)
LEDGER_SEAL_BATCH = env.int("LEDGER_SEAL_BATCH", default=1000)
LEDGER_CHECKPOINT_EVERY = env.int("LEDGER_CHECKPOINT_EVERY", default=1000)
# Checkpoints on a clock as well, so a quiet ledger gets them too: every sealed entry is in a
# signed checkpoint within this many seconds, like Certificate Transparency's maximum merge delay
# (RFC 6962 s3). The sequencer signs early by one period of its beat (CELERY_BEAT_SCHEDULE's
# "ledger-seal") so that the bound holds. 0: by count only.
LEDGER_CHECKPOINT_INTERVAL = env.int("LEDGER_CHECKPOINT_INTERVAL", default=60)
# The Ed25519 seed (32 bytes, hex) that signs checkpoints; see config/settings/local.py for make run.
LEDGER_SIGNING_KEY = env("LEDGER_SIGNING_KEY", default="")
CHAIN_ADAPTER = env("CHAIN_ADAPTER", default="ledger.adapters.ManualChainAdapter")

# ETHEREUM (ledger/evm/, docs/chain.md): any JSON-RPC node; unset, every asset stays manual.
EVM_RPC_URL = env("EVM_RPC_URL", default="")
EVM_RPC_TIMEOUT = env.float("EVM_RPC_TIMEOUT", default=10.0)
# Blocks on top of a deposit's (or a withdrawal's) before it counts: credited / posted.
EVM_CONFIRMATIONS = env.int("EVM_CONFIRMATIONS", default=12)
# The xpub of the deposit account (m/44'/60'/0'): user N's deposit address is xpub/0/N. Its
# private half (EVM_DEPOSIT_XPRV[_FILE]) and the hot wallet's key (EVM_HOT_WALLET_KEY[_FILE]) are
# read from the environment by the worker's code only (ledger/evm/keys.py), never settings.
EVM_XPUB = env("EVM_XPUB", default="")
EVM_HOT_WALLET_ADDRESS = env("EVM_HOT_WALLET_ADDRESS", default="")
# The assets on the chain: ETH natively, USDT as the ERC-20 at EVM_USDT_CONTRACT (unset: manual).
EVM_ASSETS = {
    "ETH": {"kind": "native"},
    "USDT": {"kind": "erc20", "contract": env("EVM_USDT_CONTRACT", default="")},
}

# ETHEREUM: WITHDRAWALS AND SWEEPS (ledger/evm/sequencer.py, sweeps.py; docs/chain.md)
# Gas (EIP-1559): the next block's base fee x margin, plus the median tip of recent blocks.
EVM_BASE_FEE_MARGIN = env("EVM_BASE_FEE_MARGIN", default="2")
EVM_FEE_HISTORY_BLOCKS = env.int("EVM_FEE_HISTORY_BLOCKS", default=10)
EVM_PRIORITY_FEE_PERCENTILE = env.float("EVM_PRIORITY_FEE_PERCENTILE", default=50.0)
EVM_MIN_PRIORITY_FEE_GWEI = env("EVM_MIN_PRIORITY_FEE_GWEI", default="1")
# A sent transaction not mined after this long is replaced (same nonce, fees +12.5%).
EVM_STUCK_AFTER_SECONDS = env.float("EVM_STUCK_AFTER_SECONDS", default=300.0)
# A token withdrawal's fee, flat, in the token (its gas is paid in ETH by the platform).
EVM_TOKEN_WITHDRAWAL_FEE = env("EVM_TOKEN_WITHDRAWAL_FEE", default="1")
# A deposit address is swept to the hot wallet once it holds at least this much.
EVM_SWEEP_MIN = {
    "ETH": env("EVM_SWEEP_MIN_ETH", default="0.01"),
    "USDT": env("EVM_SWEEP_MIN_USDT", default="10"),
}
CELERY_BEAT_SCHEDULE["ledger-evm-sequencer"] = {
    "task": "ledger.evm.tasks.run_sequencer",
    "schedule": env.float("EVM_SEQUENCER_EVERY_SECONDS", default=5.0),
}
CELERY_BEAT_SCHEDULE["ledger-evm-sweeps"] = {
    "task": "ledger.evm.tasks.run_sweeps",
    "schedule": env.float("EVM_SWEEP_EVERY_SECONDS", default=60.0),
}
# The admin links a transaction hash to this block explorer ("https://etherscan.io/tx/{}").
EVM_EXPLORER_TX_URL = env("EVM_EXPLORER_TX_URL", default="")
# END ETHEREUM: WITHDRAWALS AND SWEEPS
# --- EVM deposits (ledger/evm/deposits.py, docs/chain.md "Deposits") ---
# The deposit watcher scans at most this many new blocks per run, from this block on its first
# run (set it to the block the platform went live at: nothing before it is scanned).
EVM_SCAN_BATCH = env.int("EVM_SCAN_BATCH", default=100)
EVM_DEPOSITS_START_BLOCK = env.int("EVM_DEPOSITS_START_BLOCK", default=0)
EVM_WATCH_SECONDS = env.float("EVM_WATCH_SECONDS", default=5.0)
CELERY_BEAT_SCHEDULE["ledger-evm-watch-deposits"] = {
    "task": "ledger.tasks.watch_deposits",
    "schedule": EVM_WATCH_SECONDS,
    # A run that waited longer than its period in the queue is superseded by the next one.
    "options": {"expires": EVM_WATCH_SECONDS},
}
# --- end EVM deposits ---

# RESERVES (ledger/evm/reserves.py, docs/chain.md "Reserves"): the chain's holdings against the
# ledger's liabilities every RESERVES_RECONCILE_SECONDS (a shortfall alerts moderators), and a
# signed proof of reserves (a Merkle sum tree of what each account is owed) every
# RESERVES_PROOF_SECONDS. Balances are read in JSON-RPC batches of RESERVES_RPC_BATCH calls.
RESERVES_RECONCILE_SECONDS = env.float("RESERVES_RECONCILE_SECONDS", default=300.0)
RESERVES_PROOF_SECONDS = env.float("RESERVES_PROOF_SECONDS", default=86400.0)
RESERVES_RPC_BATCH = env.int("RESERVES_RPC_BATCH", default=200)
CELERY_BEAT_SCHEDULE["ledger-reconcile-reserves"] = {
    "task": "ledger.evm.reserves_tasks.reconcile_reserves",
    "schedule": RESERVES_RECONCILE_SECONDS,
}
CELERY_BEAT_SCHEDULE["ledger-publish-reserves-proof"] = {
    "task": "ledger.evm.reserves_tasks.publish_reserves_proof",
    "schedule": RESERVES_PROOF_SECONDS,
}
# END RESERVES

# LOGGING AND METRICS (operations/, docs/operations.md)
# One line per event on stdout: JSON (LOG_FORMAT=json) with the request id, user id and trade id,
# secrets redacted; LOG_FORMAT=plain for a terminal. Celery logs through the same handler.
LOGGING = logging_config(
    level=env("LOG_LEVEL", default="INFO"), json=env("LOG_FORMAT", default="json") == "json"
)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# /metrics answers a scraper that sends `Authorization: Bearer <METRICS_TOKEN>`; unset: off (404).
METRICS_TOKEN = env("METRICS_TOKEN", default="")

# WEBHOOKS
# Retries of a failed delivery wait base * 2^attempts seconds (capped), up to the max attempts.
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)
WEBHOOK_BACKOFF_BASE_SECONDS = env.float("WEBHOOK_BACKOFF_BASE_SECONDS", default=1.0)
WEBHOOK_BACKOFF_MAX_SECONDS = env.float("WEBHOOK_BACKOFF_MAX_SECONDS", default=3600.0)
# Webhooks go over https:// to public addresses only (notifications/egress.py). Plain http and
# the loopback receiver of the tests are switched on by test settings; production refuses both.
WEBHOOK_ALLOW_HTTP = env.bool("WEBHOOK_ALLOW_HTTP", default=False)
WEBHOOK_ALLOW_PRIVATE_ADDRESSES_FOR_TESTS = env.bool(
    "WEBHOOK_ALLOW_PRIVATE_ADDRESSES_FOR_TESTS", default=False
)
CELERY_BEAT_SCHEDULE["notifications-sweep-webhooks"] = {
    "task": "notifications.tasks.sweep_webhooks",
    "schedule": 30.0,
}

# --- offers too small to take close themselves (issue 15; marketplace.services.dust) ---
CELERY_BEAT_SCHEDULE["marketplace-close-dust-offers"] = {
    "task": "marketplace.tasks.close_dust_offers",
    "schedule": 300.0,
}
# --- end ---

# LENDING (docs/architecture.md §3.3)
# Loan-to-value = the debt still scheduled (principal plus interest) over the collateral's value,
# both in one fiat of the price index. A request must start at or below LENDING_INITIAL_LTV; at
# LENDING_MARGIN_CALL_LTV the borrower is told (once per crossing); at LENDING_LIQUIDATION_LTV,
# or when a late loan's LENDING_GRACE_HOURS run out, the collateral goes to the lenders in kind
# with LENDING_LIQUIDATION_PENALTY on top of their debt. No liquidation on a price older than
# PRICE_MAX_AGE seconds.
LENDING_INITIAL_LTV = Decimal(env("LENDING_INITIAL_LTV", default="0.65"))
LENDING_MARGIN_CALL_LTV = Decimal(env("LENDING_MARGIN_CALL_LTV", default="0.75"))
LENDING_LIQUIDATION_LTV = Decimal(env("LENDING_LIQUIDATION_LTV", default="0.83"))
LENDING_LIQUIDATION_PENALTY = Decimal(env("LENDING_LIQUIDATION_PENALTY", default="0.05"))
LENDING_GRACE_HOURS = env.int("LENDING_GRACE_HOURS", default=72)
# The platform's optional fee: this fraction of every interest payment a lender receives
# (installments, early repayment, liquidation) goes to the fee account. A loan keeps the rate it
# activated with. 0 = no fee.
LENDING_INTEREST_FEE = Decimal(env("LENDING_INTEREST_FEE", default="0"))
# A party may dispute a loan while it is open and up to this many days after it closed.
LENDING_DISPUTE_DAYS = env.int("LENDING_DISPUTE_DAYS", default=30)
PRICE_MAX_AGE = env.int("PRICE_MAX_AGE", default=3600)

# --- EMAIL AND TELEGRAM (notifications.outbound, .email, .telegram) ---
# Sent by the worker, never in a request: every SMTP step times out after EMAIL_TIMEOUT seconds,
# and a failed message is retried OUTBOUND_BACKOFF_BASE_SECONDS * 2^attempts later (capped),
# up to OUTBOUND_MAX_ATTEMPTS attempts.
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="webmaster@localhost")
# Links in emails and Telegram messages start with this.
SITE_URL = env("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
OUTBOUND_MAX_ATTEMPTS = env.int("OUTBOUND_MAX_ATTEMPTS", default=8)
OUTBOUND_BACKOFF_BASE_SECONDS = env.float("OUTBOUND_BACKOFF_BASE_SECONDS", default=2.0)
OUTBOUND_BACKOFF_MAX_SECONDS = env.float("OUTBOUND_BACKOFF_MAX_SECONDS", default=1800.0)
# The platform's Telegram bot (from @BotFather); no token: no Telegram at all.
TELEGRAM_BOT_TOKEN = env("TELEGRAM_BOT_TOKEN", default="")
TELEGRAM_BOT_NAME = env("TELEGRAM_BOT_NAME", default="")
TELEGRAM_API_URL = env("TELEGRAM_API_URL", default="https://api.telegram.org")
TELEGRAM_TIMEOUT_SECONDS = env.float("TELEGRAM_TIMEOUT_SECONDS", default=5.0)
TELEGRAM_LINK_CODE_MINUTES = env.int("TELEGRAM_LINK_CODE_MINUTES", default=10)
CELERY_BEAT_SCHEDULE["notifications-sweep-outbound"] = {
    "task": "notifications.tasks.sweep_outbound",
    "schedule": 30.0,
}
CELERY_BEAT_SCHEDULE["notifications-poll-telegram"] = {
    "task": "notifications.tasks.poll_telegram",
    "schedule": env.float("TELEGRAM_POLL_SECONDS", default=5.0),
}
# --- end ---

# --- price feed (issue 20; marketplace.prices.sources, marketplace.services.prices) ---
# The exchanges polled every PRICE_POLL_SECONDS by beat, by name: kraken, coinbase, bitstamp,
# binance (comma-separated). Empty (the default): no feed, the index is what moderators set in
# the admin, as before, so `make run` works offline. With sources, a pair is priced at the
# median of the sources that answered, less any deviating more than PRICE_OUTLIER_PCT percent
# from the median of the rest; a fiat a source lacks is derived from its USD price through the
# FX source (the ECB's daily reference rates). A pair that no source could price, or whose
# price is older than PRICE_MAX_AGE, is stale: its floating offers leave the book, liquidations
# on it pause and the moderators are told once.
PRICE_SOURCES = env.list("PRICE_SOURCES", default=[])
PRICE_SOURCE_URLS = {
    "kraken": env("PRICE_KRAKEN_URL", default="https://api.kraken.com"),
    "coinbase": env("PRICE_COINBASE_URL", default="https://api.coinbase.com"),
    "bitstamp": env("PRICE_BITSTAMP_URL", default="https://www.bitstamp.net"),
    "binance": env("PRICE_BINANCE_URL", default="https://api.binance.com"),
}
PRICE_FX_URL = env(
    "PRICE_FX_URL", default="https://www.ecb.europa.eu/stats/eurofxref/eurofxref-daily.xml"
)
PRICE_FX_CACHE_SECONDS = env.int("PRICE_FX_CACHE_SECONDS", default=3600)
PRICE_SOURCE_TIMEOUT = env.float("PRICE_SOURCE_TIMEOUT", default=5.0)
PRICE_OUTLIER_PCT = Decimal(env("PRICE_OUTLIER_PCT", default="3"))
# The pairs the feed prices ("BTC/EUR,ETH/USD"); empty: every pair the index already has.
PRICE_PAIRS = env.list("PRICE_PAIRS", default=[])
PRICE_POLL_SECONDS = env.int("PRICE_POLL_SECONDS", default=60)
# The chart's history is kept this long, then pruned by the feed's task.
PRICE_HISTORY_DAYS = env.int("PRICE_HISTORY_DAYS", default=35)
CELERY_BEAT_SCHEDULE["marketplace-refresh-prices"] = {
    "task": "marketplace.tasks.refresh_prices",
    "schedule": float(PRICE_POLL_SECONDS),
}
# --- end ---
# --- LIVE PUSH (issue 18: notifications/live) -------------------------------------------------
# WebSockets through Django Channels and the Redis channel layer, served by uvicorn (`ws` in
# docker-compose, scripts/run.sh); plain HTTP stays on gunicorn / runserver. LIVE_REDIS_URL holds
# the channel layer and each user's event stream (defaults to REDIS_URL).
LIVE_REDIS_URL = env("LIVE_REDIS_URL", default=REDIS_URL)
LIVE_KEY_PREFIX = env("LIVE_KEY_PREFIX", default="live")
LIVE_REDIS_MAX_CONNECTIONS = env.int("LIVE_REDIS_MAX_CONNECTIONS", default=1000)


def _live_redis_host(url: str) -> dict[str, object]:
    # channels-redis waits on BZPOPMIN for 5 s; redis-py 8's default socket timeout is also 5 s,
    # so an idle process's receive loop would time out and drop its sockets: a longer one.
    # redis-py 8's asyncio pools hold at most 100 connections and fail past that: a burst of
    # sockets connecting at once (group_add each) needs more.
    return {
        "address": url,
        "socket_timeout": 30,
        "socket_connect_timeout": 2,
        "max_connections": LIVE_REDIS_MAX_CONNECTIONS,
    }


CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [_live_redis_host(LIVE_REDIS_URL)],
            "prefix": f"{LIVE_KEY_PREFIX}:asgi",
            # One uvicorn process's sockets share one Redis list for what is sent to them; past
            # `capacity` waiting messages channels-redis drops group sends silently (100 by
            # default: a fan-out to a few hundred users lost wake-ups in bench/live.py).
            "capacity": env.int("LIVE_CHANNEL_CAPACITY", default=20_000),
        },
    }
}
# Where pages open their socket. Empty: the page's own host, /ws/v1/live/ (a proxy sends /ws/ to
# the ws service); `make run` sets ws://127.0.0.1:8001/ws/v1/live/. Its origin joins CSP's
# connect-src.
LIVE_WS_URL = env("LIVE_WS_URL", default="")
# Off: pages don't open a socket and poll as before (the test suite's live server serves no
# WebSockets; tests/browser/test_live.py turns it on with its own uvicorn).
LIVE_ENABLED = env.bool("LIVE_ENABLED", default=True)
if LIVE_WS_URL:
    from urllib.parse import urlsplit as _urlsplit

    _live = _urlsplit(LIVE_WS_URL)
    CONTENT_SECURITY_POLICY["DIRECTIVES"]["connect-src"].append(f"{_live.scheme}://{_live.netloc}")
# Each user's event stream keeps about this many events, for this long: a client away for
# longer gets a "gap" and reloads what it shows.
LIVE_BACKLOG = env.int("LIVE_BACKLOG", default=500)
LIVE_BACKLOG_SECONDS = env.int("LIVE_BACKLOG_SECONDS", default=24 * 3600)
# Inbound frames per connection: at most this size, this many a second (bursts of _BURST);
# past either the server closes the socket (1009 / 1008).
LIVE_MAX_FRAME_BYTES = env.int("LIVE_MAX_FRAME_BYTES", default=4096)
LIVE_INBOUND_PER_SECOND = env.float("LIVE_INBOUND_PER_SECOND", default=2.0)
LIVE_INBOUND_BURST = env.int("LIVE_INBOUND_BURST", default=10)
# --- end of LIVE PUSH ---------------------------------------------------------------------------
