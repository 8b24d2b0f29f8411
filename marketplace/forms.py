"""Browser forms of the marketplace. They only collect what the user typed: amounts stay strings
and every business rule (limits, precision, balances) is checked once, by the services, whose
ApplicationError is turned into form errors by common.forms.add_application_error."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from django import forms
from django.conf import settings
from django.forms.renderers import DjangoTemplates
from django.utils.functional import lazy
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language, gettext, gettext_lazy, ngettext

from common.forms import AmountField, AmountInput
from common.templatetags.money import amount
from ledger.models import Asset
from marketplace import selectors
from marketplace.models import FiatCurrency, Offer, PaymentAccount, PaymentMethod
from marketplace.payment_forms import account_choices

SIDE_CHOICES = [("buy", gettext_lazy("Buy")), ("sell", gettext_lazy("Sell"))]


def _minutes(m: int) -> str:
    return ngettext("%(m)d minute", "%(m)d minutes", m) % {"m": m}


# Labels in the reader's language, worked out when shown (not at import).
PAYMENT_WINDOWS = [(m, lazy(_minutes, str)(m)) for m in (15, 30, 45, 60, 90, 120, 180)]


def _asset_choices(blank: Any = None) -> list[tuple[str, Any]]:
    choices = [(a.code, a.code) for a in Asset.objects.filter(is_active=True).order_by("code")]
    return [("", blank), *choices] if blank is not None else choices


def _fiat_choices(blank: Any = None) -> list[tuple[str, Any]]:
    choices = [
        (f.code, f"{f.code} · {f.name}")
        for f in FiatCurrency.objects.filter(is_active=True).order_by("code")
    ]
    return [("", blank), *choices] if blank is not None else choices


def _method_choices(blank: Any = None) -> list[tuple[str, Any]]:
    choices = [(m.code, m.name) for m in PaymentMethod.objects.filter(is_active=True)]
    return [("", blank), *choices] if blank is not None else choices


@dataclass(frozen=True)
class BookReference:
    """What the order book's two forms offer to pick from: the active assets, fiat currencies
    and payment methods (by name)."""

    assets: list[tuple[str, Any]]
    fiats: list[tuple[str, Any]]
    methods: list[PaymentMethod]


_book_reference: tuple[float, BookReference] | None = None


def book_reference() -> BookReference:
    """BookReference, read at most once per ORDER_BOOK_CACHE_SECONDS in each process (the book's
    own freshness bound: a currency or method switched on or off in the admin shows up in the
    book's forms within it); with 0, read on every request. Three queries the book page would
    otherwise run twice on every request (issue 17)."""
    global _book_reference
    ttl = float(getattr(settings, "ORDER_BOOK_CACHE_SECONDS", 1))
    now = time.monotonic()
    if ttl > 0 and _book_reference is not None and now < _book_reference[0]:
        return _book_reference[1]
    reference = BookReference(
        assets=_asset_choices(),
        fiats=[
            (f.code, f"{f.code} · {f.name}")
            for f in FiatCurrency.objects.filter(is_active=True).order_by("code")
        ],
        methods=list(PaymentMethod.objects.filter(is_active=True).order_by("name")),
    )
    if ttl > 0:
        _book_reference = (now + ttl, reference)
    return reference


class BookFormRenderer(DjangoTemplates):
    """The book's forms' renderer: a <select> is rendered once per language, choices, value and
    attributes, then its HTML reused (per process, a bounded memo). Each option of a select is
    otherwise a template of its own, on every request, for every viewer: most of what the book's
    two forms cost (issue 17). The key is the widget's whole content, so it is never stale."""

    MEMO_SIZE = 256
    _memo: ClassVar[OrderedDict[Any, SafeString]] = OrderedDict()

    def render(self, template_name: str, context: dict[str, Any], request: Any = None) -> str:
        widget = context.get("widget")
        if not template_name.endswith("/select.html") or not widget:
            return super().render(template_name, context, request)
        key = (
            template_name,
            get_language(),
            widget["name"],
            tuple(widget["value"]),
            tuple(sorted((k, str(v)) for k, v in widget["attrs"].items())),
            tuple(
                (str(group), tuple((o["value"], str(o["label"]), o["selected"]) for o in options))
                for group, options, _ in widget["optgroups"]
            ),
        )
        html = self._memo.get(key)
        if html is None:
            html = mark_safe(super().render(template_name, context, request))  # noqa: S308
            self._memo[key] = html
            if len(self._memo) > self.MEMO_SIZE:
                self._memo.popitem(last=False)
        return html


_book_renderer = BookFormRenderer()


def _book_method_choices(*, viewer: Any, fiat_code: str) -> list[Any]:
    """The book's method filter: the viewer's country's methods (or the fiat's) first, then
    those used anywhere, then all the others, in groups, so every method stays one pick away."""
    groups = selectors.payment_methods_for_viewer(
        user=viewer, fiat_code=fiat_code, methods=book_reference().methods
    )
    choices: list[Any] = [("", gettext("All payment methods"))]
    for label, methods in (
        (
            gettext("Used in {where}").format(where=groups.where) if groups.where else "",
            groups.local,
        ),
        (gettext("Used anywhere"), groups.anywhere),
        (gettext("Other methods") if groups.where else "", groups.others),
    ):
        if methods:
            pairs = [(m.code, m.name) for m in methods]
            choices.extend([(label, pairs)] if label else pairs)
    return choices


def _own_accounts(user: Any) -> list[PaymentAccount]:
    if user is None or not user.is_authenticated:
        return []
    return list(PaymentAccount.objects.filter(user_id=user.pk).select_related("method"))


class OrderBookFilterForm(forms.Form):
    """The GET filters of the order book. `side` is what the visitor wants to do."""

    side = forms.ChoiceField(choices=SIDE_CHOICES, required=False)
    asset = forms.ChoiceField(required=False, label=gettext_lazy("Crypto"))
    fiat = forms.ChoiceField(required=False, label=gettext_lazy("Currency"))
    amount = AmountField(
        required=False,
        max_length=32,
        label=gettext_lazy("Amount"),
        widget=AmountInput({"placeholder": gettext_lazy("Enter amount")}),
    )
    payment_method = forms.ChoiceField(required=False, label=gettext_lazy("Payment method"))
    default_renderer = _book_renderer

    def __init__(self, *args: Any, viewer: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        reference = book_reference()
        cast(forms.ChoiceField, self.fields["asset"]).choices = reference.assets
        cast(forms.ChoiceField, self.fields["fiat"]).choices = [
            ("", gettext("All currencies")),
            *reference.fiats,
        ]
        cast(forms.ChoiceField, self.fields["payment_method"]).choices = _book_method_choices(
            viewer=viewer, fiat_code=str(self.data.get("fiat") or "")
        )


class QuickTradeForm(forms.Form):
    """Quick buy/sell: the best offer that fits is taken at once."""

    side = forms.ChoiceField(choices=SIDE_CHOICES, label=gettext_lazy("I want to"))
    asset = forms.ChoiceField(label=gettext_lazy("Crypto"))
    fiat = forms.ChoiceField(label=gettext_lazy("Currency"))
    fiat_amount = AmountField(
        max_length=32,
        label=gettext_lazy("Amount to spend / receive"),
        widget=AmountInput({"placeholder": "0.00"}),
    )
    payment_method = forms.ChoiceField(required=False, label=gettext_lazy("Payment method"))
    default_renderer = _book_renderer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        reference = book_reference()
        cast(forms.ChoiceField, self.fields["asset"]).choices = reference.assets
        cast(forms.ChoiceField, self.fields["fiat"]).choices = reference.fiats
        cast(forms.ChoiceField, self.fields["payment_method"]).choices = [
            ("", gettext("Any payment method")),
            *((m.code, m.name) for m in reference.methods),
        ]


class TakeOfferForm(forms.Form):
    """Take an offer for an amount in the asset or in fiat (exactly one of the two)."""

    fiat_amount = AmountField(required=False, max_length=32, widget=AmountInput())
    amount = AmountField(required=False, max_length=32, widget=AmountInput())
    payment_method = forms.ChoiceField(label=gettext_lazy("Payment method"))
    payment_account = forms.TypedChoiceField(
        label=gettext_lazy("Your account the buyer pays into"),
        required=False,
        coerce=int,
        empty_value=None,
        help_text=gettext_lazy(
            "Saved in Settings → Payment accounts; it must be for the payment method above."
        ),
    )

    def __init__(self, *args: Any, offer: Offer, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Taking a buy offer sells: the taker names their account (a sell offer's maker did).
        accounts = _own_accounts(user) if offer.side == Offer.Side.BUY else []
        if accounts:
            cast(forms.ChoiceField, self.fields["payment_account"]).choices = [
                ("", gettext("None: I'll give it in the chat")),
                *account_choices(accounts),
            ]
        else:
            del self.fields["payment_account"]
        self.fields["fiat_amount"].label = gettext("Amount in {fiat}").format(fiat=offer.fiat.code)
        self.fields["amount"].label = gettext("Or amount in {asset}").format(asset=offer.asset.code)
        self.fields["fiat_amount"].widget.attrs["placeholder"] = (
            f"{offer.min_fiat:,.2f} – {offer.max_fiat:,.2f}"
        )
        places = offer.asset.display_places
        self.fields["amount"].widget.attrs["placeholder"] = "0." + "0" * places if places else "0"
        methods = [(m.code, m.name) for m in offer.payment_methods.all()]
        cast(forms.ChoiceField, self.fields["payment_method"]).choices = methods
        if len(methods) == 1:
            self.fields["payment_method"].initial = methods[0][0]

    def clean(self) -> dict[str, Any]:
        data = cast(dict[str, Any], super().clean())
        if not data.get("amount") and not data.get("fiat_amount"):
            raise forms.ValidationError(
                gettext("Enter how much you want to trade, in fiat or in the asset.")
            )
        if data.get("amount") and data.get("fiat_amount"):
            raise forms.ValidationError(
                gettext("Enter the amount in fiat or in the asset, not both.")
            )
        return data


class OfferForm(forms.Form):
    """Create or edit an offer. On edit, side, asset and currency are fixed (shown, not sent)."""

    side = forms.ChoiceField(
        label=gettext_lazy("Side"),
        choices=[("sell", gettext_lazy("I want to sell")), ("buy", gettext_lazy("I want to buy"))],
        widget=forms.RadioSelect,
        initial="sell",
    )
    asset = forms.ChoiceField(label=gettext_lazy("Crypto"))
    fiat = forms.ChoiceField(label=gettext_lazy("For currency"))
    price_type = forms.ChoiceField(
        label=gettext_lazy("Price type"),
        choices=[
            ("fixed", gettext_lazy("Fixed price")),
            ("floating", gettext_lazy("Floating: follows the market index")),
        ],
        widget=forms.RadioSelect,
        initial="fixed",
    )
    price = AmountField(
        required=False,
        max_length=32,
        label=gettext_lazy("Fixed price (per 1 unit)"),
        widget=AmountInput(),
    )
    margin_percent = AmountField(
        required=False,
        max_length=8,
        label=gettext_lazy("Margin over the index (%)"),
        help_text=gettext_lazy("E.g. 1.5 sells 1.5% above the index; -1 buys 1% below it."),
        widget=AmountInput({"inputmode": "text"}),
    )
    amount = AmountField(
        max_length=48, label=gettext_lazy("Total amount of crypto"), widget=AmountInput()
    )
    min_fiat = AmountField(
        max_length=32, label=gettext_lazy("Minimum per trade"), widget=AmountInput()
    )
    max_fiat = AmountField(
        max_length=32, label=gettext_lazy("Maximum per trade"), widget=AmountInput()
    )
    payment_methods = forms.MultipleChoiceField(
        label=gettext_lazy("Payment methods (up to 3)"), widget=forms.CheckboxSelectMultiple
    )
    payment_accounts = forms.TypedMultipleChoiceField(
        label=gettext_lazy("Accounts buyers pay into (sell offers)"),
        required=False,
        coerce=int,
        widget=forms.CheckboxSelectMultiple,
        help_text=gettext_lazy(
            "At most one per payment method; the trade room shows it to the buyer. "
            "Manage them in Settings → Payment accounts."
        ),
    )
    payment_window_minutes = forms.TypedChoiceField(
        label=gettext_lazy("Payment window"),
        choices=PAYMENT_WINDOWS,
        coerce=int,
        initial=30,
        help_text=gettext_lazy("How long the buyer has to pay before the trade expires."),
    )
    terms = forms.CharField(
        required=False,
        max_length=2000,
        label=gettext_lazy("Terms (optional)"),
        widget=forms.Textarea(
            {"rows": 4, "placeholder": gettext_lazy("E.g. No third-party payments.")}
        ),
    )
    min_taker_tier = forms.TypedChoiceField(
        label=gettext_lazy("Verification of takers"),
        choices=[
            (0, gettext_lazy("Anyone, verified or not")),
            (1, gettext_lazy("Tier 1 or higher (identity verified)")),
            (2, gettext_lazy("Tier 2 only (fully verified)")),
        ],
        coerce=int,
        initial=0,
        required=False,
        empty_value=0,  # type: ignore[arg-type]  # any value, not only a str
    )
    min_taker_trades = forms.IntegerField(
        label=gettext_lazy("Minimum completed trades"),
        min_value=0,
        initial=0,
        required=False,
        help_text=gettext_lazy("0 lets newcomers take it."),
        widget=forms.NumberInput({"inputmode": "numeric"}),
    )
    min_account_age_days = forms.IntegerField(
        label=gettext_lazy("Minimum account age (days)"),
        min_value=0,
        initial=0,
        required=False,
        widget=forms.NumberInput({"inputmode": "numeric"}),
    )
    trusted_only = forms.BooleanField(
        label=gettext_lazy("Only traders on my trusted list"),
        required=False,
        help_text=gettext_lazy("Manage your trusted list in Settings."),
    )
    # --- issue 20 ---
    allowed_countries = forms.CharField(
        label=gettext_lazy("Takers' countries"),
        required=False,
        max_length=400,
        help_text=gettext_lazy(
            "Two-letter ISO codes, comma-separated (e.g. DE, AT); takers whose profile names "
            "another country, or none, can't take it. Empty: anywhere."
        ),
        widget=forms.TextInput(
            {"placeholder": gettext_lazy("Anywhere"), "autocapitalize": "characters"}
        ),
    )
    auto_reply = forms.CharField(
        required=False,
        max_length=1000,
        label=gettext_lazy("Auto-reply (optional)"),
        help_text=gettext_lazy(
            "Posted in the trade chat as your first message when a trade opens."
        ),
        widget=forms.Textarea(
            {
                "rows": 3,
                "placeholder": gettext_lazy("E.g. Hi! Pay by SEPA and mark the trade paid."),
            }
        ),
    )
    # --- end issue 20 ---

    def __init__(
        self, *args: Any, offer: Offer | None = None, user: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.offer = offer
        cast(forms.ChoiceField, self.fields["payment_accounts"]).choices = account_choices(
            _own_accounts(user)
        )
        cast(forms.ChoiceField, self.fields["asset"]).choices = _asset_choices()
        cast(forms.ChoiceField, self.fields["fiat"]).choices = _fiat_choices()
        cast(forms.ChoiceField, self.fields["payment_methods"]).choices = _method_choices()
        if offer is not None:
            # Side and pair define the offer; changing them is a new offer.
            for name in ("side", "asset", "fiat"):
                self.fields[name].disabled = True
                self.fields[name].required = False

    @classmethod
    def initial_for(cls, offer: Offer) -> dict[str, Any]:
        return {
            "side": offer.side,
            "asset": offer.asset.code,
            "fiat": offer.fiat.code,
            "price_type": offer.price_type,
            "price": amount(offer.price, 2) if offer.price is not None else "",
            "margin_percent": (
                format(offer.margin_percent.normalize(), "f")
                if offer.margin_percent is not None
                else ""
            ),
            "amount": amount(offer.amount, offer.asset.precision),
            "min_fiat": amount(offer.min_fiat, offer.fiat.precision),
            "max_fiat": amount(offer.max_fiat, offer.fiat.precision),
            "payment_methods": [m.code for m in offer.payment_methods.all()],
            "payment_accounts": [a.pk for a in offer.payment_accounts.all()],
            "payment_window_minutes": offer.payment_window_minutes,
            "terms": offer.terms,
            "min_taker_tier": offer.min_taker_tier,
            "min_taker_trades": offer.min_taker_trades,
            "min_account_age_days": offer.min_account_age_days,
            "trusted_only": offer.trusted_only,
            "allowed_countries": ", ".join(offer.allowed_countries),
            "auto_reply": offer.auto_reply,
        }

    def service_values(self) -> dict[str, Any]:
        """What offer_create / offer_update take, as typed."""
        data = self.cleaned_data
        values = {
            "price_type": data["price_type"],
            "price": data.get("price") or None,
            "margin_percent": data.get("margin_percent") or None,
            "amount": data["amount"],
            "min_fiat": data["min_fiat"],
            "max_fiat": data["max_fiat"],
            "payment_methods": list(data["payment_methods"]),
            "payment_accounts": list(data.get("payment_accounts") or []),
            "payment_window_minutes": data["payment_window_minutes"],
            "terms": data.get("terms", ""),
            "min_taker_tier": data.get("min_taker_tier") or 0,
            "min_taker_trades": data.get("min_taker_trades") or 0,
            "min_account_age_days": data.get("min_account_age_days") or 0,
            "trusted_only": bool(data.get("trusted_only")),
            "allowed_countries": data.get("allowed_countries", ""),
            "auto_reply": data.get("auto_reply", ""),
        }
        if self.offer is None:
            values.update(side=data["side"], asset=data["asset"], fiat=data["fiat"])
        return values
