"""Browser forms of lending. They collect what the user typed: amounts stay strings and every
rule (precision, LTV, balances, who may act) is checked once, by lending.services, whose
ApplicationError common.forms.add_application_error puts next to the field it names."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from django import forms
from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy, ngettext_lazy

from common.forms import AmountField, AmountInput
from ledger.models import Asset
from lending.models import LoanDispute, LoanRequest

# Lazy labels: written out in the reader's language when the form is drawn.
TERM_CHOICES = [
    (n, format_lazy(ngettext_lazy("{n} month", "{n} months", n), n=n)) for n in range(1, 25)
]
# How long lenders have to fund a request (the service allows up to 30 days ahead).
FUNDING_WINDOWS = [
    (6, format_lazy(ngettext_lazy("{n} hour", "{n} hours", 6), n=6)),
    *(
        (24 * d, format_lazy(ngettext_lazy("{n} day", "{n} days", d), n=d))
        for d in (1, 2, 3, 7, 14, 30)
    ),
]


def _asset_choices(blank: Any = None) -> list[tuple[str, Any]]:
    choices = [(a.code, a.code) for a in Asset.objects.filter(is_active=True).order_by("code")]
    return [("", blank), *choices] if blank is not None else choices


class BorrowForm(forms.Form):
    """A loan request, field for field what loan_request_create takes (the deadline as a
    window from now)."""

    asset = forms.ChoiceField(label=gettext_lazy("Borrow"))
    amount = AmountField(max_length=64, label=gettext_lazy("Amount"), widget=AmountInput())
    annual_rate = AmountField(
        max_length=16,
        label=gettext_lazy("Annual interest rate (%)"),
        widget=AmountInput({"placeholder": "5"}),
    )
    term_months = forms.TypedChoiceField(
        label=gettext_lazy("Term"), choices=TERM_CHOICES, coerce=int, initial=6
    )
    plan = forms.ChoiceField(
        label=gettext_lazy("Repayment"),
        choices=LoanRequest.Plan.choices,
        widget=forms.RadioSelect,
        initial=LoanRequest.Plan.AMORTIZED,
    )
    collateral_asset = forms.ChoiceField(label=gettext_lazy("Collateral asset"))
    collateral_amount = AmountField(
        max_length=64, label=gettext_lazy("Collateral amount"), widget=AmountInput()
    )
    funding_window = forms.TypedChoiceField(
        label=gettext_lazy("Funding deadline"),
        choices=FUNDING_WINDOWS,
        coerce=int,
        initial=72,
        help_text=gettext_lazy(
            "Unfunded by then, the request ends and your collateral comes back."
        ),
    )
    allow_partial = forms.BooleanField(
        label=gettext_lazy("Accept a partial fill at the deadline"), required=False
    )
    min_fill = AmountField(
        max_length=64,
        label=gettext_lazy("Least amount to activate with"),
        required=False,
        widget=AmountInput(),
        help_text=gettext_lazy("Only with a partial fill."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["asset"]).choices = _asset_choices()
        cast(forms.ChoiceField, self.fields["collateral_asset"]).choices = _asset_choices()

    def service_values(self) -> dict[str, Any]:
        """What loan_request_create takes, as typed."""
        data = self.cleaned_data
        return {
            "asset": data["asset"],
            "amount": data["amount"],
            "annual_rate": data["annual_rate"],
            "term_months": data["term_months"],
            "plan": data["plan"],
            "collateral_asset": data["collateral_asset"],
            "collateral_amount": data["collateral_amount"],
            "funding_deadline": timezone.now() + timedelta(hours=data["funding_window"]),
            "allow_partial": bool(data.get("allow_partial")),
            "min_fill": data.get("min_fill") or None,
        }


class LendFilterForm(forms.Form):
    """The GET filters of the list of open requests."""

    asset = forms.ChoiceField(required=False, label=gettext_lazy("Asset"))
    min_rate = AmountField(
        required=False,
        max_length=16,
        label=gettext_lazy("Rate at least (%)"),
        widget=AmountInput({"placeholder": gettext_lazy("Any")}),
    )
    max_term = forms.TypedChoiceField(
        required=False,
        label=gettext_lazy("Term at most"),
        choices=[("", gettext_lazy("Any term")), *TERM_CHOICES],
        coerce=int,
        empty_value=None,
    )
    max_ltv = AmountField(
        required=False,
        max_length=16,
        label=gettext_lazy("LTV at most (%)"),
        widget=AmountInput({"placeholder": gettext_lazy("Any")}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["asset"]).choices = _asset_choices(
            blank=gettext_lazy("All assets")
        )


class FundForm(forms.Form):
    amount = AmountField(max_length=64, label=gettext_lazy("Amount to lend"), widget=AmountInput())


class CollateralForm(forms.Form):
    amount = AmountField(
        max_length=64, label=gettext_lazy("Collateral to add"), widget=AmountInput()
    )


class RepayForm(forms.Form):
    """Early repayment: the payoff total the borrower was shown, so a quote that changed in
    the meantime (a day passed) is shown again instead of paid blindly."""

    quoted_total = forms.CharField(max_length=64, widget=forms.HiddenInput())


class TakeOfferForm(forms.Form):
    """Borrow from a lender's offer in one step (loan_offer_take)."""

    amount = AmountField(max_length=64, label=gettext_lazy("Amount"), widget=AmountInput())
    term_months = forms.TypedChoiceField(
        label=gettext_lazy("Term"), choices=TERM_CHOICES, coerce=int
    )
    plan = forms.ChoiceField(
        label=gettext_lazy("Repayment"),
        choices=LoanRequest.Plan.choices,
        initial=LoanRequest.Plan.AMORTIZED,
    )
    collateral_asset = forms.ChoiceField(label=gettext_lazy("Collateral asset"))
    collateral_amount = AmountField(
        max_length=64, label=gettext_lazy("Collateral amount"), widget=AmountInput()
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["collateral_asset"]).choices = _asset_choices()


class DisputeForm(forms.Form):
    """A party's dispute about a loan (loan_dispute_open)."""

    category = forms.ChoiceField(label=gettext_lazy("About"), choices=LoanDispute.Category.choices)
    text = forms.CharField(
        label=gettext_lazy("What happened"),
        max_length=4000,
        widget=forms.Textarea({"rows": 4}),
        help_text=gettext_lazy(
            "A moderator who has no part in this loan reads both sides and decides."
        ),
    )


class StatementForm(forms.Form):
    """A statement in an open loan dispute (loan_dispute_statement)."""

    text = forms.CharField(
        label=gettext_lazy("Your statement"), max_length=4000, widget=forms.Textarea({"rows": 3})
    )
