"""The order book's price chart in a real browser at 390 and 1280 px: it fits the width, its
summary is readable text, the range links switch it without a script, and a stale pair's banner
shows; screenshotted into test-artifacts/screenshots/price-chart-*.png."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from marketplace.models import PriceIndex, PricePoint
from marketplace.services import price_pair_mark_stale
from marketplace.tests.factories import fund, make_offer
from tests.browser.helpers import screenshot
from tests.browser.layout import layout_problems

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def book(alice):
    """BTC/EUR over 30 days (a point every 6 hours, a gentle wave up), a floating offer at +2 %
    and a fixed one."""
    index = PriceIndex.objects.get(asset__code="BTC", fiat__code="EUR")
    now = timezone.now()
    PricePoint.objects.bulk_create(
        PricePoint(
            asset=index.asset,
            fiat=index.fiat,
            price=Decimal(80000 + 40 * n + (600 if n % 7 < 3 else 0)),
            source="test",
            at=now - timedelta(hours=6 * (120 - n)),
        )
        for n in range(120)
    )
    PriceIndex.objects.filter(pk=index.pk).update(price=Decimal("85000"), updated_at=now)
    fund(alice, "BTC", "1")
    return make_offer(alice, price_type="floating", price=None, margin_percent="2"), make_offer(
        alice, price="86000"
    )


@pytest.mark.parametrize("width", [390, 1280])
def test_the_chart_fits_and_switches_ranges(open_page, book, width):
    page = open_page(width=width)
    page.goto("/?side=buy&asset=BTC&fiat=EUR")
    chart = page.get_by_test_id("price-chart")
    expect(chart.locator("svg title")).to_have_text("BTC/EUR price index, the last 24 hours")
    # the SVG is as wide as its card, never wider than the screen
    box = chart.locator("svg").bounding_box()
    assert box is not None
    assert box["x"] > 0
    assert box["x"] + box["width"] <= width
    assert not layout_problems(page, f"book at {width}px")
    screenshot(page, f"price-chart-book-24h-{width}")
    # the 30-day link redraws it (a plain link: no script needed)
    chart.get_by_role("link", name="30d").click()
    expect(page.get_by_test_id("price-chart").locator("svg title")).to_have_text(
        "BTC/EUR price index, the last 30 days"
    )
    expect(page.get_by_test_id("price-chart-summary")).to_contain_text("low 80,")
    screenshot(page, f"price-chart-book-30d-{width}")


def test_an_offers_page_shows_its_margin_line(open_page, book):
    floating, _ = book
    page = open_page(width=390)
    page.goto(f"/offers/{floating.pk}/?range=7d")
    expect(page.locator("svg .chart-margin")).to_have_count(1)
    expect(page.get_by_test_id("price-chart-summary")).to_contain_text(
        "This offer follows it at +2%: 86,700.00 EUR now."
    )
    assert not layout_problems(page, "offer page at 390px")
    screenshot(page, "price-chart-offer-390")


def test_a_stale_pair_shows_its_banner_and_hides_floating_offers(open_page, book):
    floating, fixed = book
    price_pair_mark_stale(asset_code="BTC", fiat_code="EUR", reason="every source failed")
    page = open_page(width=390)
    page.goto("/?side=buy&asset=BTC&fiat=EUR")
    expect(page.get_by_test_id("price-stale")).to_contain_text("The BTC/EUR price is stale")
    expect(page.get_by_label(f"Offer {fixed.pk} by alice")).to_be_visible()
    expect(page.get_by_label(f"Offer {floating.pk} by alice")).to_have_count(0)
    screenshot(page, "price-chart-stale-390")
