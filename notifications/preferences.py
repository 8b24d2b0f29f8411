"""Which news goes where besides the bell: per person and per kind of news, by email and by
Telegram. In-app notifications always happen; these only choose the channels outside the site
for the news each event already deems worth sending there (whoever must act next)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict

from django.db import transaction
from django.utils.translation import gettext

from common.errors import ValidationFailed
from notifications.models import NotificationPreference

C = NotificationPreference.Category

# (email, telegram) when the person has not chosen. Email for everything that asks someone to
# act; Telegram for the same once a chat is linked; chat messages stay in the bell (a burst of
# chat would be a burst of mail).
DEFAULTS: dict[str, tuple[bool, bool]] = {
    C.TRADE_OPENED: (True, True),
    C.TRADE_PAID: (True, True),
    C.TRADE_COMPLETED: (True, True),
    C.DISPUTES: (True, True),
    C.CHAT: (False, False),
    C.LOANS: (True, True),
    C.OFFERS: (True, False),
    C.FUNDS: (True, True),
}


class Preference(TypedDict):
    category: str
    label: str
    email: bool
    telegram: bool


def preferences_for_user(*, user: Any) -> list[Preference]:
    """Every category with the person's choice, or the default where they made none."""
    chosen = {
        p.category: (p.email, p.telegram)
        for p in NotificationPreference.objects.filter(user_id=user.pk)
    }
    return [
        Preference(
            category=str(value),
            label=str(label),
            email=chosen.get(value, DEFAULTS[value])[0],
            telegram=chosen.get(value, DEFAULTS[value])[1],
        )
        for value, label in C.choices
    ]


def channels_for(*, user_ids: Iterable[int]) -> dict[tuple[int, str], tuple[bool, bool]]:
    """The (email, telegram) choices these people made, keyed by (user id, category): one
    query. Look a pair up with channels_of, which falls back on the defaults."""
    rows = NotificationPreference.objects.filter(user_id__in=set(user_ids)).values_list(
        "user_id", "category", "email", "telegram"
    )
    return {(user_id, category): (email, telegram) for user_id, category, email, telegram in rows}


def channels_of(
    chosen: dict[tuple[int, str], tuple[bool, bool]], *, user_id: int, category: str
) -> tuple[bool, bool]:
    return chosen.get((user_id, category), DEFAULTS.get(category, (False, False)))


def preferences_set(*, user: Any, changes: list[dict[str, Any]]) -> list[Preference]:
    """Set the channels of the categories given (the others keep theirs); all or nothing: an
    unknown category or a non-boolean choice changes nothing."""
    known = set(C.values)
    rows: dict[str, NotificationPreference] = {}
    current = {p["category"]: p for p in preferences_for_user(user=user)}
    for n, change in enumerate(changes):
        category = change.get("category")
        if category not in known:
            raise ValidationFailed.for_field(
                f"preferences[{n}].category",
                gettext("Unknown category {category!r}; choose from {v1}.").format(
                    category=category, v1=", ".join(sorted(known))
                ),
            )
        if category in rows:
            raise ValidationFailed.for_field(
                f"preferences[{n}].category",
                gettext("{category} is given twice.").format(category=category),
            )
        values = {}
        for channel in ("email", "telegram"):
            value = change.get(channel, current[category][channel])
            if not isinstance(value, bool):
                raise ValidationFailed.for_field(
                    f"preferences[{n}].{channel}", gettext("true or false.")
                )
            values[channel] = value
        rows[category] = NotificationPreference(user_id=user.pk, category=category, **values)
    with transaction.atomic():
        NotificationPreference.objects.bulk_create(
            rows.values(),
            update_conflicts=True,
            unique_fields=["user", "category"],
            update_fields=["email", "telegram"],
        )
        # bulk_create sends no signal: the cached choices (notifications.recipients) go here.
        from notifications.recipients import recipients_forget

        recipients_forget([user.pk])
    return preferences_for_user(user=user)
