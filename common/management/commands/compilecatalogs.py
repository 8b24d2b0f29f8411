"""`manage.py compilecatalogs`: locale/*/LC_MESSAGES/*.po -> .mo with Babel (common.i18n)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from common.i18n import compile_catalogs


class Command(BaseCommand):
    help = "Compile the translation catalogues (.po -> .mo) without GNU gettext."

    def handle(self, *args: Any, **options: Any) -> None:
        written = [p for d in settings.LOCALE_PATHS for p in compile_catalogs(Path(d))]
        self.stdout.write(f"{len(written)} catalogue(s) compiled.")
