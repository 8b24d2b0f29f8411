"""Saved payment accounts: a user's own, per payment method, with the method's fields checked
(marketplace.payment_fields) and the holder's name matching their verified name when they have
one. A sell offer names the maker's accounts (at most one per payment method of the offer; a
method without one leaves the buyer to ask in the chat); a buy offer names none, because its
seller is the taker, who picks one of theirs when taking. escrow.services.trade_open copies the
chosen account into the trade (payment_account_snapshot)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction
from django.utils.translation import gettext

from accounts.selectors import verified_name_for
from common.errors import NotFound, ValidationFailed
from common.prepared import PreparedRead
from marketplace.models import Offer, PaymentAccount, PaymentMethod
from marketplace.payment_fields import clean_details, display, fields_for, same_name

MAX_PAYMENT_ACCOUNTS = 20
MAX_LABEL = 64


def _refuse(errors: dict[str, str]) -> None:
    if errors:
        first = next(iter(errors))
        raise ValidationFailed(
            f"{first}: {errors[first]}", fields={k: [v] for k, v in errors.items()}
        )


def _checked(*, user: Any, method: PaymentMethod, details: Mapping[str, Any]) -> dict[str, str]:
    """The stored values of `details` for `method`, or ValidationFailed naming each bad field."""
    if not isinstance(details, Mapping):
        raise ValidationFailed.for_field("details", gettext("The account's fields, as an object."))
    values, errors = clean_details(method.code, details)
    verified = verified_name_for(user_id=user.pk)
    holder = values.get("holder_name")
    if verified and holder and not same_name(holder, verified):
        errors["holder_name"] = (
            f"Must be your verified name, {verified}: payments come from and go to accounts in "
            "the trader's own name."
        )
    _refuse(errors)
    return values


def _label(label: Any) -> str:
    text = " ".join(str(label or "").split())
    if len(text) > MAX_LABEL:
        raise ValidationFailed.for_field(
            "label", gettext("At most {MAX_LABEL} characters.").format(MAX_LABEL=MAX_LABEL)
        )
    return text


def _method(code: Any) -> PaymentMethod:
    method = PaymentMethod.objects.filter(code=str(code or ""), is_active=True).first()
    if method is None:
        raise ValidationFailed.for_field(
            "method", gettext("Unknown payment method {code!r}.").format(code=code)
        )
    return method


def _own_locked(*, account_id: Any, user: Any) -> PaymentAccount:
    # Only the account's row: never the payment method's, which every take by it would queue on.
    account = (
        PaymentAccount.objects.select_for_update(of=("self",))
        .select_related("method")
        .filter(pk=account_id, user_id=user.pk)
        .first()
    )
    if account is None:  # someone else's is not a hint that it exists
        raise NotFound(
            gettext("Payment account #{account_id} not found.").format(account_id=account_id)
        )
    return account


def payment_account_create(
    *, user: Any, method: str, details: Mapping[str, Any], label: Any = ""
) -> PaymentAccount:
    """Save an account for one payment method; its fields checked, the holder's name the
    user's verified name when they have one; at most MAX_PAYMENT_ACCOUNTS each."""
    method_obj = _method(method)
    text = _label(label)
    values = _checked(user=user, method=method_obj, details=details)
    with transaction.atomic():
        # Two creates racing both count below the cap: the user's rows are locked first.
        owned = list(
            PaymentAccount.objects.select_for_update().filter(user_id=user.pk).values_list("pk")
        )
        if len(owned) >= MAX_PAYMENT_ACCOUNTS:
            raise ValidationFailed(
                gettext("You have {v1} payment accounts; delete one first.").format(v1=len(owned)),
                code="too_many_payment_accounts",
            )
        return PaymentAccount.objects.create(
            user=user, method=method_obj, label=text, details=values
        )


def payment_account_update(
    *,
    account_id: Any,
    actor: Any,
    details: Mapping[str, Any] | None = None,
    label: Any = None,
) -> PaymentAccount:
    """The owner changes an account's fields (those given replace theirs; an empty optional
    one is removed) or label; its method stays. Trades already open keep the copy they made."""
    with transaction.atomic():
        account = _own_locked(account_id=account_id, user=actor)
        if details is not None:
            if not isinstance(details, Mapping):
                raise ValidationFailed.for_field(
                    "details", gettext("The account's fields, as an object.")
                )
            merged = {**account.details, **details}
            account.details = _checked(user=actor, method=account.method, details=merged)
        if label is not None:
            account.label = _label(label)
        account.save(update_fields=["details", "label", "updated_at"])
    return account


def payment_account_delete(*, account_id: Any, actor: Any) -> None:
    """The owner deletes an account; offers that named it no longer do, and open trades keep
    their copy."""
    with transaction.atomic():
        _own_locked(account_id=account_id, user=actor).delete()


# --- offers and takes -------------------------------------------------------------------------


def offer_payment_accounts(
    *, maker: Any, side: str, methods: Iterable[PaymentMethod], account_ids: Iterable[Any]
) -> list[PaymentAccount]:
    """The accounts an offer names: the maker's own, each for one of the offer's methods, one
    per method; a buy offer names none (its seller, the taker, picks one when taking)."""
    ids: list[int] = []
    for raw in account_ids or []:
        try:
            ids.append(int(raw))
        except (TypeError, ValueError):
            raise ValidationFailed.for_field(
                "payment_accounts", gettext("{raw!r} is not a payment account id.").format(raw=raw)
            ) from None
    ids = list(dict.fromkeys(ids))
    if not ids:
        return []
    if side != Offer.Side.SELL:
        raise ValidationFailed.for_field(
            "payment_accounts",
            gettext(
                "A buy offer names no account: its seller, the taker, picks theirs when taking."
            ),
        )
    found = {
        a.pk: a
        for a in PaymentAccount.objects.select_related("method").filter(
            pk__in=ids, user_id=maker.pk
        )
    }
    missing = [i for i in ids if i not in found]
    if missing:
        raise ValidationFailed.for_field(
            "payment_accounts",
            gettext("Payment account #{v1} is not one of yours.").format(v1=missing[0]),
        )
    codes = {m.code for m in methods}
    seen: set[str] = set()
    for account_id in ids:
        account = found[account_id]
        if account.method.code not in codes:
            raise ValidationFailed.for_field(
                "payment_accounts",
                gettext("Account #{pk} is for {name}, which this offer doesn't accept.").format(
                    pk=account.pk, name=account.method.name
                ),
            )
        if account.method.code in seen:
            raise ValidationFailed.for_field(
                "payment_accounts",
                gettext("Name one {name} account, not several.").format(name=account.method.name),
            )
        seen.add(account.method.code)
    return [found[i] for i in ids]


def offer_payment_accounts_keep(*, offer: Offer, methods: Iterable[PaymentMethod]) -> None:
    """After an offer's methods changed: it stops naming accounts of methods it dropped."""
    codes = {m.code for m in methods}
    dropped = [
        a for a in offer.payment_accounts.select_related("method") if a.method.code not in codes
    ]
    if dropped:
        offer.payment_accounts.remove(*dropped)


# A sell offer's account for a method, which a take copies, locked (common.prepared).
_OFFER_ACCOUNT_LOCKED = PreparedRead(
    lambda offer_id, method_id, maker_id: (
        PaymentAccount.objects.select_for_update(of=("self",))
        .select_related("method")
        .filter(offers=offer_id, method=method_id, user_id=maker_id)
        .order_by("pk")
    )
)


def payment_account_for_take(
    *, offer: Offer, method: PaymentMethod | None, taker: Any, account_id: Any = None
) -> PaymentAccount | None:
    """Inside the take's transaction: the seller's account the buyer pays into, locked (an edit
    racing the take lands wholly before or after the copy). A sell offer's is the one it names
    for the method (the taker names none); a buy offer's taker, the seller, may name one of
    theirs for the method."""
    assert transaction.get_connection().in_atomic_block, "a take needs a transaction"
    if method is None:
        return None
    if offer.side == Offer.Side.SELL:
        if account_id not in (None, ""):
            raise ValidationFailed.for_field(
                "payment_account",
                gettext("You pay into the account the seller named; only a seller names one."),
            )
        return _OFFER_ACCOUNT_LOCKED.first(offer.pk, method.pk, offer.maker_id)
    if account_id in (None, ""):
        return None
    try:
        account = _own_locked(account_id=int(account_id), user=taker)
    except (NotFound, TypeError, ValueError):
        raise ValidationFailed.for_field(
            "payment_account",
            gettext("Payment account #{account_id} is not one of yours.").format(
                account_id=account_id
            ),
        ) from None
    if account.method_id != method.pk:
        raise ValidationFailed.for_field(
            "payment_account",
            gettext("Account #{pk} is for {name}; this trade is paid by {name2}.").format(
                pk=account.pk, name=account.method.name, name2=method.name
            ),
        )
    return account


def payment_account_snapshot(account: PaymentAccount) -> dict[str, Any]:
    """What a trade copies of an account: every field, labelled, in the method's order, with
    its stored value (what a copy button copies) and how it reads."""
    verified = verified_name_for(user_id=account.user_id)
    holder = account.details.get("holder_name", "")
    return {
        "source_account_id": account.pk,
        "method_code": account.method.code,
        "method_name": account.method.name,
        "label": account.label,
        "holder_verified": bool(verified and holder and same_name(holder, verified)),
        "fields": [
            {
                "key": f.key,
                "label": str(f.label),  # stored with the trade: in the writer's language
                "value": account.details[f.key],
                "display": display(f.kind, account.details[f.key]),
            }
            for f in fields_for(account.method.code).fields
            if account.details.get(f.key)
        ],
    }
