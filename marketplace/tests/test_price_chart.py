"""The price chart on the order book and on an offer's page: the index over 24 h, 7 and 30 days
with a text summary (low, high, change), an offer's margin line, inline SVG with a <title> and
<desc>, no style attributes (the CSP), scaled by its viewBox."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from marketplace.models import PriceIndex, PricePoint
from marketplace.prices.chart import price_chart
from marketplace.services import price_pair_mark_stale
from marketplace.tests.factories import fund, make_offer

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(refdata):
    """BTC/EUR: 80,000 29 days ago, 82,000 6 days ago, 84,000 20 hours ago, 86,000 an hour ago,
    and 85,000 now (the index)."""
    PricePoint.objects.all().delete()
    index = PriceIndex.objects.get(asset__code="BTC", fiat__code="EUR")
    now = timezone.now()
    for ago, price in ((timedelta(days=29), "80000"), (timedelta(days=6), "82000"),
                       (timedelta(hours=20), "84000"), (timedelta(hours=1), "86000")):  # fmt: skip
        PricePoint.objects.create(
            asset=index.asset, fiat=index.fiat, price=Decimal(price), source="test", at=now - ago
        )
    PriceIndex.objects.filter(pk=index.pk).update(price=Decimal("85000"), updated_at=now)
    return index


# (range, its words, low, first, change): the high is 86,000 and the last 85,000 in all three.
RANGES = [
    ("24h", "the last 24 hours", "82,000.00", "82,000.00", "+3.66%"),
    ("7d", "the last 7 days", "80,000.00", "80,000.00", "+6.25%"),
    ("30d", "the last 30 days", "80,000.00", "80,000.00", "+6.25%"),
]


@pytest.mark.parametrize(("key", "words", "low", "first", "change"), RANGES)
def test_the_book_draws_each_range_with_its_summary(client, history, key, words, low, first,
                                                    change):  # fmt: skip
    # when the book of BTC/EUR is asked for a range
    page = client.get(reverse("home"), {"asset": "BTC", "fiat": "EUR", "range": key})
    html = page.content.decode()
    # then the chart is there: inline SVG with its title and description, scaled by its viewBox
    assert page.status_code == 200
    (svg,) = re.findall(r"<svg class=\"chart-svg\".*?</svg>", html, flags=re.S)
    assert 'viewBox="0 0 600 220"' in svg
    assert 'width="100%"' in svg
    assert f'<title id="price-chart-svg-title">BTC/EUR price index, {words}</title>' in svg
    assert "<desc" in svg
    assert 'role="img"' in svg
    assert 'class="chart-line' in svg
    assert "style=" not in svg
    assert "<script" not in svg
    # and a text summary says the range: low, high, from, to, change
    summary = (
        f"BTC/EUR index over {words}: low {low}, high 86,000.00 EUR; from {first} to 85,000.00 "
        f"({change})."
    )
    assert summary in html
    # the chosen range is marked
    assert re.search(rf'class="seg active"[^>]*aria-current="true">{key}<', html)


def test_a_floating_offers_page_draws_its_margin_line(client, history, alice):
    # given a floating offer at index +2 %
    fund(alice, "BTC", "1")
    offer = make_offer(alice, price_type="floating", price=None, margin_percent="2")
    # when its page is shown
    html = client.get(reverse("offer_detail", args=[offer.pk]), {"range": "7d"}).content.decode()
    # then the chart has the margin line and says where the offer stands
    assert 'class="chart-margin"' in html
    assert "This offer follows it at +2%: 86,700.00 EUR now." in html


def test_a_fixed_offers_page_has_no_margin_line(client, history, alice):
    fund(alice, "BTC", "1")
    offer = make_offer(alice, price="86000")
    html = client.get(reverse("offer_detail", args=[offer.pk])).content.decode()
    assert 'data-testid="price-chart"' in html
    assert "chart-margin" not in html


def test_not_enough_history(refdata):
    PricePoint.objects.all().delete()
    chart = price_chart(asset_code="ETH", fiat_code="EUR", range_key="24h")
    assert not chart.has_data
    assert chart.summary == "Not enough ETH/EUR price history over the last 24 hours yet."


def test_a_stale_pair_says_so_on_the_chart(history):
    price_pair_mark_stale(asset_code="BTC", fiat_code="EUR", reason="every source failed")
    chart = price_chart(asset_code="BTC", fiat_code="EUR", range_key="7d")
    # the line ends at the last price the history has; the summary says the index is stale
    assert chart.last == "86,000.00"
    assert chart.summary.endswith("The index is stale: no current price.")


def test_an_unknown_range_is_the_default_one(history):
    assert price_chart(asset_code="BTC", fiat_code="EUR", range_key="1y").range_key == "24h"
