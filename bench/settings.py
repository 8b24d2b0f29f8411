"""Settings for the benchmark scripts: config.settings.local (DATABASE_URL / REDIS_URL from
scripts/with-services.sh) with what a production worker would have, not a developer's console:

- DEBUG off (no per-query bookkeeping in connection.queries),
- a dummy email backend (local prints every trade email to stdout; a real SMTP server would cost
  more than either, see BENCHMARKS.md),
- a fixed, public, bench-only checkpoint key (so no process writes .ledger-signing-key).
"""

from config.settings.local import *  # noqa: F403
from config.settings.local import env

DEBUG = False
EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
LEDGER_SIGNING_KEY = env(
    "LEDGER_SIGNING_KEY", default="4c8b0c5d9e6f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70819203"
)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="WARNING")},
}

# The project's URLs plus the bench's yardstick (a bare view running SELECT 1, bench/urls.py);
# never mounted by the project's own settings.
ROOT_URLCONF = "bench.urls"
