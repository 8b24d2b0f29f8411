"""The reference data the market trades in, kept in step with its maintained sources: every
ISO 4217 currency with its minor units (marketplace.currencies, from CLDR through Babel) and
the payment-method catalogue (marketplace.payment_catalog). Idempotent: run by a data migration
(with its historical models), by reference_data in the tests and by `manage.py
sync_reference_data`; a second run changes nothing. Moderators' choices survive it: which
currencies and methods are enabled is theirs once a row exists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from django.db import transaction

from marketplace.currencies import ENABLED_BY_DEFAULT, iso_currencies
from marketplace.models import FiatCurrency, PaymentMethod
from marketplace.payment_catalog import CATALOG


@dataclass(frozen=True)
class SyncResult:
    created: int
    updated: int


def fiat_currencies_sync(*, model: Any = FiatCurrency, on: date | None = None) -> SyncResult:
    """Create every legal-tender currency missing (enabled only if ENABLED_BY_DEFAULT) and
    refresh the names. A row's precision is set when it is created and never moved here: the
    fiat amounts already stored were checked at it (the admin keeps it read-only too)."""
    existing = {row.code: row for row in model.objects.all()}
    fresh, renamed = [], []
    for info in iso_currencies(on=on):
        row = existing.get(info.code)
        if row is None:
            fresh.append(
                model(
                    code=info.code,
                    name=info.name[:64],
                    precision=info.minor_units,
                    is_active=info.code in ENABLED_BY_DEFAULT,
                )
            )
        elif row.name != info.name[:64]:
            row.name = info.name[:64]
            renamed.append(row)
    with transaction.atomic():
        model.objects.bulk_create(fresh, ignore_conflicts=True)
        model.objects.bulk_update(renamed, ["name"])
    return SyncResult(created=len(fresh), updated=len(renamed))


def payment_methods_sync(*, model: Any = PaymentMethod) -> SyncResult:
    """Create the catalogue's methods that are missing (enabled) and bring the others' names and
    regions in line with it; a method a moderator added (not in the catalogue) is left alone."""
    existing = {row.code: row for row in model.objects.all()}
    fresh, changed = [], []
    for method in CATALOG:
        values = {
            "name": method.name,
            "countries": list(method.countries),
            "currencies": list(method.currencies),
        }
        row = existing.get(method.code)
        if row is None:
            fresh.append(model(code=method.code, is_active=True, **values))
        elif any(getattr(row, k) != v for k, v in values.items()):
            for key, value in values.items():
                setattr(row, key, value)
            changed.append(row)
    with transaction.atomic():
        model.objects.bulk_create(fresh, ignore_conflicts=True)
        model.objects.bulk_update(changed, ["name", "countries", "currencies"])
    return SyncResult(created=len(fresh), updated=len(changed))


def fiat_currencies_set_active(*, codes: list[str], active: bool) -> int:
    """Enable or disable currencies for trading (moderators, in the admin): how many changed.
    A disabled currency leaves new offers' and the book's choices; offers and trades already
    in it go on (their rows keep it)."""
    with transaction.atomic():
        changed: int = (
            FiatCurrency.objects.filter(code__in=codes)
            .exclude(is_active=active)
            .update(is_active=active)
        )
    return changed
