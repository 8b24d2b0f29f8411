"""Loan news (lending) to the people and bots that follow it: in-app notifications for the
borrower and every lender, the moderators when a stale price blocks a liquidation, and signed
webhooks through the same outbox as trades (webhooks.webhook_deliveries_queue)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.money import fmt
from lending.models import Loan, LoanEvent
from lending.selectors import loan_parties
from notifications import webhooks
from notifications.models import Notification, WebhookDelivery, WebhookEndpoint

L = Loan.State
K = Notification.Kind

ACTIVATED, PAID, MISSED, DEFAULTED, LIQUIDATED, MARGIN_CALL = (
    "activated", "installment_paid", "installment_missed", "defaulted", "liquidated", "margin_call",
)  # fmt: skip
# The news -> its webhook event (a default has none: the liquidation that follows has one).
WEBHOOK_EVENT = {
    ACTIVATED: "loan.activated",
    PAID: "loan.installment_paid",
    MISSED: "loan.installment_missed",
    LIQUIDATED: "loan.liquidated",
    MARGIN_CALL: "loan.margin_call",
}
TEXT = {
    ACTIVATED: "Loan #{n} is active: {borrower} borrowed {principal} {asset} against "
    "{collateral} {collateral_asset}; the first installment is due {first_due}.",
    PAID: "Loan #{n}: installment {installment} paid ({amount} {asset}).",
    MISSED: "Loan #{n} is late: installment {installment} could not be collected from the "
    "borrower's wallet. Unless it is covered within {grace} hours the loan defaults and the "
    "collateral is liquidated.",
    DEFAULTED: "Loan #{n} defaulted: the grace period ran out. The collateral is liquidated "
    "for the lenders.",
    LIQUIDATED: "Loan #{n} was liquidated: {reason}",
    MARGIN_CALL: "Loan #{n}: margin call. Its LTV is {ltv}, past the {call_line} line: add "
    "collateral or repay. At {liquidation_line} the collateral is liquidated.",
}
MODERATOR_TEXT = (
    "Loan #{n}: liquidation blocked: {why}. Fix the price feed (or pause liquidations): "
    "/admin/lending/loan/{n}/change/"
)
_INSTALLMENT = re.compile(r"^installment (\d+) (paid|not covered)")


def _news(event: LoanEvent) -> str | None:
    """What a committed loan event means for people, if anything."""
    if event.subject != "loan":
        return None
    old, new = event.old_state, event.new_state
    if old == "" and new == L.ACTIVE:
        return ACTIVATED
    if old == new:
        found = _INSTALLMENT.match(event.reason)
        return PAID if found and found.group(2) == "paid" else None
    if new == L.LATE:
        return MISSED
    if new == L.DEFAULTED:
        return DEFAULTED
    if new == L.LIQUIDATED:
        return LIQUIDATED
    return None


def _short(text: str) -> str:
    """An amount for people: 1.500000 -> 1.5 (webhooks keep the full precision)."""
    return text.rstrip("0").rstrip(".") if "." in text else text


def _pct(value: Decimal) -> str:
    return f"{value * 100:.1f}%"


def _context(loan: Loan, event: LoanEvent | None, **extra: Any) -> dict[str, Any]:
    found = _INSTALLMENT.match(event.reason) if event is not None else None
    first = loan.installments.order_by("n").values_list("due_at", flat=True).first()
    return {
        "n": loan.pk,
        "borrower": loan.borrower.username,
        "principal": _short(fmt(loan.principal, loan.asset.precision)),
        "asset": loan.asset.code,
        "collateral": _short(fmt(loan.collateral_amount, loan.collateral_asset.precision)),
        "collateral_asset": loan.collateral_asset.code,
        "first_due": f"{first:%d %b %Y}" if first else "-",
        "installment": found.group(1) if found else "",
        "amount": _short(event.reason.partition(": ")[2]) if event is not None else "",
        "reason": event.reason if event is not None else "",
        "grace": settings.LENDING_GRACE_HOURS,
        **extra,
    }


def _payload(loan: Loan, name: str, at: Any, **extra: Any) -> dict[str, Any]:
    """The JSON body of a loan event (delivery_id is added per delivery)."""
    return {
        "event": name,
        "created_at": at.isoformat().replace("+00:00", "Z"),
        "loan": {
            "id": loan.pk,
            "state": loan.state,
            "asset": loan.asset.code,
            "principal": fmt(loan.principal, loan.asset.precision),
            "collateral_asset": loan.collateral_asset.code,
            "collateral_amount": fmt(loan.collateral_amount, loan.collateral_asset.precision),
            "borrower": loan.borrower.username,
        },
        **extra,
    }


def _endpoints(user_ids: set[int]) -> dict[int, list[WebhookEndpoint]]:
    found: dict[int, list[WebhookEndpoint]] = {}
    for endpoint in WebhookEndpoint.objects.filter(user_id__in=user_ids, is_active=True).order_by(
        "pk"
    ):
        found.setdefault(endpoint.user_id, []).append(endpoint)
    return found


def _loans(ids: set[int]) -> dict[int, Loan]:
    return Loan.objects.select_related("asset", "collateral_asset", "borrower").in_bulk(ids)


def _send(notes: list[Notification], deliveries: list[WebhookDelivery]) -> None:
    with transaction.atomic():
        Notification.objects.bulk_create(notes)
        webhooks.webhook_deliveries_queue(deliveries)


def _deliveries(
    users: list[int], endpoints: dict[int, list[WebhookEndpoint]], name: str, payload: Any
) -> list[WebhookDelivery]:
    now = timezone.now()
    return [
        WebhookDelivery(endpoint=endpoint, event=name, payload=payload, next_attempt_at=now)
        for user_id in users
        for endpoint in endpoints.get(user_id, [])
        if endpoint.wants(name)
    ]


def notify_loan_events(*, events: list[LoanEvent]) -> None:
    """Loan moves that committed: the borrower and every lender are told in-app, and the
    endpoints of each that want the event get a signed webhook."""
    wanted = [(e, news) for e in events if (news := _news(e)) is not None]
    if not wanted:
        return
    ids = {e.request_id for e, _ in wanted}
    loans, parties = _loans(ids), loan_parties(loan_ids=list(ids))
    endpoints = _endpoints({u for users in parties.values() for u in users})
    notes: list[Notification] = []
    deliveries: list[WebhookDelivery] = []
    for event, news in wanted:
        loan, users = loans.get(event.request_id), parties.get(event.request_id, [])
        if loan is None:
            continue
        text = TEXT[news].format(**_context(loan, event))[:500]
        notes += [Notification(user_id=u, kind=K.LOAN, text=text) for u in users]
        name = WEBHOOK_EVENT.get(news)
        if name is not None:
            extra = {"installment": int(n)} if (n := _context(loan, event)["installment"]) else {}
            payload = _payload(loan, name, event.created_at, **extra)
            deliveries += _deliveries(users, endpoints, name, payload)
    _send(notes, deliveries)


def notify_margin_call(*, loan_id: int, ltv: Decimal) -> None:
    """A loan's LTV has just crossed the margin-call line (once per crossing): the borrower is
    told in-app; the borrower's and the lenders' bots by webhook."""
    loan = _loans({loan_id}).get(loan_id)
    if loan is None:
        return
    users = loan_parties(loan_ids=[loan_id]).get(loan_id, [loan.borrower_id])
    text = TEXT[MARGIN_CALL].format(
        **_context(
            loan,
            None,
            ltv=_pct(ltv),
            call_line=_pct(settings.LENDING_MARGIN_CALL_LTV),
            liquidation_line=_pct(settings.LENDING_LIQUIDATION_LTV),
        )
    )[:500]
    name = WEBHOOK_EVENT[MARGIN_CALL]
    payload = _payload(loan, name, timezone.now(), ltv=f"{ltv:.4f}")
    _send(
        [Notification(user_id=loan.borrower_id, kind=K.LOAN, text=text)],
        _deliveries(users, _endpoints(set(users)), name, payload),
    )


def notify_liquidation_blocked(*, loan_id: int, why: str, moderators: list[Any]) -> None:
    """A stale price refused a loan's liquidation: the moderators are told, once until they
    read it (the sweeper tries again every run)."""
    head = f"Loan #{loan_id}: liquidation blocked"
    unread = set(
        Notification.objects.filter(
            kind=K.LOAN, read_at__isnull=True, text__startswith=head, user__in=moderators
        ).values_list("user_id", flat=True)
    )
    text = MODERATOR_TEXT.format(n=loan_id, why=why.rstrip("."))[:500]
    Notification.objects.bulk_create(
        Notification(user=m, kind=K.LOAN, text=text) for m in moderators if m.pk not in unread
    )
