"""The settings page's list of saved payment accounts (the page is accounts'; the accounts are
marketplace's, a layer above, so the template asks here instead of the accounts view)."""

from __future__ import annotations

from typing import Any

from django import template

from accounts.selectors import verified_name_for
from marketplace.models import PaymentMethod
from marketplace.payment_fields import display, fields_for
from marketplace.selectors import payment_account_list_for_user

register = template.Library()


@register.simple_tag
def payment_accounts_of(user: Any) -> dict[str, Any]:
    """{"items": the user's accounts with their fields as they read, "methods": what an
    account can be added for, "verified_name": the name they must bear, or ""}."""
    items = [
        {
            "pk": a.pk,
            "method": a.method,
            "label": a.label,
            "fields": [
                {"label": f.label, "display": display(f.kind, a.details[f.key])}
                for f in fields_for(a.method.code).fields
                if a.details.get(f.key)
            ],
        }
        for a in payment_account_list_for_user(user=user)
    ]
    return {
        "items": items,
        "methods": list(PaymentMethod.objects.filter(is_active=True)),
        "verified_name": verified_name_for(user_id=user.pk),
    }
