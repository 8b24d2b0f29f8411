"""Each trader's trusted and blocked lists."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.translation import gettext

from accounts.models import TraderRelation
from accounts.selectors import blocked_changed
from common.errors import (
    NotFound,
    ValidationFailed,
)

# --- trusted and blocked lists ----------------------------------------------------------------


def trader_relation_add(*, actor: Any, username: str, kind: str) -> TraderRelation:
    """Trust or block another trader; trusting someone blocked (or the reverse) replaces it."""
    if kind not in TraderRelation.Kind.values:
        raise ValidationFailed.for_field("kind", gettext("Choose trusted or blocked."))
    name = str(username or "").strip()
    other = get_user_model().objects.filter(username=name, is_active=True).first()
    if other is None:
        raise ValidationFailed.for_field(
            "username", gettext("No trader called {name!r}.").format(name=name)
        )
    if other.pk == actor.pk:
        raise ValidationFailed.for_field(
            "username",
            gettext("You can't trust yourself.")
            if kind == TraderRelation.Kind.TRUSTED
            else gettext("You can't block yourself."),
        )
    with transaction.atomic():
        relation, _ = TraderRelation.objects.update_or_create(
            owner=actor, other=other, defaults={"kind": kind}
        )
        # A block added, or one replaced by trust: both traders' cached sets are stale.
        blocked_changed(user_ids=[actor.pk, other.pk])
    return relation


def trader_relation_remove(*, actor: Any, relation_id: int) -> None:
    """Take someone off your trusted or blocked list."""
    mine = TraderRelation.objects.filter(pk=relation_id, owner_id=actor.pk)
    others = list(mine.values_list("other_id", flat=True))
    deleted, _ = mine.delete()
    if not deleted:
        raise NotFound(
            gettext("Relation #{relation_id} not found.").format(relation_id=relation_id)
        )
    blocked_changed(user_ids=[actor.pk, *others])
