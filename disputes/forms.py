"""The browser forms of disputes."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy

from disputes.models import Dispute


class DisputeForm(forms.Form):
    category = forms.ChoiceField(
        label=gettext_lazy("What happened?"), choices=Dispute.Category.choices
    )
    reason = forms.CharField(
        min_length=10,
        max_length=4000,
        label=gettext_lazy("Describe it for the moderator"),
        widget=forms.Textarea(
            {
                "rows": 3,
                "placeholder": gettext_lazy(
                    "E.g. I paid at 14:05 by SEPA, ref 1234, but the seller…"
                ),
            }
        ),
    )
