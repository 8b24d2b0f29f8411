"""Webhooks for bots: endpoints (registered only for public addresses, notifications/egress.py)
and their signed deliveries (an outbox: claimed, sent to the checked address, retried with
backoff, swept)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from datetime import timedelta
from typing import Any

import certifi
import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from common.errors import NotFound, ValidationFailed
from escrow.models import Trade
from notifications import egress
from notifications.models import Notification, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

S = Trade.State
K = Notification.Kind
E = WebhookDelivery.Error

# Escrow state entered -> webhook event. refunding/splitting are passing states: the moderator's
# decision is announced once it is settled (refunded/split -> trade.resolved).
EVENT_FOR_STATE: dict[str, str] = {
    S.FUNDED: "trade.created",
    S.PAID: "trade.paid",
    S.RELEASING: "trade.released",
    S.COMPLETED: "trade.completed",
    S.CANCELLED: "trade.cancelled",
    S.EXPIRED: "trade.expired",
    S.DISPUTED: "trade.disputed",
    S.REFUNDED: "trade.resolved",
    S.SPLIT: "trade.resolved",
}
# Loans (lending): news of a loan goes to the endpoints of its borrower and of every lender.
LOAN_WEBHOOK_EVENTS: list[str] = [
    "loan.activated",
    "loan.installment_paid",
    "loan.installment_missed",
    "loan.margin_call",
    "loan.liquidated",
]
WEBHOOK_EVENTS: list[str] = list(dict.fromkeys(EVENT_FOR_STATE.values())) + LOAN_WEBHOOK_EVENTS

MAX_ENDPOINTS_PER_USER = 10
URL_MAX_LENGTH = 500
DELIVERY_TIMEOUT_SECONDS = 5
# A claimed delivery is not due again for this long: longer than one POST can take, so a second
# worker never sends it concurrently; if the claimer dies, the sweeper re-queues it afterwards.
CLAIM_LEASE = timedelta(seconds=60)
# Celery's countdown and our next_attempt_at come from two clock reads; don't drop a retry that
# fires a hair early.
CLAIM_SLACK = timedelta(seconds=1)
# The sweeper leaves rows alone this long past due: their own queued retry is about to run.
REQUEUE_GRACE = timedelta(seconds=30)
_validate_url = URLValidator(schemes=["http", "https"])


# --- webhook endpoints --------------------------------------------------------------------------


def webhook_create(*, user: Any, url: Any, events: Any = None) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint for trade events (https, public addresses only: egress.check_url);
    returns its signing secret (shown once)."""
    url = str(url or "").strip()
    if not url:
        raise ValidationFailed.for_field("url", gettext("Enter the URL to POST events to."))
    if len(url) > URL_MAX_LENGTH:
        raise ValidationFailed.for_field(
            "url",
            gettext("At most {URL_MAX_LENGTH} characters.").format(URL_MAX_LENGTH=URL_MAX_LENGTH),
        )
    try:
        _validate_url(url)
    except ValidationError:
        raise ValidationFailed.for_field(
            "url", gettext("Enter an http:// or https:// URL.")
        ) from None
    try:
        _check_target(url)
    except egress.EgressRefused as refused:
        raise ValidationFailed.for_field("url", refused.message) from None
    chosen = list(dict.fromkeys(str(e) for e in events or []))
    unknown = [e for e in chosen if e not in WEBHOOK_EVENTS]
    if unknown:
        raise ValidationFailed.for_field(
            "events",
            gettext("Unknown event {v1!r}; choose from {v2}.").format(
                v1=unknown[0], v2=", ".join(WEBHOOK_EVENTS)
            ),
        )
    if WebhookEndpoint.objects.filter(user=user).count() >= MAX_ENDPOINTS_PER_USER:
        raise ValidationFailed(
            gettext(
                "At most {MAX_ENDPOINTS_PER_USER} webhooks per account; delete one first."
            ).format(MAX_ENDPOINTS_PER_USER=MAX_ENDPOINTS_PER_USER),
            code="too_many_webhooks",
        )
    secret = f"whsec_{secrets.token_hex(32)}"
    endpoint = WebhookEndpoint.objects.create(
        user=user, url=url, secret=secret, events=[e for e in WEBHOOK_EVENTS if e in chosen]
    )
    return endpoint, secret


def _check_target(url: str) -> egress.ResolvedTarget:
    """The address policy with this deployment's switches (both off in production)."""
    return egress.check_url(
        url,
        allow_http=settings.WEBHOOK_ALLOW_HTTP,
        allow_loopback=settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES_FOR_TESTS,
    )


def webhook_delete(*, endpoint_id: int, user: Any) -> None:
    """Remove one of the user's endpoints and its delivery log; nothing more is sent to it."""
    deleted, _ = WebhookEndpoint.objects.filter(pk=endpoint_id, user=user).delete()
    if not deleted:
        raise NotFound(gettext("Webhook #{endpoint_id} not found.").format(endpoint_id=endpoint_id))


# --- webhook delivery ---------------------------------------------------------------------------


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """X-Signature: HMAC-SHA256 over "<timestamp>.<body>" keyed with the endpoint's secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def backoff_delay(attempts: int) -> timedelta:
    """How long after the n-th failed attempt the next one is due: base * 2^n, capped."""
    base = float(settings.WEBHOOK_BACKOFF_BASE_SECONDS)
    cap = float(getattr(settings, "WEBHOOK_BACKOFF_MAX_SECONDS", 3600))
    return timedelta(seconds=min(base * 2**attempts, cap))


# Why a URL was refused at delivery -> the class recorded on the delivery.
ERROR_FOR_REFUSAL: dict[str, str] = {
    "refused_address": E.REFUSED_ADDRESS,
    "dns_error": E.DNS_ERROR,
    "scheme": E.REFUSED_URL,
    "invalid_url": E.REFUSED_URL,
}


def _post(endpoint: WebhookEndpoint, delivery: WebhookDelivery) -> tuple[bool, int | None, str]:
    """One signed POST: (2xx?, HTTP status or None, a WebhookDelivery.Error value or "").

    The URL is resolved and checked again now (what it resolved to at registration may have
    changed), and the connection goes to the checked address: the name is not looked up twice.
    Nothing of the answer but its status code is read, and no exception text is kept: either
    would turn a webhook into a reader or a port scanner of whatever it can reach."""
    try:
        target = _check_target(endpoint.url)
    except egress.EgressRefused as refused:
        return False, None, ERROR_FOR_REFUSAL.get(refused.reason, E.REFUSED_URL)
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": "escrow-marketplace-webhooks/1",
        "X-Event": delivery.event,
        "X-Delivery-Id": str(delivery.pk),
        "X-Timestamp": timestamp,
        "X-Signature": webhook_signature(secret=endpoint.secret, timestamp=timestamp, body=body),
    }
    try:
        code = _send(target, body=body, headers=headers)
    except urllib3.exceptions.SSLError:
        return False, None, E.TLS_ERROR
    # NewConnectionError is a ConnectTimeoutError subclass in urllib3 2: refused is not a timeout.
    except urllib3.exceptions.NewConnectionError:
        return False, None, E.CONNECTION_ERROR
    except (urllib3.exceptions.TimeoutError, TimeoutError):
        return False, None, E.TIMEOUT
    except (urllib3.exceptions.HTTPError, OSError):
        return False, None, E.CONNECTION_ERROR
    if 200 <= code < 300:
        return True, code, ""
    # No redirects: a signed body goes to the registered URL only.
    if 300 <= code < 400:
        return False, code, E.REDIRECT
    return False, code, E.HTTP_STATUS


def _send(target: egress.ResolvedTarget, *, body: bytes, headers: dict[str, str]) -> int:
    """POST to the checked address; TLS still verifies the certificate of the URL's host name
    (SNI and the hostname check use it, not the address). Returns the status code only."""
    pool: urllib3.HTTPConnectionPool
    timeout = urllib3.Timeout(connect=DELIVERY_TIMEOUT_SECONDS, read=DELIVERY_TIMEOUT_SECONDS)
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            host=str(target.address),
            port=target.port,
            timeout=timeout,
            maxsize=1,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(
            host=str(target.address), port=target.port, timeout=timeout, maxsize=1, retries=False
        )
    with pool:
        response = pool.urlopen(
            "POST",
            target.target,
            body=body,
            headers=headers,
            retries=False,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
        )
        try:
            return response.status
        finally:
            # Closed unread: the body is never looked at.
            response.close()


def webhook_deliver(*, delivery_id: int) -> WebhookDelivery | None:
    """Make one due attempt: claim the row (so no two workers send it at once), POST the signed
    JSON, record the answer. None when there was nothing to do (not due, done, or claimed)."""
    now = timezone.now()
    lease_until = now + CLAIM_LEASE
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id,
        status=WebhookDelivery.Status.PENDING,
        next_attempt_at__lte=now + CLAIM_SLACK,
    ).update(next_attempt_at=lease_until)
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None:
        return None  # its endpoint was deleted meanwhile
    endpoint = delivery.endpoint
    if endpoint.is_active:
        ok, status_code, error = _post(endpoint, delivery)
    else:
        ok, status_code, error = False, None, E.ENDPOINT_DISABLED
    delivery.attempts += 1
    delivery.last_status_code = status_code
    delivery.last_error = error
    finished = timezone.now()
    if ok:
        delivery.status = WebhookDelivery.Status.DELIVERED
        delivery.delivered_at = finished
        delivery.next_attempt_at = None
    elif delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS or not endpoint.is_active:
        delivery.status = WebhookDelivery.Status.FAILED
        delivery.next_attempt_at = None
    else:
        delivery.next_attempt_at = finished + backoff_delay(delivery.attempts)
    # Compare-and-set on our lease: written only if no one took the row over meanwhile.
    WebhookDelivery.objects.filter(
        pk=delivery.pk, status=WebhookDelivery.Status.PENDING, next_attempt_at=lease_until
    ).update(
        status=delivery.status,
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        next_attempt_at=delivery.next_attempt_at,
        delivered_at=delivery.delivered_at,
    )
    return delivery


def webhook_deliveries_queue(deliveries: list[WebhookDelivery]) -> None:
    """Write new outbox rows (their payloads get their own delivery_id) and queue each one once
    the caller's transaction commits (the sweeper finds any whose message is lost)."""
    if not deliveries:
        return
    # No savepoint inside the caller's transaction (it fails as a whole); outside, this is one.
    with transaction.atomic(savepoint=False):
        WebhookDelivery.objects.bulk_create(deliveries)
        for delivery in deliveries:
            delivery.payload = {**delivery.payload, "delivery_id": delivery.pk}
        WebhookDelivery.objects.bulk_update(deliveries, ["payload"])
        for delivery in deliveries:
            # mypy cannot type a lambda's default argument
            transaction.on_commit(lambda delivery_id=delivery.pk: _enqueue(delivery_id))  # type: ignore[misc]


def _enqueue(delivery_id: int) -> None:
    from notifications.tasks import deliver_webhook

    try:
        deliver_webhook.delay(delivery_id)
    except Exception:
        logger.warning(
            "could not queue webhook delivery %s; the sweeper will", delivery_id, exc_info=True
        )


def webhook_deliveries_requeue_due() -> int:
    """Re-queue pending deliveries whose attempt is overdue (a lost message or a dead worker)."""
    now = timezone.now()
    rows = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now - REQUEUE_GRACE
        )
        .order_by("next_attempt_at")
        .values_list("pk", "next_attempt_at")[:1000]
    )
    requeued = 0
    for delivery_id, due in rows:
        # Compare-and-set on next_attempt_at: two sweepers racing queue each delivery once.
        if WebhookDelivery.objects.filter(
            pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at=due
        ).update(next_attempt_at=now):
            _enqueue(delivery_id)
            requeued += 1
    return requeued
