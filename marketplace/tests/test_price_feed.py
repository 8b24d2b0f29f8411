"""The price feed end to end against local exchanges: the median of the sources, an outlier
dropped, a fiat derived through USD with the ECB's rates; every source down makes the pair stale
(floating offers leave the book, in the API and the HTML, can't be taken, the moderators are
alerted once), and a fresh price recovers it and re-arms the alert. Without sources nothing is
polled (the manual index, offline)."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.tests.factories import UserFactory
from common.errors import Conflict
from escrow import services as escrow
from marketplace.models import FiatCurrency, Offer, PriceIndex, PricePoint
from marketplace.services import prices_refresh
from marketplace.services.prices import FX_CACHE_KEY, prices_mark_aged
from marketplace.tests.factories import fund, make_offer
from marketplace.tests.fake_exchanges import (
    HTML,
    Answer,
    FakeExchange,
    bitstamp_ticker,
    coinbase_spot,
    ecb_xml,
    kraken_ticker,
)
from notifications.models import Notification

pytestmark = pytest.mark.django_db

KRAKEN, COINBASE, BITSTAMP = (
    "/0/public/Ticker?pair=XBTEUR",
    "/v2/prices/BTC-EUR/spot",
    "/api/v2/ticker/btceur/",
)


class Feed:
    def __init__(self) -> None:
        self.kraken, self.coinbase, self.bitstamp, self.ecb = (FakeExchange() for _ in range(4))

    def answer(self, kraken: str | Answer, coinbase: str | Answer, bitstamp: str | Answer):
        """BTC/EUR from each exchange: a price in its format, or any answer."""
        self.kraken.routes[KRAKEN] = (
            kraken_ticker("XXBTZEUR", kraken) if isinstance(kraken, str) else kraken
        )
        self.coinbase.routes[COINBASE] = (
            coinbase_spot("BTC", "EUR", coinbase) if isinstance(coinbase, str) else coinbase
        )
        self.bitstamp.routes[BITSTAMP] = (
            bitstamp_ticker(bitstamp) if isinstance(bitstamp, str) else bitstamp
        )

    def down(self) -> None:
        """Every source fails, each its own way: a hang, a 500, an HTML page."""
        self.answer(Answer(hang=True), Answer(status=500, body=b"oops"), HTML)

    def close(self) -> None:
        for server in (self.kraken, self.coinbase, self.bitstamp, self.ecb):
            server.close()


@pytest.fixture
def feed(settings, refdata):
    feed = Feed()
    settings.PRICE_SOURCES = ["kraken", "coinbase", "bitstamp"]
    settings.PRICE_SOURCE_URLS = {
        "kraken": feed.kraken.url,
        "coinbase": feed.coinbase.url,
        "bitstamp": feed.bitstamp.url,
        "binance": "http://127.0.0.1:9",
    }
    settings.PRICE_FX_URL = f"{feed.ecb.url}/eurofxref-daily.xml"
    settings.PRICE_SOURCE_TIMEOUT = 0.3
    settings.PRICE_OUTLIER_PCT = Decimal(3)
    settings.PRICE_PAIRS = ["BTC/EUR"]
    cache.delete(FX_CACHE_KEY)
    yield feed
    feed.close()
    cache.delete(FX_CACHE_KEY)


@pytest.fixture
def moderator(refdata):
    user = UserFactory(username="mod", is_staff=True, email="mod@example.com")
    user.user_permissions.add(Permission.objects.get(codename="decide_trade"))
    return user


def btc_eur() -> PriceIndex:
    return PriceIndex.objects.get(asset__code="BTC", fiat__code="EUR")


def test_pair_priced_at_the_median_and_floating_offers_follow(feed, alice):
    # given a floating offer at index +1 % and three exchanges
    fund(alice, "BTC", "1")
    floating = make_offer(alice, price_type="floating", price=None, margin_percent="1")
    feed.answer("85000", "85100", "85200.5")
    # when the feed runs
    counts = prices_refresh()
    # then the pair is at the median, named after the sources it came from
    index = btc_eur()
    assert counts["priced"] == 1
    assert (index.price, index.source, index.stale_since) == (
        Decimal("85100"), "feed:bitstamp+coinbase+kraken", None,
    )  # fmt: skip
    # the floating offer follows, and the price joins the chart's history
    assert Offer.objects.get(pk=floating.pk).effective_price == Decimal("85951.00")
    assert PricePoint.objects.filter(asset__code="BTC", fiat__code="EUR").latest("at").price == (
        Decimal("85100")
    )
    # each exchange was asked its own way
    assert (feed.kraken.requests, feed.coinbase.requests, feed.bitstamp.requests) == (
        [KRAKEN], [COINBASE], [BITSTAMP],
    )  # fmt: skip


def test_an_outlier_source_is_dropped(feed):
    feed.answer("85000", "85100", "99000")
    prices_refresh()
    index = btc_eur()
    assert (index.price, index.source) == (Decimal("85050"), "feed:coinbase+kraken")


def test_one_source_down_the_others_still_price(feed):
    feed.answer("85000", Answer(status=503, body=b"busy"), "85300")
    prices_refresh()
    assert (btc_eur().price, btc_eur().stale_since) == (Decimal("85150"), None)


def test_a_fiat_a_source_lacks_is_derived_through_usd(feed, settings):
    # given BRL, which Kraken and Bitstamp don't quote (Coinbase does), and the ECB's rates
    FiatCurrency.objects.get_or_create(code="BRL", defaults={"name": "Brazilian real"})
    settings.PRICE_PAIRS = ["BTC/BRL"]
    feed.kraken.routes["/0/public/Ticker?pair=XBTUSD"] = kraken_ticker("XXBTZUSD", "92000")
    feed.bitstamp.routes["/api/v2/ticker/btcusd/"] = bitstamp_ticker("92100")
    feed.coinbase.routes["/v2/prices/BTC-BRL/spot"] = coinbase_spot("BTC", "BRL", "506500")
    feed.ecb.routes["/eurofxref-daily.xml"] = ecb_xml({"USD": "1.0705", "BRL": "5.8915"})
    # when the feed runs twice
    prices_refresh()
    prices_refresh()
    # then Kraken's and Bitstamp's USD prices count at USD→BRL = 5.8915 / 1.0705
    usd_brl = Decimal("5.8915") / Decimal("1.0705")
    quotes = sorted([Decimal("92000") * usd_brl, Decimal("92100") * usd_brl, Decimal("506500")])
    expected = quotes[1].quantize(Decimal("1e-8"), rounding=ROUND_HALF_UP)
    index = PriceIndex.objects.get(asset__code="BTC", fiat__code="BRL")
    assert (index.price, index.source) == (expected, "feed:bitstamp+coinbase+kraken")
    # and the daily FX file was fetched once (cached)
    assert feed.ecb.requests == ["/eurofxref-daily.xml"]


def test_fx_down_only_the_derived_quotes_fail(feed, settings):
    FiatCurrency.objects.get_or_create(code="BRL", defaults={"name": "Brazilian real"})
    settings.PRICE_PAIRS = ["BTC/BRL"]
    feed.kraken.routes["/0/public/Ticker?pair=XBTUSD"] = kraken_ticker("XXBTZUSD", "92000")
    feed.coinbase.routes["/v2/prices/BTC-BRL/spot"] = coinbase_spot("BTC", "BRL", "506500")
    feed.ecb.routes["/eurofxref-daily.xml"] = HTML
    prices_refresh()
    index = PriceIndex.objects.get(asset__code="BTC", fiat__code="BRL")
    assert (index.price, index.source) == (Decimal("506500"), "feed:coinbase")


def _book_api(viewer, asset="BTC", fiat="EUR") -> list[int]:
    api = APIClient()
    api.force_authenticate(viewer)
    answer = api.get("/api/v1/offers/", {"side": "sell", "asset": asset, "fiat": fiat})
    assert answer.status_code == 200
    return [row["id"] for row in answer.json()["results"]]


def _alerts(user) -> list[str]:
    return list(
        Notification.objects.filter(user=user, kind=Notification.Kind.PRICE)
        .order_by("pk")
        .values_list("text", flat=True)
    )


def test_all_sources_down_stale_hidden_alerted_once_then_recovery(
    feed,
    alice,
    bob,
    moderator,
    client,
    mailoutbox,
    outbound_inline,
    django_capture_on_commit_callbacks,
):
    # given a floating and a fixed sell offer on a fed pair
    fund(alice, "BTC", "1")
    floating = make_offer(alice, price_type="floating", price=None, margin_percent="1")
    fixed = make_offer(alice, price="86000")
    feed.answer("85000", "85100", "85200")
    prices_refresh()
    assert sorted(_book_api(bob)) == sorted([floating.pk, fixed.pk])

    # when every source fails (a hang, a 500, an HTML page), twice
    feed.down()
    with django_capture_on_commit_callbacks(execute=True):
        first = prices_refresh()
    with django_capture_on_commit_callbacks(execute=True):
        second = prices_refresh()

    # then the pair is stale, once, saying why
    index = btc_eur()
    assert (first["stale"], second["stale"]) == (1, 0)
    assert index.stale_since is not None
    assert index.price == Decimal("85100")  # the last price stays, marked
    for why in ("kraken: timed out", "coinbase: HTTP 500", "bitstamp: not JSON"):
        assert why in index.stale_reason
    # the floating offer left the book (API and HTML); the fixed one stays
    assert _book_api(bob) == [fixed.pk]
    page = client.get(reverse("home"), {"side": "buy", "asset": "BTC", "fiat": "EUR"})
    html = page.content.decode()
    assert f"Offer {fixed.pk} by alice" in html
    assert f"Offer {floating.pk} by alice" not in html
    assert 'data-testid="price-stale"' in html
    assert "The BTC/EUR price is stale" in html
    # the price API says so
    prices = APIClient().get("/api/v1/prices/").json()["results"]
    (row,) = [p for p in prices if (p["asset"], p["fiat"]) == ("BTC", "EUR")]
    assert row["stale"] is True
    assert "timed out" in row["stale_reason"]
    # nobody can take it at a price nobody vouches for
    with pytest.raises(Conflict, match="no price right now"):
        escrow.trade_open(offer_id=floating.pk, taker=bob, fiat_amount="100")
    # and the moderators were alerted once, in-app and by email
    alerts = _alerts(moderator)
    assert len(alerts) == 1
    assert alerts[0].startswith("The BTC/EUR price is stale")
    assert [m.subject for m in mailoutbox] == ["Price alert: BTC/EUR is stale"]

    # when the sources come back
    feed.answer("86000", "86100", "86200")
    with django_capture_on_commit_callbacks(execute=True):
        prices_refresh()
    # then the pair recovers: the floating offer is back at the new price, moderators are told
    index = btc_eur()
    assert (index.stale_since, index.stale_reason, index.price) == (None, "", Decimal("86100"))
    assert sorted(_book_api(bob)) == sorted([floating.pk, fixed.pk])
    assert Offer.objects.get(pk=floating.pk).effective_price == Decimal("86961.00")
    assert _alerts(moderator)[-1].startswith("The BTC/EUR price is current again")

    # and the alert is re-armed: the next outage is news again
    feed.down()
    with django_capture_on_commit_callbacks(execute=True):
        prices_refresh()
    assert [a.split(":")[0] for a in _alerts(moderator)] == [
        "The BTC/EUR price is stale",
        "The BTC/EUR price is current again (86100.00000000 from feed",
        "The BTC/EUR price is stale",
    ]


def test_a_price_older_than_max_age_is_stale(feed, settings, django_capture_on_commit_callbacks):
    # given fed BTC/EUR last priced two hours ago, and ETH/EUR, which the feed doesn't price
    settings.PRICE_MAX_AGE = 3600
    two_hours_ago = timezone.now() - timedelta(hours=2)
    PriceIndex.objects.update(updated_at=two_hours_ago)
    # when the age sweep runs
    marked = prices_mark_aged(pairs=[("BTC", "EUR")])
    # then only the fed pair is stale, saying since when
    assert marked == 1
    assert "no fresh price since" in btc_eur().stale_reason
    assert PriceIndex.objects.get(asset__code="ETH", fiat__code="EUR").stale_since is None


def test_without_sources_nothing_is_polled(settings, refdata):
    # given no price source (make run offline): the index is the moderators'
    settings.PRICE_SOURCES = []
    PriceIndex.objects.update(updated_at=timezone.now() - timedelta(days=3))
    before = btc_eur().price
    # when beat runs the feed
    counts = prices_refresh()
    # then nothing is priced and nothing is marked stale
    assert (counts["priced"], counts["stale"]) == (0, 0)
    assert (btc_eur().price, btc_eur().stale_since) == (before, None)


def test_the_history_is_pruned(settings, refdata):
    settings.PRICE_SOURCES = []
    settings.PRICE_HISTORY_DAYS = 35
    index = btc_eur()
    old = timezone.now() - timedelta(days=40)
    PricePoint.objects.create(asset=index.asset, fiat=index.fiat, price=1, source="x", at=old)
    recent = PricePoint.objects.create(
        asset=index.asset, fiat=index.fiat, price=2, source="x", at=timezone.now()
    )
    assert prices_refresh()["pruned"] >= 1
    assert not PricePoint.objects.filter(at__lt=timezone.now() - timedelta(days=35)).exists()
    assert PricePoint.objects.filter(pk=recent.pk).exists()
