"""The HTML order book's frame from the cache (issue 17, marketplace/book_frame.py): the page
around the rows is rendered once per book version, language, time zone, query string, signed in
or not and the viewer's country; the request fills in its CSRF token, messages, banner, rows and
(signed in) its head, nav and user menu. The page is the one rendered whole, for every viewer."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.messages import constants
from django.contrib.messages.storage.cookie import CookieStorage
from django.core.cache import cache
from django.http import HttpResponse
from django.test import Client, RequestFactory
from django.test.signals import template_rendered
from django.urls import reverse
from django.utils import timezone

from accounts.models import Profile
from accounts.tests.factories import UserFactory
from common import hotcache
from marketplace import services
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db

PAGE = "/?side=buy&asset=BTC&fiat=EUR"
TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]*)"')


@pytest.fixture(autouse=True)
def _fresh_cache(settings):
    settings.ORDER_BOOK_CACHE_SECONDS = 1  # as in production (the test settings turn it off)
    settings.ORDER_BOOK_FRAME_CACHE = True
    cache.clear()
    hotcache.reset()
    yield
    cache.clear()


@pytest.fixture
def book(alice, carol):
    fund(alice, "BTC", "2")
    fund(carol, "BTC", "2")
    services.price_index_set(asset_code="BTC", fiat_code="EUR", price="85000")
    return (
        make_offer(alice, price="80000", payment_methods=["sepa", "revolut"]),
        make_offer(carol, price="81000", min_taker_trades=3),
    )


def browser_for(user=None, *, csrf_checks: bool = False) -> Client:
    browser = Client(enforce_csrf_checks=csrf_checks)
    if user is not None:
        browser.force_login(user)
    return browser


def get(browser: Client, path: str = PAGE) -> tuple[str, list[str]]:
    """The page's HTML, CSRF tokens blanked, and the templates rendered for it."""
    rendered = []

    def count(sender, template, **kwargs):
        rendered.append(template.name)

    template_rendered.connect(count)
    try:
        response = browser.get(path)
    finally:
        template_rendered.disconnect(count)
    assert response.status_code == 200
    return TOKEN.sub("CSRF", response.content.decode()), rendered


def whole_and_framed(browser: Client, settings, path: str = PAGE) -> tuple[str, str]:
    """The page rendered whole, then from a frame someone else's read cached."""
    settings.ORDER_BOOK_FRAME_CACHE = False
    get(browser, path)  # the viewer's own "last seen" written by their first request
    whole, _ = get(browser, path)
    settings.ORDER_BOOK_FRAME_CACHE = True
    get(browser_for(), path)  # a visitor's frame
    get(browser_for(UserFactory()), path)  # a signed-in one's
    framed, _ = get(browser, path)
    return whole, framed


def with_message(browser: Client, text: str) -> None:
    """A message waiting for the browser's next page (the messages cookie)."""
    storage = CookieStorage(RequestFactory().get("/"))
    storage.add(constants.SUCCESS, text)
    response = HttpResponse()
    storage.update(response)
    browser.cookies[storage.cookie_name] = response.cookies[storage.cookie_name].value


@pytest.mark.parametrize("viewer", [None, "alice", "bob", "carol", "staff", "madrid"])
def test_a_framed_page_is_the_page_rendered_whole(viewer, book, request, settings):
    users = {
        "staff": lambda: UserFactory(username="dave", is_staff=True),
        "madrid": lambda: UserFactory(username="erin"),
    }
    user = (
        users[viewer]()
        if viewer in users
        else (request.getfixturevalue(viewer) if viewer else None)
    )
    if viewer == "madrid":  # the method filter's groups follow the profile's country
        Profile.objects.update_or_create(
            user=user, defaults={"country": "ES", "time_zone": "Europe/Madrid"}
        )
    Profile.objects.filter(user__username="carol").update(last_seen=timezone.now())
    whole, framed = whole_and_framed(browser_for(user), settings)
    assert framed == whole
    if viewer == "staff":
        assert 'href="/admin/"' in framed
    if viewer:
        assert f'<span class="user-name">{user.username}</span>' in framed


@pytest.mark.parametrize("path", [PAGE + "&amount=oops", "/?side=sell&asset=BTC", "/?page=9"])
def test_other_queries_are_the_page_rendered_whole(path, book, alice, settings):
    whole, framed = whole_and_framed(browser_for(alice), settings, path)
    assert framed == whole


def test_a_cached_read_renders_no_template(book, bob):
    browser = browser_for(bob)
    get(browser)
    _, rendered = get(browser)
    # only the one action cell that is bob's own (carol's offer is not open to him): not the
    # page, nor the viewer's blocks (rendered from the compiled templates' blocks)
    assert rendered == ["marketplace/_book_row_action.html"]


def test_each_session_gets_its_own_csrf_token_and_the_pages_forms_post(book, bob):
    # given two visitors reading the same cached frame
    first, second = browser_for(csrf_checks=True), browser_for(csrf_checks=True)
    one, two = first.get(PAGE), second.get(PAGE)
    # then each got a token of its own, and the cookie it goes with
    token_one, token_two = TOKEN.findall(one.content.decode()), TOKEN.findall(two.content.decode())
    assert len(set(token_one)) == 1
    assert token_one[0] != token_two[0]
    assert settings.CSRF_COOKIE_NAME in one.cookies
    # when the visitor switches the language with the page's form
    switched = first.post(
        "/i18n/setlang/",
        {"csrfmiddlewaretoken": token_one[0], "language": "es", "next": PAGE},
    )
    # then it is accepted, and the page comes in Spanish: the Spanish frame
    assert switched.status_code == 302
    spanish = first.get(PAGE).content.decode()
    assert '<html lang="es"' in spanish
    assert "Comprar BTC" in spanish
    # and a signed-in trader's quick-trade form posts with the token of their page
    trader = browser_for(bob, csrf_checks=True)
    token = TOKEN.findall(trader.get(PAGE).content.decode())[0]
    taken = trader.post(
        reverse("quick_trade"),
        {
            "csrfmiddlewaretoken": token,
            "side": "buy",
            "asset": "BTC",
            "fiat": "EUR",
            "fiat_amount": "100",
        },
    )
    # then the trade opened with alice's offer (the best price), and bob is in its room
    assert taken.status_code == 302
    assert taken.headers["Location"].startswith("/trades/")


def test_messages_show_once_as_rendered_whole(book, bob, settings):
    browser = browser_for(bob)
    get(browser)  # the frame cached
    with_message(browser, "Offer saved.")
    html, _ = get(browser)
    assert '<div class="alert alert-success">Offer saved.</div>' in html
    again, _ = get(browser)
    assert "Offer saved." not in again  # shown once
    # and the same as the page rendered whole with a message
    settings.ORDER_BOOK_FRAME_CACHE = False
    with_message(browser, "Offer saved.")
    whole, _ = get(browser)
    assert whole == html


def test_the_buying_paused_banner_is_the_viewers(book, bob, carol, settings):
    Profile.objects.update_or_create(
        user=bob, defaults={"buying_suspended_until": timezone.now() + timedelta(hours=3)}
    )
    get(browser_for(carol))  # the frame cached by someone not paused
    html, _ = get(browser_for(bob))
    assert 'data-testid="buying-paused"' in html
    assert 'data-testid="buying-paused"' not in get(browser_for(carol))[0]
    settings.ORDER_BOOK_FRAME_CACHE = False
    assert get(browser_for(bob))[0] == html


def test_logging_in_and_out_switches_the_user_part(book, alice, bob):
    browser = browser_for()
    html, _ = get(browser)
    assert 'href="/accounts/login/?next=/"' in html
    assert 'class="user-name"' not in html
    browser.force_login(alice)
    html, _ = get(browser)
    assert '<span class="user-name">alice</span>' in html
    assert 'id="quick-form"' in html
    browser.logout()
    browser.force_login(bob)
    html, _ = get(browser)
    assert '<span class="user-name">bob</span>' in html
    assert "alice</span>" not in html
    browser.logout()
    html, _ = get(browser)
    assert 'class="user-name"' not in html
    assert 'id="quick-form"' not in html


def test_an_offer_change_shows_on_the_next_read(book, alice, bob):
    plain = book[0]
    browser = browser_for(bob)
    html, _ = get(browser)
    assert f"Offer {plain.pk} by alice" in html
    services.offer_set_active(offer_id=plain.pk, actor=alice, active=False)
    html, rendered = get(browser)
    assert "marketplace/order_book_frame.html" in rendered  # built afresh
    assert f"Offer {plain.pk} by alice" not in html
    services.offer_delete(offer_id=book[1].pk, actor=book[1].maker)
    html, _ = get(browser)
    assert "No offers match." in html
