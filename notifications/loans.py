"""Loan news (lending) to the people and bots that follow it: in-app notifications for the
borrower and every lender, the moderators when a stale price blocks a liquidation, and signed
webhooks through the same outbox as trades (webhooks.webhook_deliveries_queue)."""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from common.money import fmt
from lending.models import Installment, Loan, LoanDispute, LoanEvent
from lending.selectors import loan_parties
from notifications import webhooks
from notifications.email import in_language, recipient_languages
from notifications.models import (
    Notification,
    NotificationPreference,
    WebhookDelivery,
    WebhookEndpoint,
)
from notifications.outbound import Outgoing, outgoing_send

logger = logging.getLogger(__name__)
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
# Lazy: each text is written in its recipient's language (notifications.email.in_language).
TEXT: dict[str, Any] = {
    ACTIVATED: _(
        "Loan #{n} is active: {borrower} borrowed {principal} {asset} against "
        "{collateral} {collateral_asset}; the first installment is due {first_due}."
    ),
    PAID: _("Loan #{n}: installment {installment} paid ({amount} {asset})."),
    MISSED: _(
        "Loan #{n} is late: installment {installment} could not be collected from the "
        "borrower's wallet. Unless it is covered within {grace} hours the loan defaults and the "
        "collateral is liquidated."
    ),
    DEFAULTED: _(
        "Loan #{n} defaulted: the grace period ran out. The collateral is liquidated "
        "for the lenders."
    ),
    LIQUIDATED: _("Loan #{n} was liquidated: {reason}"),
    MARGIN_CALL: _(
        "Loan #{n}: margin call. Its LTV is {ltv}, past the {call_line} line: add "
        "collateral or repay. At {liquidation_line} the collateral is liquidated."
    ),
}
SUBJECT: dict[str, Any] = {
    ACTIVATED: _("Loan #{n}: activated"),
    MISSED: _("Loan #{n}: installment missed"),
    MARGIN_CALL: _("Loan #{n}: margin call"),
    DEFAULTED: _("Loan #{n}: defaulted"),
    LIQUIDATED: _("Loan #{n}: liquidated"),
}
MODERATOR_HEAD = _("Loan #{n}: liquidation blocked")
MODERATOR_TEXT = _(
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


def _first_due(loan_ids: set[int]) -> dict[int, Any]:
    """Each loan's first due date, in one query."""
    rows = Installment.objects.filter(loan_id__in=loan_ids, n=1).values_list("loan_id", "due_at")
    return dict(rows)


def _context(
    loan: Loan, event: LoanEvent | None, first: Any = None, **extra: Any
) -> dict[str, Any]:
    found = _INSTALLMENT.match(event.reason) if event is not None else None
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


# Who gets an email about a loan's news, besides the in-app note: whoever must act (the borrower
# when a payment is missed or a margin call comes), and everyone when the loan starts or ends
# badly. An installment paid is in-app only.
EMAIL_TO = {
    ACTIVATED: "all",
    MISSED: "borrower",
    MARGIN_CALL: "borrower",
    DEFAULTED: "all",
    LIQUIDATED: "all",
}


LOANS = NotificationPreference.Category.LOANS


def _mails(loan: Loan, news: str, text: Any, users: list[int]) -> list[Outgoing]:
    """Email and Telegram (as each chose) for whoever EMAIL_TO names."""
    who = EMAIL_TO.get(news)
    if who is None:
        return []
    ids = [loan.borrower_id] if who == "borrower" else users
    subject = format_lazy(SUBJECT[news], n=loan.pk)
    return [Outgoing(u, LOANS, subject, text) for u in ids]


def _send(
    notes: list[Notification],
    deliveries: list[WebhookDelivery],
    mails: list[Outgoing] | None = None,
) -> None:
    with transaction.atomic():
        Notification.objects.bulk_create(notes)
        webhooks.webhook_deliveries_queue(deliveries)
        outgoing_send(mails or [])


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
    everyone = {u for users in parties.values() for u in users}
    endpoints = _endpoints(everyone)
    notes: list[Notification] = []
    deliveries: list[WebhookDelivery] = []
    mails: list[Outgoing] = []
    langs = recipient_languages(everyone)
    firsts = _first_due({e.request_id for e, news in wanted if news == ACTIVATED})
    for event, news in wanted:
        loan, users = loans.get(event.request_id), parties.get(event.request_id, [])
        if loan is None:
            continue
        context = _context(loan, event, firsts.get(loan.pk))
        text = format_lazy(TEXT[news], **context)
        notes += [
            Notification(user_id=u, loan=loan, kind=K.LOAN, text=in_language(langs, u, text))
            for u in users
        ]
        mails += _mails(loan, news, text, users)
        name = WEBHOOK_EVENT.get(news)
        if name is not None:
            extra = {"installment": int(n)} if (n := context["installment"]) else {}
            payload = _payload(loan, name, event.created_at, **extra)
            deliveries += _deliveries(users, endpoints, name, payload)
    _send(notes, deliveries, mails)


def notify_margin_calls(*, calls: list[tuple[int, Decimal]]) -> None:
    """Loans whose LTV has just crossed the margin-call line (once per crossing): each borrower
    is told in-app and by email; the borrower's and the lenders' bots by webhook. A constant
    number of queries, however many loans crossed."""
    ltvs = dict(calls)
    loans = _loans(set(ltvs))
    parties = loan_parties(loan_ids=list(loans))
    everyone = {u for users in parties.values() for u in users}
    endpoints = _endpoints(everyone)
    lines = {
        "call_line": _pct(settings.LENDING_MARGIN_CALL_LTV),
        "liquidation_line": _pct(settings.LENDING_LIQUIDATION_LTV),
    }
    name, now = WEBHOOK_EVENT[MARGIN_CALL], timezone.now()
    notes: list[Notification] = []
    deliveries: list[WebhookDelivery] = []
    mails: list[Outgoing] = []
    langs = recipient_languages(everyone | {loan.borrower_id for loan in loans.values()})
    for loan_id, loan in sorted(loans.items()):
        ltv = ltvs[loan_id]
        users = parties.get(loan_id, [loan.borrower_id])
        text = format_lazy(TEXT[MARGIN_CALL], **_context(loan, None, ltv=_pct(ltv), **lines))
        notes.append(
            Notification(
                user_id=loan.borrower_id,
                loan=loan,
                kind=K.LOAN,
                text=in_language(langs, loan.borrower_id, text),
            )
        )
        payload = _payload(loan, name, now, ltv=f"{ltv:.4f}")
        deliveries += _deliveries(users, endpoints, name, payload)
        mails += _mails(loan, MARGIN_CALL, text, users)
    _send(notes, deliveries, mails)


def notify_liquidation_blocked(*, loan_id: int, why: str, moderators: list[Any]) -> None:
    """A stale price refused a loan's liquidation: the moderators are told, once until they
    read it (the sweeper tries again every run)."""
    # The note starts the same in every language it may have been written in.
    head = format_lazy(MODERATOR_HEAD, n=loan_id)
    starts = Q()
    for code, _name in settings.LANGUAGES:
        starts |= Q(text__startswith=in_language({0: code}, 0, head))
    unread = set(
        Notification.objects.filter(
            starts, kind=K.LOAN, read_at__isnull=True, user__in=moderators
        ).values_list("user_id", flat=True)
    )
    langs = recipient_languages(m.pk for m in moderators)
    text = format_lazy(MODERATOR_TEXT, n=loan_id, why=why.rstrip("."))
    Notification.objects.bulk_create(
        Notification(user=m, loan_id=loan_id, kind=K.LOAN, text=in_language(langs, m.pk, text))
        for m in moderators
        if m.pk not in unread
    )


# --- disputes ------------------------------------------------------------------------------

DISPUTE_TEXT: dict[str, Any] = {
    "opened": _(
        "Loan #{n}: {who} ({role}) opened dispute #{d} ({category}). A moderator will "
        "look at it; add your side on the loan's page."
    ),
    "statement": _("Loan #{n}: a new statement in dispute #{d}."),
    "assigned": _("Loan #{n}: moderator {moderator} took dispute #{d}."),
    "decided": _("Loan #{n}: dispute #{d} decided: {outcome}. {reason}"),
}
DISPUTE_SUBJECT: dict[str, Any] = {
    "opened": _("Loan #{n}: dispute #{d} opened"),
    "decided": _("Loan #{n}: dispute #{d} decided"),
}
DISPUTE_MODERATOR_TEXT = _(
    "Loan #{n}: dispute #{d} opened by {who} ({category}): /admin/lending/loandispute/{d}/change/"
)


def notify_loan_dispute(*, dispute: LoanDispute, news: str, moderators: list[Any]) -> None:
    """A loan dispute's news: the parties in-app (by email when it opens or is decided, all but
    whoever caused it); the moderators when one opens."""
    loan = dispute.loan
    users = loan_parties(loan_ids=[loan.pk]).get(loan.pk, [])
    latest = dispute.statements.order_by("-pk").first() if news == "statement" else None
    actor_id = {
        "opened": dispute.opened_by_id,
        "statement": latest.author_id if latest else None,
        "decided": None,
        "assigned": None,
    }.get(news)
    context = {
        "n": loan.pk, "d": dispute.pk, "who": dispute.opened_by.username,
        "role": dispute.opener_role, "category": dispute.get_category_display().lower(),
        "moderator": dispute.assigned_to.username if dispute.assigned_to else "",
        "outcome": dispute.get_outcome_display(), "reason": dispute.decision_reason,
    }  # fmt: skip
    text = format_lazy(DISPUTE_TEXT[news], **context)
    told = [u for u in users if u != actor_id]
    if news == "statement" and dispute.assigned_to_id and dispute.assigned_to_id != actor_id:
        told.append(dispute.assigned_to_id)
    langs = recipient_languages(set(told) | {m.pk for m in moderators})
    notes = [
        Notification(user_id=u, loan=loan, kind=K.LOAN, text=in_language(langs, u, text))
        for u in told
    ]
    mails: list[Outgoing] = []
    if news in ("opened", "decided"):
        subject = format_lazy(DISPUTE_SUBJECT[news], n=loan.pk, d=dispute.pk)
        mails = [Outgoing(u, LOANS, subject, text) for u in dict.fromkeys(told)]
    if news == "opened":
        staff_text = format_lazy(DISPUTE_MODERATOR_TEXT, **context)
        notes += [
            Notification(user=m, loan=loan, kind=K.LOAN, text=in_language(langs, m.pk, staff_text))
            for m in moderators
            if m.pk not in users
        ]
    _send(notes, [], mails)
