"""Issue 20: every main page rendered in each locale has no untranslated marked string.

A pseudo-locale `xx` whose catalogue translates every message to "⟦" + message + "⟧" is built
on the fly from a fresh extraction of the sources (what `make messages` would write), plus the
messages of Django and the installed apps (form errors, month names). The main pages are then
rendered in it for a logged-in trader, and every visible text, and every title, placeholder,
aria-label and alt, must be wrapped in the markers: a text left bare is English that no
translator will ever see. What a trader typed, usernames, numbers, codes, addresses and the
names CLDR gives (currencies, countries, languages in their own name) are data, not texts."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from django.apps import apps
from django.conf import settings
from django.conf.locale import LANG_INFO
from django.core.cache import cache
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone, translation

from tests.test_i18n import _copy_sources

PSEUDO = "xx"
OPEN, CLOSE = "⟦", "⟧"


def _wrap(text: str) -> str:
    return f"{OPEN}{text}{CLOSE}" if text else text


def _pseudo_catalog(sources: Path) -> Catalog:
    """Every message of the sources and of the installed apps, each "translated" to itself in
    markers (plurals too, with context)."""
    import django

    catalog = Catalog(locale="en")  # English's plural rule: nplurals=2
    pos = [sources / "locale" / PSEUDO / "LC_MESSAGES" / "django.po"]
    roots = [Path(django.__file__).parent / "conf", *(Path(a.path) for a in apps.get_app_configs())]
    pos += [root / "locale" / "es" / "LC_MESSAGES" / "django.po" for root in roots]
    for po_path in pos:
        if not po_path.exists():
            continue
        # a fresh extraction's header has placeholders for the plural rule
        text = po_path.read_bytes().replace(b"nplurals=INTEGER; plural=EXPRESSION;", b"")
        with io.BytesIO(text) as po:
            for message in read_po(po, locale=po_path.parent.parent.name.replace(PSEUDO, "en")):
                if not message.id:
                    continue
                if isinstance(message.id, tuple | list):
                    string: Any = tuple(_wrap(part) for part in message.id[:2])
                else:
                    string = _wrap(message.id)
                catalog.add(message.id, string, context=message.context)
    return catalog


@pytest.fixture(scope="module")
def pseudo_locale(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """locale/xx/LC_MESSAGES/django.mo, from makemessages run on a copy of the sources."""
    import os

    sources = tmp_path_factory.mktemp("sources")
    _copy_sources(sources)
    (sources / "locale" / PSEUDO / "LC_MESSAGES").mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(sources)
    try:
        with override_settings(LOCALE_PATHS=[sources / "locale"]):
            call_command("makemessages", locale=[PSEUDO], verbosity=0)
    finally:
        os.chdir(cwd)
    catalogue = tmp_path_factory.mktemp("pseudo")
    (catalogue / PSEUDO / "LC_MESSAGES").mkdir(parents=True)
    with (catalogue / PSEUDO / "LC_MESSAGES" / "django.mo").open("wb") as mo:
        write_mo(mo, _pseudo_catalog(sources))
    return catalogue


@pytest.fixture
def in_pseudo_locale(pseudo_locale: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The site with `xx` among its languages and its catalogue first."""
    from common import l10n

    monkeypatch.setitem(
        LANG_INFO,
        PSEUDO,
        {"bidi": False, "code": PSEUDO, "name": "Pseudo", "name_local": "Pseudo"},
    )
    # Babel knows no `xx`: relative times ("5 minutes") are CLDR's translations, not marked
    # strings; they come out in markers like the rest.
    english = l10n.format_timedelta
    monkeypatch.setattr(
        l10n,
        "format_timedelta",
        lambda *a, **k: _wrap(english(*a, **{**k, "locale": "en"})),
    )
    with override_settings(
        LANGUAGES=[*settings.LANGUAGES, (PSEUDO, "Pseudo")],
        LOCALE_PATHS=[pseudo_locale, *settings.LOCALE_PATHS],
    ):
        translation.trans_real._translations = {}
        yield
    translation.trans_real._translations = {}
    translation.activate(settings.LANGUAGE_CODE)


# --- reading a page ------------------------------------------------------------------------------

VISIBLE_ATTRIBUTES = ("title", "placeholder", "aria-label", "alt")
# Not prose: scripts, styles, and commands or paths shown as code.
NOT_TEXT = {"script", "style", "code", "kbd", "samp"}


class _Texts(HTMLParser):
    """The texts a person reads, as the parts of them outside the markers: text nodes outside
    scripts, styles and code (a translated sentence may hold a link or a <strong>: the markers
    are followed across elements), and the attributes a browser shows (tooltips, placeholders)
    or reads aloud (aria-label, alt), and the label of a submit input."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.bare: list[str] = []
        self._skip = 0
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in NOT_TEXT:
            self._skip += 1
        values = dict(attrs)
        shown = [values.get(name) for name in VISIBLE_ATTRIBUTES]
        if tag == "input" and values.get("type") in {"submit", "button"}:
            shown.append(values.get("value"))
        self.bare += [_outside_markers(str(v), 0)[0] for v in shown if v]

    def handle_endtag(self, tag: str) -> None:
        if tag in NOT_TEXT and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        text, self._depth = _outside_markers(data, self._depth)
        if text.strip():
            self.bare.append(text)


def _outside_markers(text: str, depth: int) -> tuple[str, int]:
    """The characters of `text` outside any ⟦...⟧ (they may open in an earlier text node), and
    the depth at its end."""
    kept = []
    for ch in text:
        if ch == OPEN:
            depth += 1
            kept.append(" ")
        elif ch == CLOSE:
            depth = max(depth - 1, 0)
            kept.append(" ")
        elif depth == 0:
            kept.append(ch)
    return "".join(kept), depth


_DATA = [
    re.compile(r"0x[0-9a-fA-F]+"),  # addresses, transaction hashes
    re.compile(r"\b[0-9a-fA-F]{16,}\b"),  # digests
    re.compile(r"\b[A-Z]{2,5}\b"),  # codes: assets, fiats, countries; checked against `codes`
]


# Known and left as they are: a loan event's stored reason with its figures ("principal 1.0",
# "LTV 0.5514"), written in English by lending's services into LoanEvent.reason, an audit
# record. Translating it needs the event to keep its parameters apart from its words.
KNOWN_UNTRANSLATED = [re.compile(r"\bprincipal [0-9.]+"), re.compile(r"\bLTV [0-9.]+")]


def _bare(text: str, data: set[str], codes: set[str]) -> str:
    """What is left of a text outside the markers once its data are taken out: "" when it
    holds nothing a translator should have seen."""
    text = " ".join(text.split())
    for value in sorted(data, key=len, reverse=True):
        text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", " ", text)
    for known in KNOWN_UNTRANSLATED:
        text = known.sub(" ", text)
    text = _DATA[0].sub(" ", text)
    text = _DATA[1].sub(" ", text)
    text = _DATA[2].sub(lambda m: " " if m.group(0) in codes else m.group(0), text)
    # a word: two letters or more (single letters are units and separators: "x", "%")
    return " ".join(text.split()) if re.search(r"[^\W\d_]{2,}", text) else ""


def unwrapped(html: str, data: set[str], codes: set[str]) -> list[str]:
    parser = _Texts()
    parser.feed(html)
    return sorted({left for t in parser.bare if (left := _bare(t, data=data, codes=codes))})


# --- the pages -----------------------------------------------------------------------------------


def _data_and_codes() -> tuple[set[str], set[str]]:
    """What the site shows as it was stored or as CLDR names it: not a marked string."""
    from django.contrib.auth import get_user_model

    from common.countries import COUNTRY_NAMES
    from ledger.models import Asset
    from marketplace.models import FiatCurrency, PaymentMethod

    data = set(get_user_model().objects.values_list("username", flat=True))
    data |= set(PaymentMethod.objects.values_list("name", flat=True))  # brands
    data |= set(FiatCurrency.objects.values_list("name", flat=True))  # CLDR's names
    data |= set(COUNTRY_NAMES.values())
    data |= {str(info["name_local"]) for code, info in LANG_INFO.items() if "name_local" in info}
    data |= {"EscrowP2P", "Escrow"}  # the site's name, and its logo: "Escrow<span>P2P</span>"
    data |= {"Pseudo", "zz typed by a trader"}
    data |= set(Asset.objects.values_list("name", flat=True))
    codes = set(Asset.objects.values_list("code", flat=True)) | {"UTC"}
    codes |= set(FiatCurrency.objects.values_list("code", flat=True))
    codes |= set(COUNTRY_NAMES)
    return data, codes


@pytest.fixture
def market(alice, bob, carol) -> dict[str, Any]:
    """A trader (alice) with a bit of everything: an offer of her own, an offer of bob's, a
    trade in progress with a chat message, a loan, an open loan request, notifications."""
    from escrow import services as escrow
    from lending import services as lending
    from lending.tests.helpers import request_example
    from marketplace.tests.factories import fund, make_offer, make_trade

    fund(alice, "BTC", "2")
    fund(alice, "USDT", "12000")
    fund(bob, "ETH", "2")
    mine = make_offer(alice, terms="zz typed by a trader")
    theirs = make_offer(bob, side="buy", price="79000")
    trade = make_trade(bob, alice)
    escrow.trade_mark_paid(trade_id=trade.pk, actor=alice)
    loan_request = request_example(alice)
    lending.loan_request_fund(request_id=loan_request.pk, lender=bob, amount="1")
    open_request = request_example(
        alice, collateral_amount="6000", funding_deadline=timezone.now() + timedelta(days=3)
    )
    from lending.models import Loan

    return {
        "mine": mine,
        "theirs": theirs,
        "trade": trade,
        "loan": Loan.objects.get(),
        "open_request": open_request,
    }


def _pages(market: dict[str, Any]) -> dict[str, str]:
    return {
        "order book": reverse("home"),
        "offer page": reverse("offer_detail", args=[market["theirs"].pk]),
        "trade room": reverse("trade_detail", args=[market["trade"].pk]),
        "wallet": reverse("wallet"),
        "offer form": reverse("offer_new"),
        "offer edit form": reverse("offer_edit", args=[market["mine"].pk]),
        "my offers": reverse("my_offers"),
        "my trades": reverse("my_trades"),
        "settings": reverse("settings"),
        "notifications": reverse("notifications"),
        "lend": reverse("lending:lend"),
        "borrow": reverse("lending:borrow"),
        "my loans": reverse("lending:my_loans"),
        "loan": reverse("lending:loan_detail", args=[market["loan"].pk]),
        "loan request": reverse("lending:request_detail", args=[market["open_request"].pk]),
        "reserves": reverse("reserves"),
        "profile": reverse("profile", args=["bob"]),
    }


@pytest.mark.skipif(
    __import__("shutil").which("xgettext") is None, reason="GNU gettext is not installed"
)
def test_every_main_page_in_the_pseudo_locale_has_no_untranslated_string(
    client, alice, market, in_pseudo_locale
) -> None:
    from accounts.models import Profile
    from accounts.selectors import profile_for
    from accounts.services import language_cache_key

    # given a trader who reads the pseudo-locale
    Profile.objects.filter(pk=profile_for(alice).pk).update(language=PSEUDO)
    cache.delete(language_cache_key(alice.pk))
    client.force_login(alice)
    data, codes = _data_and_codes()
    # when each main page is rendered
    bare: dict[str, list[str]] = {}
    for name, url in _pages(market).items():
        response = client.get(url, HTTP_ACCEPT_LANGUAGE=PSEUDO)
        assert response.status_code == 200, (name, url, response.status_code)
        html = response.content.decode()
        assert f'<html lang="{PSEUDO}"' in html, name
        texts = unwrapped(html, data=data, codes=codes)
        if texts:
            bare[name] = texts
    # then every text on them came through the catalogue
    report = "\n".join(f"{name}:\n  " + "\n  ".join(texts) for name, texts in bare.items())
    assert not bare, f"texts not marked for translation:\n{report}"


def test_the_checker_sees_a_bare_text_and_lets_data_through() -> None:
    html = (
        '<p>⟦Price⟧: 85,000.00 EUR</p><p title="Copy">⟦Wallet⟧</p>'
        "<script>var x = 'Hello';</script><p>alice 0xAbC123 ⟦sold ⟦BTC⟧ to⟧ bob</p>"
        "<p>Bare words</p>"
    )
    assert unwrapped(html, data={"alice", "bob"}, codes={"EUR", "BTC"}) == ["Bare words", "Copy"]
    # a translated sentence around a link is one text
    assert unwrapped("<p>⟦Pay <a>alice</a> now⟧ or not</p>", data=set(), codes=set()) == ["or not"]
