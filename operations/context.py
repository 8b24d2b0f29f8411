"""Who and what a log line is about: the request id (from the client's X-Request-ID or a new
one), the user id and the trade id, kept in context variables for the request or task at hand.
A task queued while serving a request carries them in its message headers, so the worker's log
lines of that task name the request that queued it."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from typing import Any

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
user_id: ContextVar[int | None] = ContextVar("user_id", default=None)
trade_id: ContextVar[int | None] = ContextVar("trade_id", default=None)

# The request being served: its user is read once someone authenticated it (DRF authenticates
# token users inside the view, after every middleware has run).
http_request: ContextVar[Any] = ContextVar("http_request", default=None)

FIELDS: dict[str, ContextVar[Any]] = {
    "request_id": request_id,
    "user_id": user_id,
    "trade_id": trade_id,
}
# A client's id is taken as is only when it is short and plain (it is written into every line).
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")


def new_request_id(offered: str | None = None) -> str:
    if offered and _SAFE_ID.match(offered):
        return offered
    return uuid.uuid4().hex


def current() -> dict[str, Any]:
    """The fields known now, without the unknown ones."""
    fields = {name: var.get() for name, var in FIELDS.items() if var.get() is not None}
    if "user_id" not in fields:
        user = _authenticated_user(http_request.get())
        if user is not None:
            fields["user_id"] = user.pk
    return fields


def _authenticated_user(request: Any) -> Any:
    """The request's user if it is already known; never a query from inside a log call (a lazy
    user not yet evaluated stays unevaluated)."""
    if request is None:
        return None
    from django.utils.functional import empty

    user = request.__dict__.get("user")
    wrapped = getattr(user, "_wrapped", user)  # SimpleLazyObject: `empty` until evaluated
    if wrapped is None or wrapped is empty:
        return None
    return wrapped if getattr(wrapped, "is_authenticated", False) else None


def bind(**values: Any) -> list[Any]:
    """Set some fields; returns the tokens that unbind() takes to restore the previous ones."""
    return [(FIELDS[name], FIELDS[name].set(value)) for name, value in values.items()]


def unbind(tokens: list[Any]) -> None:
    for var, token in reversed(tokens):
        var.reset(token)


# --- Celery: the headers of a task's message --------------------------------------------------

HEADER = "ops_context"


def _before_publish(headers: dict[str, Any] | None = None, **_: Any) -> None:
    fields = current()
    if headers is not None and fields and HEADER not in headers:
        headers[HEADER] = fields


def _task_prerun(task: Any = None, kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    carried = dict(getattr(request, HEADER, None) or {})
    if "request_id" not in carried:  # queued by beat or a sweep: the task id names the run
        carried["request_id"] = getattr(request, "id", None) or uuid.uuid4().hex
    if kwargs and isinstance(kwargs.get("trade_id"), int):
        carried["trade_id"] = kwargs["trade_id"]
    values = {name: carried.get(name) for name in FIELDS}
    request_tokens = bind(**values)
    if request is not None:
        request.ops_tokens = request_tokens


def _task_postrun(task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    tokens = getattr(request, "ops_tokens", None)
    if request is not None and tokens:
        try:
            unbind(tokens)
        except ValueError:  # set in another context (a thread pool moved the task): clear
            for var in FIELDS.values():
                var.set(None)
        request.ops_tokens = None


def connect_celery_signals() -> None:
    from celery.signals import before_task_publish, task_postrun, task_prerun

    before_task_publish.connect(_before_publish, weak=False, dispatch_uid="ops-publish")
    task_prerun.connect(_task_prerun, weak=False, dispatch_uid="ops-prerun")
    task_postrun.connect(_task_postrun, weak=False, dispatch_uid="ops-postrun")
