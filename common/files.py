"""Uploaded files: private storage (never under a public URL) and content sniffing."""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage
from django.utils.functional import LazyObject

from common.errors import ValidationFailed

# (magic bytes at offset 0, content type, extension)
SIGNATURES = [
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"GIF87a", "image/gif", "gif"),
    (b"GIF89a", "image/gif", "gif"),
    (b"%PDF-", "application/pdf", "pdf"),
]


class _NoUrlStorage(FileSystemStorage):
    def url(self, name: str | None) -> str:
        raise ValueError(
            "This file is not accessible via a URL: it is served only by views that check."
        )


class PrivateStorage(LazyObject):
    def _setup(self) -> None:
        # Outside STATIC_ROOT and MEDIA_ROOT, with no URL: files go out only through views that check.
        self._wrapped = _NoUrlStorage(location=settings.PRIVATE_MEDIA_ROOT)


private_storage = PrivateStorage()


def get_private_storage() -> Storage:
    """For FileField(storage=...): a callable, so migrations name it instead of freezing it."""
    return cast(Storage, private_storage)  # a lazy proxy of one


def sniff(head: bytes) -> tuple[str, str] | None:
    """(content type, extension) from the first bytes, or None for anything not allowed."""
    for magic, content_type, ext in SIGNATURES:
        if head.startswith(magic):
            return content_type, ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp", "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"isom", b"mp41", b"mp42", b"avc1", b"M4V "):
        return "video/mp4", "mp4"
    return None


def check_upload(upload: Any, *, field: str, allowed: set[str], max_bytes: int) -> str:
    """Validate an upload by its content (not its name or claimed type); return the type."""
    if upload.size > max_bytes:
        raise ValidationFailed(
            f"{field}: the file is larger than {max_bytes // (1024 * 1024)} MB.",
            fields={field: [f"At most {max_bytes // (1024 * 1024)} MB."]},
        )
    upload.seek(0)
    head = upload.read(16)
    upload.seek(0)
    found = sniff(head)
    if found is None or found[0] not in allowed:
        kinds = ", ".join(sorted(t.split("/")[1].upper() for t in allowed))
        raise ValidationFailed(
            f"{field}: only {kinds} files are accepted.", fields={field: [f"Only {kinds}."]}
        )
    return found[0]
