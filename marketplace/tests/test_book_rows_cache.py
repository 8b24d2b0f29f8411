"""The HTML order book's rows from the cache (issue 17): each row's public part is rendered once
per book version and language, only the viewer's cells (online status, the action cell) per
request; the page is the same, byte for byte, as one rendered without the cache."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.signals import template_rendered
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Profile
from common import hotcache
from marketplace import services
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db

PAGE = "/?side=buy&asset=BTC&fiat=EUR"  # the visitor buys: the sell offers
ROW = "marketplace/_book_row.html"


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    settings.ORDER_BOOK_CACHE_SECONDS = 1  # as in production (the test settings turn it off)
    cache.clear()
    hotcache.reset()
    yield
    cache.clear()


@pytest.fixture
def book(alice, carol):
    """Three sell offers: alice's plain one, carol's asking 3 completed trades, alice's
    floating one."""
    fund(alice, "BTC", "2")
    fund(carol, "BTC", "2")
    services.price_index_set(asset_code="BTC", fiat_code="EUR", price="85000")
    return (
        make_offer(alice, price="80000", payment_methods=["sepa", "revolut"]),
        make_offer(carol, price="81000", min_taker_trades=3),
        make_offer(alice, price_type="floating", price=None, margin_percent="2"),
    )


def browser_for(user=None, language: str | None = None) -> Client:
    browser = Client()
    if user is not None:
        browser.force_login(user)
    if language:
        browser.cookies[settings.LANGUAGE_COOKIE_NAME] = language
    return browser


def read(browser: Client) -> tuple[str, Counter[str]]:
    """The page's HTML (its CSRF token, new on every response, blanked) and the templates
    rendered to make it."""
    rendered: Counter[str] = Counter()

    def count(sender, template, **kwargs):
        rendered[template.name] += 1

    template_rendered.connect(count)
    try:
        response = browser.get(PAGE)
    finally:
        template_rendered.disconnect(count)
    assert response.status_code == 200
    html = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "CSRF", response.content.decode())
    return html, rendered


@pytest.mark.parametrize("viewer", [None, "alice", "bob", "carol"])
def test_a_cached_page_is_the_page_rendered_without_the_cache(viewer, book, request, settings):
    user = request.getfixturevalue(viewer) if viewer else None
    Profile.objects.filter(user__username="carol").update(last_seen=timezone.now())
    # given the page as rendered with no cache at all (after a first read: the viewer's own
    # "last seen" is written by their first request, and shows if they are a maker)
    settings.ORDER_BOOK_CACHE_SECONDS = 0
    settings.ORDER_BOOK_FRAME_CACHE = False  # the page rendered whole (test_book_frame_cache)
    browser = browser_for(user)
    read(browser)
    uncached, _ = read(browser)
    # when it is read from the cache (built by someone else's read, then read again)
    settings.ORDER_BOOK_CACHE_SECONDS = 1
    settings.ORDER_BOOK_FRAME_CACHE = True
    read(browser_for())
    cached, rendered = read(browser)
    # then it is the same page, byte for byte, and no row was rendered to make it
    assert rendered[ROW] == 0
    assert cached == uncached


def test_a_cached_read_renders_no_row_and_no_select(book):
    browser = browser_for()
    _, first = read(browser)
    assert first[ROW] == 3  # built: each row once
    _, again = read(browser)
    assert again[ROW] == 0
    assert again["marketplace/_book_row_action.html"] == 0  # the take button came cached
    # the filter form's selects came from the renderer's memo, their choices from the
    # per-process copy: no query on the reference tables either
    assert again["django/forms/widgets/select.html"] == 0
    with CaptureQueriesContext(connection) as ctx:
        browser.get(PAGE)
    tables = ("ledger_asset", "marketplace_fiatcurrency", "marketplace_paymentmethod")
    assert not [q["sql"] for q in ctx.captured_queries if any(t in q["sql"] for t in tables)]


def test_the_viewers_cells_are_the_viewers(book, alice, bob, carol):
    plain = book[0]
    read(browser_for())  # cached by a visitor's read
    # alice: her two offers to edit, carol's open to her (she has no trades: not open)
    mine, _ = read(browser_for(alice))
    assert mine.count("Your offer · Edit") == 2
    assert f'href="/offers/{plain.pk}/edit/"' in mine
    assert "3+ completed trades" in mine
    # bob: no offer of his; carol's not open to him, with the reason; alice's to buy
    theirs, rendered = read(browser_for(bob))
    assert "Your offer · Edit" not in theirs
    assert theirs.count("Not open to you") == 1
    assert rendered["marketplace/_book_row_action.html"] == 1  # only the row not open to him
    assert f'<a class="btn btn-buy" href="/offers/{plain.pk}/">Buy BTC</a>' in theirs
    # carol: her own offer, no "not open" on it
    hers, _ = read(browser_for(carol))
    assert hers.count("Your offer · Edit") == 1
    assert "Not open to you" not in hers


def test_online_status_per_request_on_cached_rows(book, alice, carol, bob):
    Profile.objects.filter(user__in=[alice, carol]).update(last_seen=None)
    html, _ = read(browser_for(bob))
    assert 'data-testid="online"' not in html
    assert html.count("Not seen recently") == 3
    # carol seen now, alice an hour ago: no offer changed, the rows are cached
    Profile.objects.filter(user=carol).update(last_seen=timezone.now())
    Profile.objects.filter(user=alice).update(
        last_seen=timezone.now() - timezone.timedelta(hours=1)
    )
    html, rendered = read(browser_for(bob))
    assert rendered[ROW] == 0
    assert html.count('data-testid="online"') == 1
    assert html.count("Active 1\xa0hour ago") == 2


def test_another_language_gets_its_own_rows(book):
    plain = book[0]
    english, _ = read(browser_for())
    assert f'aria-label="Offer {plain.pk} by alice"' in english
    # the same book, read in Spanish after the English page was cached
    spanish, rendered = read(browser_for(language="es"))
    assert rendered[ROW] == 3  # built for this language
    assert f'aria-label="Oferta {plain.pk} de alice"' in spanish
    assert "Comprar BTC" in spanish
    # and English readers still get theirs, from the cache
    again, rendered = read(browser_for())
    assert rendered[ROW] == 0
    assert again == english


def test_an_offer_change_and_an_index_move_show_on_the_next_read(book, alice):
    plain = book[0]
    browser = browser_for()
    html, _ = read(browser)
    assert "86,700.00" in html  # 85,000 + 2%
    # when alice edits her offer's price and the index moves
    services.offer_update(offer_id=plain.pk, actor=alice, price="79500")
    services.price_index_set(asset_code="BTC", fiat_code="EUR", price="90000")
    # then the very next read shows both, rendered afresh
    html, rendered = read(browser)
    assert rendered[ROW] == 3
    assert "79,500.00" in html
    assert "91,800.00" in html
    assert "86,700.00" not in html
