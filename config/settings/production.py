"""docker-compose / production: no defaults for secrets or hosts."""

import os
import re
import secrets
import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import WEBHOOK_ALLOW_HTTP, WEBHOOK_ALLOW_PRIVATE_ADDRESSES_FOR_TESTS, env, logging_config


def _secret(name: str) -> str:
    """A secret from NAME, or from the file NAME_FILE names (Docker secrets: /run/secrets/...)."""
    value = os.environ.get(name, "").strip()
    path = os.environ.get(f"{name}_FILE", "").strip()
    if value and path:
        raise ImproperlyConfigured(f"Set {name} or {name}_FILE, not both.")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path} cannot be read: {exc}") from None
    return value


# `manage.py ledger_keygen` is how an operator makes the first secrets: it runs without them (on
# throwaway values that this process alone sees and that sign nothing).
_KEYGEN = sys.argv[1:2] == ["ledger_keygen"] and Path(sys.argv[0]).name == "manage.py"
if _KEYGEN:
    # Its output is the keys alone: no log lines mixed in.
    LOGGING = logging_config(level="WARNING")
    for _name, _value in (
        ("SECRET_KEY", secrets.token_urlsafe(50)),
        ("LEDGER_SIGNING_KEY", secrets.token_hex(32)),
    ):
        if not os.environ.get(_name) and not os.environ.get(f"{_name}_FILE"):
            os.environ[_name] = _value

DEBUG = False
SECRET_KEY = _secret("SECRET_KEY")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is missing: set SECRET_KEY (env file) or SECRET_KEY_FILE (a Docker secret) to "
        'a random key of 50+ characters (python -c "import secrets; print(secrets.token_urlsafe(50))").'
    )
# Known, short or default keys sign sessions anyone could forge: refuse to start with one.
_KNOWN_KEYS = {
    "change-me",
    "changeme",
    "secret",
    "local-dev-only-not-secret",
    "test-only-not-secret",
}
if (
    SECRET_KEY.lower() in _KNOWN_KEYS
    or SECRET_KEY.startswith("django-insecure")
    or len(SECRET_KEY) < 50
    or len(set(SECRET_KEY)) < 5
):
    raise ImproperlyConfigured(
        "SECRET_KEY is a default, known or short key: set a random one of 50+ characters "
        '(python -c "import secrets; print(secrets.token_urlsafe(50))").'
    )

# LEDGER
# The checkpoint key: without it no checkpoint is ever signed, so production does not start
# without one. `python manage.py ledger_keygen` makes one; docs/operations.md rotates it.
LEDGER_SIGNING_KEY = _secret("LEDGER_SIGNING_KEY")
# The seed config/settings/test.py and RFC 8032's test vector use: public, so never a real key.
_KNOWN_SEEDS = {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"}
if not LEDGER_SIGNING_KEY:
    raise ImproperlyConfigured(
        "LEDGER_SIGNING_KEY is missing: no checkpoint could be signed. Generate one with "
        "`python manage.py ledger_keygen` and set LEDGER_SIGNING_KEY or LEDGER_SIGNING_KEY_FILE."
    )
if (
    not re.fullmatch(r"[0-9a-fA-F]{64}", LEDGER_SIGNING_KEY)
    or LEDGER_SIGNING_KEY.lower() in _KNOWN_SEEDS
    or len(set(LEDGER_SIGNING_KEY.lower())) < 8
):
    raise ImproperlyConfigured(
        "LEDGER_SIGNING_KEY is a default, known or malformed key: it must be a random 32-byte "
        "Ed25519 seed in hex (64 characters) from `python manage.py ledger_keygen`."
    )

# METRICS
METRICS_TOKEN = _secret("METRICS_TOKEN")
if METRICS_TOKEN and len(METRICS_TOKEN) < 32:
    raise ImproperlyConfigured(
        "METRICS_TOKEN is too short: use 32+ random characters "
        '(python -c "import secrets; print(secrets.token_urlsafe(32))"), or leave it unset.'
    )

# CELERY
# Beat touches a heartbeat file on every pass of its loop: its health check reads it.
CELERY_BEAT_SCHEDULER = "operations.beat.HeartbeatScheduler"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# WEBHOOKS
# A user's webhook URL must never reach inside (metadata service, Redis, the database) nor go
# out unencrypted: the switches the tests use are refused here, whatever the environment says.
if WEBHOOK_ALLOW_PRIVATE_ADDRESSES_FOR_TESTS:
    raise ImproperlyConfigured(
        "WEBHOOK_ALLOW_PRIVATE_ADDRESSES_FOR_TESTS must be off in production."
    )
if WEBHOOK_ALLOW_HTTP:
    raise ImproperlyConfigured("WEBHOOK_ALLOW_HTTP must be off in production: webhooks use https.")
