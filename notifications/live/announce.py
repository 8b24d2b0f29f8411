"""Notification's manager: every row written, one by one or in bulk, reaches the owner's badge
over the socket once its transaction commits (listeners.announce_notifications). A manager, not a
signal: bulk_create sends no post_save, and the services write notifications in bulk."""

from __future__ import annotations

from typing import Any

from django.db import models

from common.prepared import insert


class NotificationQuerySet(models.QuerySet[Any]):
    def create(self, **kwargs: Any) -> Any:
        row = super().create(**kwargs)
        _announce([row])
        return row

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> list[Any]:
        # Plain rows: one INSERT built once (common.prepared); with options, Django's.
        rows = (
            insert(list(objs))
            if not args and not kwargs and self._db is None  # type: ignore[attr-defined]
            else super().bulk_create(objs, *args, **kwargs)
        )
        _announce(rows)
        return rows


def _announce(rows: list[Any]) -> None:
    from notifications.live.listeners import announce_notifications

    announce_notifications(rows)


NotificationManager = models.Manager.from_queryset(NotificationQuerySet)
