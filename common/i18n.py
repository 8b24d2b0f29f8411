"""The translation catalogues (locale/<lang>/LC_MESSAGES/django.po) compiled to the .mo files
Django reads, with Babel (pure Python: no system gettext in the image, CI or `make run`). The
.po files are the source, committed; the .mo files are built (`manage.py compilecatalogs`, run by
scripts/run.sh, the Dockerfile and the test session) and never committed."""

from __future__ import annotations

from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po


def compile_catalogs(locale_dir: Path, *, use_fuzzy: bool = False) -> list[Path]:
    """Write each django.po's .mo beside it when the .po is newer (or the .mo is missing);
    the .mo files written. Fuzzy entries are left out unless `use_fuzzy`, as msgfmt does."""
    written: list[Path] = []
    for po_path in sorted(locale_dir.glob("*/LC_MESSAGES/*.po")):
        mo_path = po_path.with_suffix(".mo")
        if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        with po_path.open("rb") as po_file:
            catalog = read_po(po_file, locale=po_path.parent.parent.name)
        tmp = mo_path.with_suffix(".mo.tmp")
        with tmp.open("wb") as mo_file:
            write_mo(mo_file, catalog, use_fuzzy=use_fuzzy)
        tmp.replace(mo_path)  # a reader never sees half a catalogue
        written.append(mo_path)
    return written
