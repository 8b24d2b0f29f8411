"""Email: rendered for its recipient when the news is written, sent by the worker
(notifications.outbound) with EMAIL_TIMEOUT on every SMTP step, never inside a request."""

from __future__ import annotations

import smtplib
from collections.abc import Iterable
from email.utils import parseaddr
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, get_connection
from django.template.loader import render_to_string
from django.utils import translation

from notifications.models import OutboundMessage

E = OutboundMessage.Error


class SendFailed(Exception):
    """One attempt failed: `error` is an OutboundMessage.Error; `permanent` means no retry."""

    def __init__(self, error: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(error)
        self.error = error
        self.permanent = permanent
        self.retry_after = retry_after


def recipient_language(user: Any) -> str:
    """The language this person reads their news in (the one place that decides it): the one
    chosen on their profile (the language selector), else the site's."""
    return recipient_languages([user.pk]).get(user.pk, settings.LANGUAGE_CODE)


def recipient_languages(user_ids: Iterable[int]) -> dict[int, str]:
    """recipient_language for many people in one query: {user id: language} of those who chose
    one (the others read the site's language)."""
    from accounts.selectors import languages_of

    known = {code for code, _ in settings.LANGUAGES}
    return {uid: lang for uid, lang in languages_of(user_ids=user_ids).items() if lang in known}


def in_language(languages: dict[int, str], user_id: int, text: Any, limit: int = 500) -> str:
    """A (lazy) text written out in this person's language (`languages` from
    recipient_languages; absent: the site's), cut to `limit` characters."""
    with translation.override(languages.get(user_id, settings.LANGUAGE_CODE)):
        return str(text)[:limit]


def email_render(
    *, user: Any, subject: Any, text: Any, language: str | None = None
) -> tuple[str, str]:
    """Subject and body as this person reads them: everything is turned into text inside their
    language (lazy translations of the callers' texts resolve here too)."""
    with translation.override(language or recipient_language(user)):
        body = render_to_string(
            "notifications/email/notice.txt",
            {"username": user.username, "text": str(text), "site_url": settings.SITE_URL},
        )
        return str(subject)[:200], body


def _message_id(message: OutboundMessage) -> str:
    """The same Message-ID on every attempt: if an attempt did reach the server before it
    failed, receiving servers and mail clients can drop the copy."""
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "localhost"
    return f"<outbound.{message.pk}.{int(message.created_at.timestamp())}@{domain}>"


def email_send(message: OutboundMessage) -> None:
    """One SMTP attempt for one outbox row; raises SendFailed with the error's class."""
    mail = EmailMessage(
        message.subject,
        message.body,
        None,
        [message.address],
        headers={"Message-ID": _message_id(message)},
    )
    try:
        connection = get_connection(fail_silently=False, timeout=settings.EMAIL_TIMEOUT)
        connection.send_messages([mail])
    except smtplib.SMTPRecipientsRefused as refused:
        codes = [code for code, _ in refused.recipients.values()]
        raise SendFailed(E.REFUSED, permanent=all(c >= 500 for c in codes)) from None
    except smtplib.SMTPResponseException as answer:
        if answer.smtp_code >= 500:
            raise SendFailed(E.REFUSED, permanent=True) from None
        raise SendFailed(E.TEMPORARY) from None
    except (smtplib.SMTPException, OSError) as failed:
        # smtplib turns a read that timed out into SMTPServerDisconnected; the cause tells.
        timed_out = isinstance(failed, TimeoutError) or isinstance(failed.__context__, TimeoutError)
        raise SendFailed(E.TIMEOUT if timed_out else E.CONNECTION_ERROR) from None
