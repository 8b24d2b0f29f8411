"""Uploaded files: private storage (never under a public URL), content sniffing, the name a
file is stored and served under, and how a private file goes out (private_file_response)."""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import FileSystemStorage, Storage
from django.db.models.fields.files import FieldFile
from django.http import FileResponse
from django.utils.functional import LazyObject
from django.utils.module_loading import import_string
from django.utils.text import get_valid_filename
from django.utils.translation import gettext

from common.errors import ValidationFailed

# (magic bytes at offset 0, content type, extension)
SIGNATURES = [
    (b"\x89PNG\r\n\x1a\n", "image/png", "png"),
    (b"\xff\xd8\xff", "image/jpeg", "jpg"),
    (b"GIF87a", "image/gif", "gif"),
    (b"GIF89a", "image/gif", "gif"),
    (b"%PDF-", "application/pdf", "pdf"),
]


EXTENSIONS = {content_type: ext for _, content_type, ext in SIGNATURES} | {
    "image/webp": "webp",
    "video/mp4": "mp4",
}
# Shown in the browser; everything else (a PDF, a video) is a download, never rendered by us.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
# On the file itself: even opened directly, an image that is also HTML or SVG runs nothing.
FILE_CSP = "default-src 'none'; sandbox"
MAX_BASE_NAME = 100


def _refuse_url(self: Storage, name: str | None) -> str:
    raise ValueError(
        "This file is not accessible via a URL: it is served only by views that check."
    )


class _NoUrlStorage(FileSystemStorage):
    url = _refuse_url


class PrivateStorage(LazyObject):
    """settings.PRIVATE_STORAGE: a folder outside STATIC_ROOT and MEDIA_ROOT by default, or an
    S3-compatible bucket (django-storages) for more than one host. Either way without a URL:
    files go out only through views that check (private_file_response)."""

    def _setup(self) -> None:
        config = getattr(settings, "PRIVATE_STORAGE", None)
        if not config:
            self._wrapped = _NoUrlStorage(location=settings.PRIVATE_MEDIA_ROOT)
            return
        backend = import_string(config["BACKEND"])
        no_url = type(f"NoUrl{backend.__name__}", (backend,), {"url": _refuse_url})
        self._wrapped = no_url(**config.get("OPTIONS", {}))


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


def name_for_type(name: str, content_type: str) -> str:
    """The user's base name, sanitized, with the extension of the sniffed type: `x.html` that is
    a GIF becomes `x.gif`, so no name ever claims a type the content is not."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base[: base.rfind(".")] if "." in base else base
    try:
        stem = get_valid_filename(stem.lstrip("."))[:MAX_BASE_NAME]
    except SuspiciousFileOperation:  # nothing usable was left
        stem = ""
    return f"{stem or 'attachment'}.{EXTENSIONS.get(content_type, 'bin')}"


def private_file_response(file: FieldFile, *, content_type: str, name: str) -> FileResponse:
    """A private file for a reader the view has checked: named by its sniffed type, images
    inline and everything else as a download, never sniffed, sandboxed, never cached."""
    response = FileResponse(
        file.open("rb"),
        content_type=content_type,
        as_attachment=content_type not in INLINE_TYPES,
        filename=name_for_type(name, content_type),
    )
    response["X-Content-Type-Options"] = "nosniff"
    # Set here, django-csp's middleware leaves it alone (it only fills a missing header).
    response["Content-Security-Policy"] = FILE_CSP
    response["Cache-Control"] = "private, no-store"
    return response


def check_upload(upload: Any, *, field: str, allowed: set[str], max_bytes: int) -> str:
    """Validate an upload by its content (not its name or claimed type); return the type and
    rename the upload to name_for_type, so it is stored under a name that matches it."""
    if upload.size > max_bytes:
        raise ValidationFailed(
            gettext("{field}: the file is larger than {v1} MB.").format(
                field=field, v1=max_bytes // (1024 * 1024)
            ),
            fields={field: [gettext("At most {v1} MB.").format(v1=max_bytes // (1024 * 1024))]},
        )
    upload.seek(0)
    head = upload.read(16)
    upload.seek(0)
    found = sniff(head)
    if found is None or found[0] not in allowed:
        kinds = ", ".join(sorted(t.split("/")[1].upper() for t in allowed))
        raise ValidationFailed(
            gettext("{field}: only {kinds} files are accepted.").format(field=field, kinds=kinds),
            fields={field: [gettext("Only {kinds}.").format(kinds=kinds)]},
        )
    upload.name = name_for_type(str(getattr(upload, "name", "") or ""), found[0])
    return found[0]
