"""Operator's tasks."""

from __future__ import annotations

import hashlib
import logging

from celery import shared_task

from common.files import get_private_storage

logger = logging.getLogger(__name__)


@shared_task
def private_file_digest(name: str) -> str:
    """The worker reads a private file and logs its SHA-256: proof that web and worker share the
    private media volume (docs/operations.md, after moving storage or restoring a backup)."""
    digest = hashlib.sha256()
    with get_private_storage().open(name, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    logger.info("private file read", extra={"file": name, "sha256": digest.hexdigest()})
    return digest.hexdigest()
