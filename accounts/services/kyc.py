"""Identity documents: submitted by the user, reviewed by moderators (tiers)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from accounts.models import KycDocument, ProfileEvent
from accounts.selectors import profile_for
from accounts.services._common import _locked_profile, _reason
from common.errors import (
    InvalidTransition,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from common.files import check_upload, name_for_type

# --- KYC documents ----------------------------------------------------------------------------

DEFAULT_KYC_TYPES = {"image/png", "image/jpeg", "image/webp", "application/pdf"}
DEFAULT_KYC_MAX_BYTES = 10 * 1024 * 1024
MAX_PENDING_DOCUMENTS = 10


def kyc_document_submit(*, user: Any, kind: str, file: Any, requested_tier: Any) -> KycDocument:
    """A document for review towards a higher tier; images or PDF only, sniffed from content."""
    if kind not in KycDocument.Kind.values:
        raise ValidationFailed.for_field(
            "kind",
            gettext("Choose one of: {choices}.").format(
                choices=", ".join(str(label) for label in KycDocument.Kind.labels)
            ),
        )
    try:
        tier = int(requested_tier)
    except (TypeError, ValueError):
        tier = 0
    if tier not in (1, 2):
        raise ValidationFailed.for_field("requested_tier", gettext("Choose tier 1 or tier 2."))
    profile = profile_for(user)
    if profile.kyc_tier >= tier:
        raise ValidationFailed.for_field(
            "requested_tier",
            gettext("You are already tier {kyc_tier}.").format(kyc_tier=profile.kyc_tier),
        )
    if file is None:
        raise ValidationFailed.for_field("file", gettext("Attach a scan or photo of the document."))
    content_type = check_upload(
        file,
        field="file",
        allowed=getattr(settings, "KYC_DOCUMENT_TYPES", DEFAULT_KYC_TYPES),
        max_bytes=getattr(settings, "KYC_DOCUMENT_MAX_BYTES", DEFAULT_KYC_MAX_BYTES),
    )
    pending = KycDocument.objects.filter(user=user, status=KycDocument.Status.PENDING).count()
    if pending >= MAX_PENDING_DOCUMENTS:
        raise ValidationFailed.for_field(
            "file",
            gettext("You have {pending} documents waiting for review already.").format(
                pending=pending
            ),
        )
    document = KycDocument(
        user=user,
        kind=kind,
        requested_tier=tier,
        content_type=content_type,
        file_name=str(getattr(file, "name", "document"))[:200],
    )
    document.file.save(name_for_type(f"kyc-{user.pk}", content_type), file, save=False)
    try:
        with transaction.atomic():
            document.save()
    except Exception:
        # No row, no file: an identity document must not linger unreferenced.
        document.file.storage.delete(document.file.name)
        raise
    return document


def kyc_document_review(
    *, document_id: int, actor: Any, approve: bool, reason: str = ""
) -> KycDocument:
    """A reviewer (`accounts.review_kyc`) approves a pending document, raising the owner's tier
    to the one requested, or rejects it with a reason the owner sees; once."""
    if actor is None or not actor.has_perm("accounts.review_kyc"):
        raise PermissionDenied(gettext("Only a KYC reviewer can review documents."))
    text = _reason(reason, required=not approve)
    with transaction.atomic():
        document = KycDocument.objects.select_for_update().filter(pk=document_id).first()
        if document is None:
            raise NotFound(
                gettext("Document #{document_id} not found.").format(document_id=document_id)
            )
        if document.user_id == actor.pk:
            raise PermissionDenied(gettext("You can't review your own documents."))
        if document.status != KycDocument.Status.PENDING:
            raise InvalidTransition(
                gettext("Document #{pk} was already {status}.").format(
                    pk=document.pk, status=document.status
                )
            )
        document.status = KycDocument.Status.APPROVED if approve else KycDocument.Status.REJECTED
        document.reviewed_by = actor
        document.review_reason = text
        document.reviewed_at = timezone.now()
        document.save(update_fields=["status", "reviewed_by", "review_reason", "reviewed_at"])
        detail = f"document #{document.pk} ({document.kind}) for tier {document.requested_tier}"
        if approve:
            profile = _locked_profile(document.user)
            if profile.kyc_tier < document.requested_tier:
                detail += f"; tier {profile.kyc_tier} → {document.requested_tier}"
                profile.kyc_tier = document.requested_tier
                profile.save(update_fields=["kyc_tier"])
        ProfileEvent.objects.create(
            user_id=document.user_id,
            actor=actor,
            action=ProfileEvent.Action.KYC_APPROVED
            if approve
            else ProfileEvent.Action.KYC_REJECTED,
            reason=text,
            detail=detail,
        )
    return document


def kyc_document_delete(*, document_id: int, actor: Any) -> None:
    """The owner deletes a rejected document, file and all; others get not-found."""
    with transaction.atomic():
        document = KycDocument.objects.select_for_update().filter(pk=document_id).first()
        if document is None or document.user_id != getattr(actor, "pk", None):
            raise NotFound(
                gettext("Document #{document_id} not found.").format(document_id=document_id)
            )
        if document.status != KycDocument.Status.REJECTED:
            raise InvalidTransition(
                gettext(
                    "Document #{pk} is {status}: only rejected documents can be deleted."
                ).format(pk=document.pk, status=document.status)
            )
        stored = document.file
        name, storage = stored.name, stored.storage
        document.delete()
        # The file goes once the row is gone for good.
        transaction.on_commit(lambda: storage.delete(name) if name else None)


def kyc_file_read(*, document: KycDocument, reader: Any) -> None:
    """A reviewer (not the owner) opened a KYC file: written to the user's audit trail, which
    no moderator can edit."""
    if reader.pk == document.user_id:
        return
    ProfileEvent.objects.create(
        user_id=document.user_id,
        actor=reader,
        action=ProfileEvent.Action.KYC_FILE_READ,
        reason=f"document #{document.pk} ({document.kind})",
    )
