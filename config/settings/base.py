"""Settings shared by every environment; everything that differs comes from the environment."""

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
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

# DATABASES
# PostgreSQL, always (`make run` and `make test` start one): 18-decimal money held and added
# exactly, and row locks that serialize concurrent writers. No other engine is supported.
DATABASES = {"default": env.db("DATABASE_URL")}
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must name a PostgreSQL database (postgres://...)")
# Money services open their own durable transactions; a request-wide one would nest them.
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)

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
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "accounts.middleware.LastSeenMiddleware",
    # Times in the logged-in user's zone (issue 15: from the browser, stored on the profile).
    "accounts.middleware.TimeZoneMiddleware",
    # Before any view: a login or signup records the device it came from.
    "accounts.middleware.DeviceCookieMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it turns a lockout into a response.
    "axes.middleware.AxesMiddleware",
]

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
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
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
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "common.api.exception_handler",
    "COERCE_DECIMAL_TO_STRING": True,
    "DEFAULT_PAGINATION_CLASS": "common.api.CursorPage",
    "PAGE_SIZE": 50,
}
# How old the makers' stats shown in the order book may be (accounts.selectors.
# trader_stats_recent); 0 counts them afresh on every request.
TRADER_STATS_CACHE_SECONDS = env.int("TRADER_STATS_CACHE_SECONDS", default=60)
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
