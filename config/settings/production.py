"""docker-compose / production: no defaults for secrets or hosts."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import WEBHOOK_ALLOW_HTTP, WEBHOOK_ALLOW_PRIVATE_ADDRESSES_FOR_TESTS, env

DEBUG = False
SECRET_KEY = env("SECRET_KEY")
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
