"""The Celery app. Settlement is at-least-once by design: exactly-once effects come from the
idempotency keys and outbox rows in PostgreSQL, never from trusting the broker."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("marketplace")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
