"""pytest: the DATABASE_URL / REDIS_URL that `make test` exports (PostgreSQL and Redis)."""

import tempfile
from decimal import Decimal

from .base import *  # noqa: F403
from .base import env

DEBUG = False
SECRET_KEY = env("SECRET_KEY", default="test-only-not-secret")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
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

# One client (127.0.0.1) makes every test request, and the counters live in Redis across
# tests: limits high here; the throttling test sets its own.
API_RATE_LIMITS = {"key": "100000/min", "ip": "100000/min", "auth": "100000/min"}

# The webhook tests deliver to their own plain-http receiver on 127.0.0.1 (loopback only: other
# private addresses stay refused). Production refuses to start with either of these on.
WEBHOOK_ALLOW_HTTP = True
WEBHOOK_ALLOW_PRIVATE_ADDRESSES_FOR_TESTS = True
