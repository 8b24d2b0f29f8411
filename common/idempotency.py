"""Idempotency-Key for POSTs: the same key with the same request replays the stored first
response without doing the work again; the same key with another request gets 422.

Like Stripe's: a record is the user's, and replays only to a credential holding every scope of
the one that sent the first request (else 403 `idempotency_scope`, nothing replayed). A view
names the secrets its answer carries (`@idempotent(secret_fields=("key",))`): the first caller
gets them, the record stores the answer without them, and a replay says
`{"<field>": null, "secret_shown_once": true}`. Records expire after IDEMPOTENCY_TTL_HOURS: an
older one is ignored (the key starts afresh) and the beat task idempotency_records_prune
deletes them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import nullcontext
from datetime import timedelta
from functools import wraps
from typing import Any, cast

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.http import QueryDict
from django.utils import timezone
from django.utils.translation import gettext
from rest_framework.request import Request
from rest_framework.response import Response

from common.errors import ApplicationError, Conflict, PermissionDenied
from common.models import IdempotencyRecord
from common.permissions import scopes_of
from common.prepared import insert, save_fields
from common.transactions import current_idempotency_record

MAX_KEY_LENGTH = 255
# A record still without a response after this long belongs to a request that died.
STALE_AFTER = timedelta(minutes=2)
DEFAULT_TTL_HOURS = 24
SHOWN_ONCE_FLAG = "secret_shown_once"


def ttl() -> timedelta:
    """How long a record replays (settings.IDEMPOTENCY_TTL_HOURS)."""
    return timedelta(hours=getattr(settings, "IDEMPOTENCY_TTL_HOURS", DEFAULT_TTL_HOURS))


class IdempotencyMismatch(ApplicationError):
    status = 422
    code = "idempotency_key_reused"


# Fields never fingerprinted: a stored hash of a password (unsalted, fast) could be guessed
# offline from a copy of the database. Two requests differing only in these count as the same.
UNHASHED_FIELDS = frozenset({"password", "otp"})


def _hashable_body(request: Request) -> bytes:
    """The body as fingerprinted: a JSON object or a form without its secret fields (canonical,
    keys sorted); any other body as it came."""
    raw = request.body
    content_type = (request.content_type or "").split(";")[0].strip()
    if content_type == "application/json":
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return raw
        if isinstance(data, dict):
            kept = {k: v for k, v in data.items() if k not in UNHASHED_FIELDS}
            return json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()
        return raw
    if content_type == "application/x-www-form-urlencoded":
        form = QueryDict(raw)
        pairs = sorted((k, v) for k in form for v in form.getlist(k) if k not in UNHASHED_FIELDS)
        return json.dumps(pairs, separators=(",", ":")).encode()
    return raw


def _fingerprint(request: Request) -> str:
    digest = hashlib.sha256()
    digest.update(
        cast(str, request.method).encode() + b" " + request.get_full_path().encode() + b"\n"
    )
    digest.update(_hashable_body(request))
    return digest.hexdigest()


def redact(body: Any, secret_fields: tuple[str, ...]) -> Any:
    """The answer as it may be stored: each secret field's value null, and a flag saying the
    secret was shown once (only when the answer had one)."""
    if not secret_fields or not isinstance(body, dict):
        return body
    present = [field for field in secret_fields if body.get(field) is not None]
    if not present:
        return body
    return {**body, **dict.fromkeys(present), SHOWN_ONCE_FLAG: True}


def idempotent(
    view_method: Callable[..., Response] | None = None, *, secret_fields: tuple[str, ...] = ()
) -> Any:
    """Wrap an APIView's post(); without the header it runs as usual. `secret_fields` are the
    answer's fields never stored for a replay. Use as `@idempotent` or `@idempotent(...)`."""
    if view_method is None:
        return lambda method: _idempotent(method, secret_fields=tuple(secret_fields))
    return _idempotent(view_method, secret_fields=tuple(secret_fields))


def _idempotent(
    view_method: Callable[..., Response], *, secret_fields: tuple[str, ...]
) -> Callable[..., Response]:
    @wraps(view_method)
    def wrapper(self: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get("Idempotency-Key")
        if not key or not request.user.is_authenticated:
            return view_method(self, request, *args, **kwargs)
        if len(key) > MAX_KEY_LENGTH:
            raise ApplicationError(
                gettext("Idempotency-Key: at most {MAX_KEY_LENGTH} characters.").format(
                    MAX_KEY_LENGTH=MAX_KEY_LENGTH
                ),
                fields={"Idempotency-Key": [gettext("Too long.")]},
            )
        fingerprint = _fingerprint(request)
        scopes = scopes_of(request)
        try:
            # One INSERT in autocommit (no BEGIN/COMMIT round trips); a savepoint only inside
            # a transaction, which a duplicate key would otherwise break.
            with transaction.atomic() if connection.in_atomic_block else nullcontext():
                (record,) = insert(
                    [
                        IdempotencyRecord(
                            user=request.user,
                            key=key,
                            fingerprint=fingerprint,
                            scopes=sorted(scopes),
                        )
                    ]
                )
        except IntegrityError:
            record = IdempotencyRecord.objects.get(user=request.user, key=key)
            if record.created_at < timezone.now() - ttl():
                # Expired: the key starts afresh (the beat task may not have pruned it yet).
                IdempotencyRecord.objects.filter(
                    pk=record.pk, created_at=record.created_at
                ).delete()
                return wrapper(self, request, *args, **kwargs)
            if not set(record.scopes) <= scopes:
                # The answer belongs to a stronger credential: never hand it to a weaker one.
                raise PermissionDenied(
                    "This Idempotency-Key was first used by a credential with more scopes ("
                    + ", ".join(sorted(record.scopes))
                    + "); retry with that credential or use a new key.",
                    code="idempotency_scope",
                ) from None
            if record.fingerprint != fingerprint:
                raise IdempotencyMismatch(
                    "This Idempotency-Key was already used with a different request.",
                    fields={"Idempotency-Key": ["Already used with another request body."]},
                ) from None
            if record.status_code is None and record.committed:
                # The work was done, but the server failed before it could answer.
                raise Conflict(
                    gettext(
                        "The request with this Idempotency-Key was carried out, but its answer was "
                        "lost when the server failed; it will not be repeated. Look the result up "
                        "(e.g. GET /api/v1/trades/ or /api/v1/wallets/)."
                    ),
                    code="idempotency_answer_lost",
                ) from None
            if record.status_code is None and record.created_at < timezone.now() - STALE_AFTER:
                # The first request died mid-way (its work rolled back): let this one run it.
                record.delete()
                return wrapper(self, request, *args, **kwargs)
            if record.status_code is None:
                raise Conflict(
                    gettext(
                        "A request with this Idempotency-Key is still being processed; retry shortly."
                    ),
                    code="idempotency_in_progress",
                ) from None
            replay = Response(record.response_body, status=record.status_code)
            replay["Idempotent-Replayed"] = "true"
            return replay
        bound = current_idempotency_record.set(record.pk)
        try:
            response = view_method(self, request, *args, **kwargs)
        except ApplicationError as exc:
            # A refusal is an answer too: replay it rather than retry the work.
            response = Response(
                {"error": {"code": exc.code, "message": exc.message, "fields": exc.fields}},
                status=exc.status,
            )
        except BaseException:
            _forget_unless_committed(record)
            raise
        finally:
            current_idempotency_record.reset(bound)
        if response.status_code >= 500:
            _forget_unless_committed(record)
        else:
            record.status_code = response.status_code
            record.response_body = redact(response.data, secret_fields)
            save_fields(record, ["status_code", "response_body"])
        return response

    return wrapper


def _forget_unless_committed(record: IdempotencyRecord) -> None:
    """A failed request frees its key for a retry, unless its work committed (the service marked
    the record in its own transaction): then the key must never run the work again. Should the
    database be gone, the record stays 'in progress' and STALE_AFTER decides, by `committed`."""
    IdempotencyRecord.objects.filter(pk=record.pk, committed=False).delete()
