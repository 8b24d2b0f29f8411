"""`make run`: SQLite and in-process tasks unless DATABASE_URL / REDIS_URL are set."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env("SECRET_KEY", default="local-dev-only-not-secret")
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
