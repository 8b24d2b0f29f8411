"""Private files in pages: which ones may show as a thumbnail (the images that are served inline
through their permission-checked view; PDFs and videos stay links)."""

from __future__ import annotations

from django import template

from common.files import INLINE_TYPES

register = template.Library()


@register.filter
def is_preview_image(content_type: str | None) -> bool:
    """True for the sniffed image types served inline (common.files.INLINE_TYPES)."""
    return (content_type or "") in INLINE_TYPES
