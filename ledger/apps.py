from typing import Any

from django.apps import AppConfig
from django.apps import apps as global_apps
from django.db import DEFAULT_DB_ALIAS, router
from django.db.models.signals import post_migrate


class LedgerConfig(AppConfig):
    name = "ledger"

    def ready(self) -> None:
        # Every `migrate` (and so every fresh database, the test database too) lists the current
        # checkpoint key, so /api/v1/ledger/public-key/ serves it before the first checkpoint.
        post_migrate.connect(publish_signing_key, sender=self)


def publish_signing_key(
    sender: AppConfig, *, using: str = DEFAULT_DB_ALIAS, apps: Any = global_apps, **kwargs: Any
) -> None:
    """post_migrate (also sent by `flush`, without `apps`): publish the current checkpoint key."""
    try:
        model = apps.get_model("ledger", "SigningKey")
    except LookupError:
        return  # migrated back below the migration that makes the table
    if not router.allow_migrate_model(using, model):
        return
    from ledger.services import signing_key_publish

    signing_key_publish(using=using)
