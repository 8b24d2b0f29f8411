"""The trade room: chat between the parties (with payment-proof attachments) and feedback."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from accounts.selectors import is_moderator
from common.errors import (
    Conflict,
    InvalidTransition,
    NotFound,
    PermissionDenied,
    RateLimited,
    ValidationFailed,
)
from common.files import check_upload, name_for_type
from escrow.models import Feedback, Trade, TradeMessage
from escrow.services.transitions import FINAL_STATES, require_impartial_moderator

MAX_MESSAGE_LENGTH = 2000
# Hooks other apps register (notifications, webhooks); called on commit with the message.
message_listeners: list[Callable[[TradeMessage], None]] = []


def _trade_for(trade_id: int, actor: Any, *, as_moderator: bool) -> Trade:
    trade = Trade.objects.filter(pk=trade_id).first()
    if trade is None:
        raise NotFound(gettext("Trade #{trade_id} not found.").format(trade_id=trade_id))
    if as_moderator:
        if not is_moderator(actor):
            raise PermissionDenied(gettext("Only a moderator can write as moderator."))
        require_impartial_moderator(trade=trade, actor=actor)
    elif trade.role_of(actor) is None:
        raise NotFound(gettext("Trade #{trade_id} not found.").format(trade_id=trade_id))
    return trade


def _require_chat_open(*, trade: Trade, actor: Any) -> None:
    """Refuse a message on a final trade, or past the sender's CHAT_MESSAGES_PER_MINUTE.
    Called with the trade row locked, so racing posts of one sender are counted one by one."""
    if trade.state in FINAL_STATES:
        # A final trade has no open dispute, so this closes the room to moderators too.
        raise Conflict(
            gettext("Trade #{pk} is {state}: its chat is read-only.").format(
                pk=trade.pk, state=trade.get_state_display()
            ),
            code="chat_closed",
        )
    limit = settings.CHAT_MESSAGES_PER_MINUTE
    recent = TradeMessage.objects.filter(
        trade=trade, sender=actor, created_at__gte=timezone.now() - timedelta(minutes=1)
    ).count()
    if recent >= limit:
        raise RateLimited(
            gettext(
                "At most {limit} messages a minute in one trade's chat; wait a moment and resend."
            ).format(limit=limit)
        )


def trade_message_send(
    *, trade_id: int, actor: Any, text: str = "", attachment: Any = None, as_moderator: bool = False
) -> TradeMessage:
    """A party (or a moderator, marked as such) writes in the trade room while the trade is not
    final, at most CHAT_MESSAGES_PER_MINUTE a minute; files are sniffed and named by type."""
    trade = _trade_for(trade_id, actor, as_moderator=as_moderator)
    text = (text or "").strip()
    if not text and attachment is None:
        raise ValidationFailed(
            gettext("text: write a message or attach a file."),
            fields={"text": [gettext("Write something.")]},
        )
    if len(text) > MAX_MESSAGE_LENGTH:
        raise ValidationFailed(
            gettext("text: at most {MAX_MESSAGE_LENGTH} characters.").format(
                MAX_MESSAGE_LENGTH=MAX_MESSAGE_LENGTH
            ),
            fields={
                "text": [
                    gettext("At most {MAX_MESSAGE_LENGTH} characters.").format(
                        MAX_MESSAGE_LENGTH=MAX_MESSAGE_LENGTH
                    )
                ]
            },
        )
    content_type = ""
    if attachment is not None:
        content_type = check_upload(
            attachment,
            field="attachment",
            allowed=settings.CHAT_ATTACHMENT_TYPES,
            max_bytes=settings.CHAT_ATTACHMENT_MAX_BYTES,
        )
    with transaction.atomic():
        # FOR NO KEY UPDATE: queues this trade's chat writers (and a move to a final state),
        # not the rows that merely reference the trade.
        trade = Trade.objects.select_for_update(no_key=True).get(pk=trade.pk)
        _require_chat_open(trade=trade, actor=actor)
        message = TradeMessage(
            trade=trade,
            sender=actor,
            is_moderator=as_moderator,
            text=text,
            attachment_type=content_type,
        )
        if attachment is not None:
            message.attachment_name = str(getattr(attachment, "name", "attachment"))[:200]
            message.attachment.save(
                name_for_type(f"trade-{trade.pk}", content_type), attachment, save=False
            )
        message.save()
        for listener in message_listeners:
            # mypy cannot type a lambda's default argument
            transaction.on_commit(lambda listener=listener: listener(message), robust=True)  # type: ignore[misc]
    return message


def trade_auto_reply_post(*, trade: Trade, author_id: int, text: str) -> TradeMessage:
    """The offer's auto-reply, as its maker's first message, marked as automatic: inside
    trade_open's transaction (posted once, with the trade), the chat's listeners told on commit
    like for any message, so the taker is notified."""
    message = TradeMessage.objects.create(
        trade=trade, sender_id=author_id, is_auto_reply=True, text=text[:MAX_MESSAGE_LENGTH]
    )
    for listener in message_listeners:
        # mypy cannot type a lambda's default argument
        transaction.on_commit(lambda listener=listener: listener(message), robust=True)  # type: ignore[misc]
    return message


def trade_system_note(*, trade_id: int, text: str) -> TradeMessage:
    """A note from the platform in the trade room (no sender), e.g. each step of a dispute.
    The caller notifies the parties itself, so the chat listeners are not called."""
    with transaction.atomic():
        return TradeMessage.objects.create(
            trade_id=trade_id, sender=None, text=(text or "")[:MAX_MESSAGE_LENGTH]
        )


# Trades whose outcome the parties may rate: completed, or resolved by a moderator. A cancelled
# or expired trade moved no money, so there is nothing to rate (and no feedback to farm).
FEEDBACK_STATES = frozenset({Trade.State.COMPLETED, Trade.State.REFUNDED, Trade.State.SPLIT})
MAX_FEEDBACK_LENGTH = 500


def feedback_leave(*, trade_id: int, actor: Any, rating: str, comment: str = "") -> Feedback:
    """Once per party per completed or resolved trade, about the other party."""
    trade = _trade_for(trade_id, actor, as_moderator=False)
    if trade.state not in FEEDBACK_STATES:
        raise InvalidTransition(
            gettext(
                "Trade #{pk} is {state}: feedback opens once it is completed or resolved, and never on a cancelled or expired trade."
            ).format(pk=trade.pk, state=trade.get_state_display())
        )
    if rating not in Feedback.Rating.values:
        raise ValidationFailed(
            gettext("rating: positive or negative."),
            fields={"rating": [gettext("Choose positive or negative.")]},
        )
    comment = (comment or "").strip()
    if len(comment) > MAX_FEEDBACK_LENGTH:
        raise ValidationFailed(
            gettext("comment: at most {MAX_FEEDBACK_LENGTH} characters.").format(
                MAX_FEEDBACK_LENGTH=MAX_FEEDBACK_LENGTH
            ),
            fields={
                "comment": [
                    gettext("At most {MAX_FEEDBACK_LENGTH} characters.").format(
                        MAX_FEEDBACK_LENGTH=MAX_FEEDBACK_LENGTH
                    )
                ]
            },
        )
    target = trade.seller if trade.role_of(actor) == "buyer" else trade.buyer
    with transaction.atomic():
        feedback, created = Feedback.objects.get_or_create(
            trade=trade,
            author=actor,
            defaults={"target": target, "rating": rating, "comment": comment},
        )
    if not created:
        raise InvalidTransition(
            gettext("You already left feedback on this trade."), code="feedback_exists"
        )
    return feedback


def feedback_reply(*, feedback_id: int, actor: Any, text: str) -> Feedback:
    """The trader a feedback is about answers it, once; nobody else can."""
    text = (text or "").strip()
    if not text:
        raise ValidationFailed(
            gettext("text: write your reply."), fields={"text": [gettext("Write your reply.")]}
        )
    if len(text) > MAX_FEEDBACK_LENGTH:
        raise ValidationFailed(
            gettext("text: at most {MAX_FEEDBACK_LENGTH} characters.").format(
                MAX_FEEDBACK_LENGTH=MAX_FEEDBACK_LENGTH
            ),
            fields={
                "text": [
                    gettext("At most {MAX_FEEDBACK_LENGTH} characters.").format(
                        MAX_FEEDBACK_LENGTH=MAX_FEEDBACK_LENGTH
                    )
                ]
            },
        )
    with transaction.atomic():
        feedback = Feedback.objects.select_for_update().filter(pk=feedback_id).first()
        if feedback is None:
            raise NotFound(
                gettext("Feedback #{feedback_id} not found.").format(feedback_id=feedback_id)
            )
        if feedback.target_id != getattr(actor, "pk", None):
            raise PermissionDenied(
                gettext("Only the trader this feedback is about can reply to it.")
            )
        if feedback.replied_at is not None:
            raise InvalidTransition(
                gettext("You already replied to this feedback."), code="reply_exists"
            )
        feedback.reply = text
        feedback.replied_at = timezone.now()
        feedback.save(update_fields=["reply", "replied_at"])
    return feedback
