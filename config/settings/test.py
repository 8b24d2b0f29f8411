"""pytest: the DATABASE_URL / REDIS_URL that `make test` exports (PostgreSQL and Redis)."""

import tempfile

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
