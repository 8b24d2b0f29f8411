"""Issue 20, internationalization: the catalogues, the language a page and a notification are
in, right-to-left Arabic, and numbers typed and shown in the reader's language."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from django.conf import settings
from django.core.management import call_command
from django.urls import reverse
from django.utils import translation

from accounts.models import Profile
from accounts.selectors import profile_for
from common.errors import ValidationFailed
from common.l10n import delocalize_number, format_decimal
from common.templatetags.money import fiat
from marketplace.models import Offer
from marketplace.tests.factories import fund

ROOT = Path(__file__).resolve().parent.parent
LOCALES = ("es", "pt_BR", "ru", "ar")


def _catalog(lang: str) -> Catalog:
    with (ROOT / "locale" / lang / "LC_MESSAGES" / "django.po").open("rb") as po:
        return read_po(po, locale=lang)


# --- the catalogues ------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LOCALES)
def test_every_language_has_a_catalogue_with_the_same_messages(lang: str) -> None:
    # given the Spanish catalogue as the reference
    reference = {m.id for m in _catalog("es") if m.id}
    # then every language lists the same messages, with its own plural rule
    catalog = _catalog(lang)
    assert {m.id for m in catalog if m.id} == reference
    assert len(reference) > 1000
    assert catalog.num_plurals >= 2


@pytest.mark.parametrize("lang", LOCALES)
def test_catalogue_is_complete(lang: str) -> None:
    messages = [m for m in _catalog(lang) if m.id]
    untranslated = [m.id for m in messages if not all(m.string) if isinstance(m.string, tuple)]
    untranslated += [m.id for m in messages if isinstance(m.string, str) and not m.string]
    fuzzy = [m.id for m in messages if m.fuzzy]
    assert (len(untranslated), len(fuzzy)) == (0, 0), (
        f"{lang}: {len(untranslated)} untranslated, {len(fuzzy)} fuzzy of {len(messages)}"
    )


# What `make messages` skips, and what holds no source at all.
NOT_SOURCE = {
    ".git", ".venv", "node_modules", "tests", "bench", "staticfiles", "examples", "contracts",
    ".data", "private_media", "media", "locale", "__pycache__", ".mypy_cache", ".ruff_cache",
    ".pytest_cache", "test-artifacts", ".hypothesis",
}  # fmt: skip


def _copy_sources(target: Path) -> None:
    """The marked sources (Python and templates) alone, where makemessages can't touch the
    committed catalogues."""
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        if set(relative.parts) & NOT_SOURCE or path.suffix not in {".py", ".html", ".txt"}:
            continue
        if not path.is_file():
            continue
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / relative)


@pytest.mark.skipif(shutil.which("xgettext") is None, reason="GNU gettext is not installed")
def test_the_catalogues_cover_every_marked_string(tmp_path: Path, settings, monkeypatch) -> None:
    """A string marked in code or a template but missing from the .po files would never be
    translated: `make messages` was not run after it was marked."""
    # given a fresh extraction of every marked string, from a copy of the sources
    _copy_sources(tmp_path)
    (tmp_path / "locale" / "es" / "LC_MESSAGES").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    settings.LOCALE_PATHS = [tmp_path / "locale"]
    call_command("makemessages", locale=["es"], verbosity=0)
    with (tmp_path / "locale" / "es" / "LC_MESSAGES" / "django.po").open("rb") as po:
        fresh = {m.id for m in read_po(po, locale="es") if m.id}
    # then the committed catalogue has every one of them, and nothing that is gone
    committed = {m.id for m in _catalog("es") if m.id}
    missing = sorted(str(m) for m in fresh - committed)
    assert not missing, f"run `make messages`: {len(missing)} new strings, e.g. {missing[:5]}"
    stale = sorted(str(m) for m in committed - fresh)
    assert not stale, f"run `make messages`: {len(stale)} strings no longer used, e.g. {stale[:5]}"


# --- the language of a page ----------------------------------------------------------------------


def test_accept_language_is_honoured_for_a_visitor(client, refdata) -> None:
    html = client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="es-ES,es;q=0.9").content.decode()
    assert '<html lang="es" dir="ltr">' in html


def test_english_by_default(client, refdata) -> None:
    html = client.get(reverse("home")).content.decode()
    assert '<html lang="en" dir="ltr">' in html


def test_arabic_pages_are_right_to_left(client, refdata) -> None:
    html = client.get(reverse("home"), HTTP_ACCEPT_LANGUAGE="ar").content.decode()
    assert '<html lang="ar" dir="rtl">' in html
    login = client.get(reverse("login"), HTTP_ACCEPT_LANGUAGE="ar").content.decode()
    assert 'dir="rtl"' in login


def test_the_language_selector_switches_and_persists_to_the_profile(client, alice) -> None:
    # given a logged-in trader whose browser asks for English
    client.force_login(alice)
    page = client.get(reverse("my_trades")).content.decode()
    assert 'name="language"' in page
    assert 'action="/i18n/setlang/"' in page
    # when they pick Russian in the header
    response = client.post(
        reverse("set_language"), {"language": "ru", "next": reverse("my_trades")}
    )
    # then they are back on the page, in Russian, and the choice is on their profile
    assert response.status_code == 302
    assert response["Location"] == reverse("my_trades")
    assert Profile.objects.get(user=alice).language == "ru"
    assert '<html lang="ru"' in client.get(reverse("my_trades")).content.decode()
    # and another browser (no cookie, English Accept-Language) gets Russian after logging in
    client.logout()
    client.cookies.clear()
    client.force_login(alice)
    html = client.get(reverse("my_trades"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert '<html lang="ru"' in html


def test_an_unknown_language_changes_nothing(client, alice) -> None:
    client.force_login(alice)
    client.post(reverse("set_language"), {"language": "xx"})
    assert not Profile.objects.filter(user=alice).exclude(language="").exists()


# --- numbers ------------------------------------------------------------------------------------


def test_numbers_are_shown_in_the_reader_s_symbols_exactly() -> None:
    value = Decimal("1234567.125000000000000001")
    with translation.override("es"):
        assert fiat(Decimal("85000")) == "85.000,00"
        assert format_decimal(value, 18) == "1.234.567,125000000000000001"
    with translation.override("ru"):
        assert fiat(Decimal("85000")) == "85\xa0000,00"
    with translation.override("en"):
        assert fiat(Decimal("85000")) == "85,000.00"


@pytest.mark.parametrize(
    ("lang", "typed", "read"),
    [
        ("es", "1.234,56", "1234.56"),
        ("es", "1234,56", "1234.56"),
        ("es", "0.5", "0.5"),
        ("es", "1.234.567", "1234567"),
        ("pt-br", "1.234,56", "1234.56"),
        ("ru", "1 234,56", "1234.56"),
        ("ar", "١٢٣٤٫٥٦", "1234.56"),
        ("en", "1234.56", "1234.56"),
        ("en", "1,234.56", "1,234.56"),  # English keeps its one grammar: the parser refuses
    ],
)
def test_typed_numbers_are_read_in_the_reader_s_language(lang: str, typed: str, read: str) -> None:
    assert delocalize_number(typed, field="amount", language=lang) == read


def test_an_ambiguous_number_is_refused_not_guessed() -> None:
    with pytest.raises(ValidationFailed) as refused:
        delocalize_number("1.234", field="min_fiat", language="es")
    assert refused.value.code == "ambiguous_number"
    assert "min_fiat" in refused.value.fields


def test_an_offer_typed_in_spanish_is_stored_exactly(client, alice) -> None:
    # given a Spanish-speaking maker with coins
    fund(alice)
    client.force_login(alice)
    client.post(reverse("set_language"), {"language": "es"})
    form = {
        "side": "sell",
        "asset": "BTC",
        "fiat": "EUR",
        "price_type": "fixed",
        "price": "80.500,00",
        "margin_percent": "",
        "amount": "0,4",
        "min_fiat": "50",
        "max_fiat": "1.234,56",
        "payment_methods": ["sepa", "wise"],
        "payment_window_minutes": "30",
        "terms": "",
    }
    # when they post the offer form with decimal commas
    response = client.post(reverse("offer_new"), form)
    # then it is stored exactly: 1.234,56 is 1234.56 EUR
    assert response.status_code == 302, response.content.decode()[:2000]
    offer = Offer.objects.get()
    assert (offer.price, offer.amount, offer.max_fiat) == (
        Decimal("80500"),
        Decimal("0.4"),
        Decimal("1234.56"),
    )


# --- notifications and email in the recipient's language ---------------------------------------


@pytest.fixture
def spanish_catalogue(tmp_path: Path, settings):
    """A tiny Spanish catalogue in front of the real ones (until translators fill those)."""
    catalog = Catalog(locale="es")
    catalog.add("Hello %(username)s,", "Hola %(username)s,")
    catalog.add(
        "Trade #{n} was cancelled; the {asset} in escrow went back to {seller}.",
        "La operación #{n} se canceló; el {asset} en custodia volvió a {seller}.",
    )
    catalog.add("No API endpoint at {path}.", "No hay ningún punto de la API en {path}.")
    target = tmp_path / "es" / "LC_MESSAGES"
    target.mkdir(parents=True)
    with (target / "django.mo").open("wb") as mo:
        write_mo(mo, catalog)
    settings.LOCALE_PATHS = [tmp_path, *settings.LOCALE_PATHS]
    yield
    translation.trans_real._translations = {}


def test_an_email_to_a_spanish_speaking_user_is_in_spanish(alice, spanish_catalogue) -> None:
    from notifications.email import email_render, recipient_language

    # given a trader who chose Spanish
    Profile.objects.filter(pk=profile_for(alice).pk).update(language="es")
    assert recipient_language(alice) == "es"
    # when an email is written for them (from a request in English)
    with translation.override("en"):
        _subject, body = email_render(user=alice, subject="x", text="y")
    # then it greets them in Spanish
    assert body.startswith(f"Hola {alice.username},")


def test_a_notification_is_written_in_its_recipient_s_language(
    alice, bob, spanish_catalogue, django_capture_on_commit_callbacks, trade_news_inline
) -> None:
    from escrow import services as escrow
    from marketplace.tests.factories import make_trade
    from notifications.models import Notification

    # given a trade between a Spanish-speaking seller and an English-speaking buyer
    Profile.objects.filter(pk=profile_for(alice).pk).update(language="es")
    trade = make_trade(alice, bob)
    # when the buyer cancels it
    with django_capture_on_commit_callbacks(execute=True):
        escrow.trade_cancel(trade_id=trade.pk, actor=trade.buyer)
    # then the seller's note is in Spanish (the buyer acted: they get none)
    note = Notification.objects.get(user=trade.seller, kind="cancelled")
    assert note.text.startswith(f"La operación #{trade.pk} se canceló")


def test_the_api_translates_its_messages_by_accept_language_and_keeps_the_code(
    client, spanish_catalogue
) -> None:
    answer = client.get("/api/v1/nowhere/", HTTP_ACCEPT_LANGUAGE="es").json()["error"]
    assert answer["code"] == "not_found"
    assert answer["message"] == "No hay ningún punto de la API en /api/v1/nowhere/."
    english = client.get("/api/v1/nowhere/", HTTP_ACCEPT_LANGUAGE="en").json()["error"]
    assert english["message"] == "No API endpoint at /api/v1/nowhere/."


def test_settings_list_the_five_languages() -> None:
    assert [code for code, _name in settings.LANGUAGES] == ["en", "es", "pt-br", "ru", "ar"]
