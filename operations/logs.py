"""JSON log lines on stdout: one object per line with the time, level, logger, message, the
request id, user id and trade id where known (operations.context), and nothing secret.

Redaction is a filter on the handler, so it covers every logger (Django, Celery, gunicorn, the
apps): values of secret-looking fields and anything shaped like a credential or a bank account in
a message are replaced before the line is written. The apps never log secrets on purpose; this is
the net under a mistake (a query string, an exception text, a library's debug line)."""

from __future__ import annotations

import logging
import re
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from operations import context

MASK = "[redacted]"
# Field names whose values never reach a log line (as extra fields or key=value in a message).
SECRET_NAMES = "|".join(
    [
        *("password", "passwd", "secret", "token", r"api[_-]?key", "authorization", "cookie"),
        *(r"session(?:id)?", r"csrf\w*", "otp", "totp", "seed", r"signing[_-]?key"),
        *("iban", r"account[_-]?number", "bic", "swift", r"payment[_-]?details", "details"),
    ]
)
_SECRET_FIELD = re.compile(rf"^(?:{SECRET_NAMES})$", re.IGNORECASE)
_PATTERNS = [
    # key=value, key: value, "key": "value" (query strings, reprs, JSON, headers)
    re.compile(
        rf"""(?P<key>["']?\b[\w-]*(?:{SECRET_NAMES})["']?\s*[=:]\s*)(?P<value>"[^"]*"|'[^']*'|[^\s&,;}}]+)""",
        re.IGNORECASE,
    ),
    # Authorization schemes followed by a credential
    re.compile(r"(?P<key>\b(?:Token|Bearer|Basic|Api-Key)\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})"),
]
# Shapes that are secret wherever they appear: IBANs (two letters, two check digits, up to 30
# characters, with or without spaces), API tokens and keys (40-hex DRF tokens, this platform's
# prefixed API keys), base32 TOTP secrets.
_SHAPES = [
    re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b"),
    re.compile(r"\b[0-9a-f]{40}\b"),
    re.compile(r"\bmk_[A-Za-z0-9_-]{16,}"),  # accounts.services.KEY_PREFIX + token_urlsafe
    re.compile(r"\b[A-Z2-7]{32}\b"),
]


def redact_text(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: f"{m.group('key')}{MASK}", text)
    for shape in _SHAPES:
        text = shape.sub(MASK, text)
    return text


# LogRecord's own attributes: everything else on a record came in through `extra`.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class RedactFilter(logging.Filter):
    """Formats the message once, redacted; drops or masks secret extra fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is
            message = str(record.msg)
        record.msg, record.args = redact_text(message), ()
        for name in list(record.__dict__):
            if name in _RECORD_ATTRS:
                continue
            value = record.__dict__[name]
            if name == "request":  # django.request passes the request: its line says enough
                del record.__dict__[name]
            elif _SECRET_FIELD.match(name):
                record.__dict__[name] = MASK
            elif isinstance(value, str):
                record.__dict__[name] = redact_text(value)
            elif not isinstance(value, int | float | bool | type(None)):
                record.__dict__[name] = redact_text(str(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class ContextFilter(logging.Filter):
    """Adds the request id, user id and trade id of the request or task being served."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in context.current().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class JsonFormatter(_JsonFormatter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("timestamp", "time")
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        super().__init__("%(levelname)s %(name)s %(message)s", *args, **kwargs)

    def formatException(self, ei: Any) -> str:
        return redact_text(str(super().formatException(ei)))


def logging_config(*, level: str = "INFO", json: bool = True) -> dict[str, Any]:
    """The LOGGING dict: one stdout handler, JSON (or plain text for a developer's terminal)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": "operations.logs.ContextFilter"},
            "redact": {"()": "operations.logs.RedactFilter"},
        },
        "formatters": {
            "json": {"()": "operations.logs.JsonFormatter"},
            "plain": {"format": "%(levelname)s %(name)s %(message)s"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "filters": ["context", "redact"],
                "formatter": "json" if json else "plain",
            }
        },
        "root": {"handlers": ["console"], "level": level},
        # Celery installs its own handlers unless told otherwise (CELERY_WORKER_HIJACK_ROOT_LOGGER).
    }
