"""`manage.py sync_reference_data`: bring the fiat currencies (ISO 4217, from CLDR) and the
payment-method catalogue up to date, e.g. after upgrading Babel. Idempotent."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from marketplace.services.reference import fiat_currencies_sync, payment_methods_sync


class Command(BaseCommand):
    help = "Load or refresh the fiat currencies and the payment-method catalogue."

    def handle(self, *args: Any, **options: Any) -> None:
        fiats = fiat_currencies_sync()
        methods = payment_methods_sync()
        self.stdout.write(
            f"Fiat currencies: {fiats.created} created, {fiats.updated} renamed. "
            f"Payment methods: {methods.created} created, {methods.updated} updated."
        )
