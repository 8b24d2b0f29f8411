"""The exchanges' ticker adapters and the ECB's FX file, against local servers answering in each
one's own format: good answers, timeouts, a closed port, HTML, bad JSON, missing fields, zero and
negative prices, the exchanges' own error formats; and the median with its outlier rule."""

from __future__ import annotations

from decimal import Decimal

import pytest

from marketplace.prices.sources import (
    Binance,
    Bitstamp,
    Coinbase,
    EcbFx,
    Kraken,
    SourceError,
    usd_to,
)
from marketplace.services.prices import NoConsensus, price_median
from marketplace.tests.fake_exchanges import (
    HTML,
    Answer,
    FakeExchange,
    binance_price,
    bitstamp_ticker,
    closed_port_url,
    coinbase_spot,
    ecb_xml,
    js,
    kraken_ticker,
)

TIMEOUT = 0.5

# The route each adapter asks for BTC/EUR.
ROUTES = {
    Kraken: "/0/public/Ticker?pair=XBTEUR",
    Coinbase: "/v2/prices/BTC-EUR/spot",
    Bitstamp: "/api/v2/ticker/btceur/",
    Binance: "/api/v3/ticker/price?symbol=BTCEUR",
}


def good(adapter: type, price: str) -> Answer:
    return {
        Kraken: lambda: kraken_ticker("XXBTZEUR", price),
        Coinbase: lambda: coinbase_spot("BTC", "EUR", price),
        Bitstamp: lambda: bitstamp_ticker(price),
        Binance: lambda: binance_price("BTCEUR", price),
    }[adapter]()


@pytest.fixture
def exchange():
    server = FakeExchange()
    yield server
    server.close()


ADAPTERS = [Kraken, Coinbase, Bitstamp, Binance]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_adapter_reads_its_exchanges_format(exchange, adapter):
    # given the exchange answers BTC/EUR in its own format
    exchange.routes[ROUTES[adapter]] = good(adapter, "85123.45")
    # when the adapter asks
    price = adapter(base_url=exchange.url, timeout=TIMEOUT).price("BTC", "EUR")
    # then it reads the last price exactly, from the path the exchange documents
    assert price == Decimal("85123.45")
    assert exchange.requests == [ROUTES[adapter]]


GARBAGE = {
    "html": (HTML, "not JSON"),
    "bad json": (Answer(body=b'{"result": {"XXBTZEUR": '), "not JSON"),
    "empty body": (Answer(body=b""), "not JSON"),
    "json list": (js([1, 2, 3]), ""),
    "server error": (Answer(status=500, body=b"Internal Server Error"), "HTTP 500"),
    "not found": (
        Answer(status=404, body=b"<html>404</html>", content_type="text/html"),
        "HTTP 404",
    ),
}


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_adapter_refuses_garbage(exchange, adapter, case):
    answer, words = GARBAGE[case]
    exchange.routes[ROUTES[adapter]] = answer
    with pytest.raises(SourceError) as refused:
        adapter(base_url=exchange.url, timeout=TIMEOUT).price("BTC", "EUR")
    assert words in str(refused.value)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@pytest.mark.parametrize(
    ("price", "words"),
    [("0", "not positive"), ("-85000", "not positive"), ("abc", "not a number"),
     ("NaN", "not a number"), ("1e20", "absurd")],
)  # fmt: skip
def test_adapter_refuses_prices_that_are_not_prices(exchange, adapter, price, words):
    exchange.routes[ROUTES[adapter]] = good(adapter, price)
    with pytest.raises(SourceError, match=words):
        adapter(base_url=exchange.url, timeout=TIMEOUT).price("BTC", "EUR")


MISSING = {
    Kraken: js({"error": [], "result": {"XXBTZEUR": {"a": ["1", "1", "1"]}}}),
    Coinbase: js({"data": {"base": "BTC", "currency": "EUR"}}),
    Bitstamp: js({"high": "1", "low": "1", "timestamp": "1717000000"}),
    Binance: js({"symbol": "BTCEUR"}),
}


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_adapter_names_a_missing_field(exchange, adapter):
    exchange.routes[ROUTES[adapter]] = MISSING[adapter]
    with pytest.raises(SourceError, match="missing"):
        adapter(base_url=exchange.url, timeout=TIMEOUT).price("BTC", "EUR")


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_adapter_times_out_on_a_hanging_exchange(exchange, adapter):
    exchange.routes[ROUTES[adapter]] = Answer(hang=True)
    with pytest.raises(SourceError, match="timed out"):
        adapter(base_url=exchange.url, timeout=0.3).price("BTC", "EUR")


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_adapter_on_a_closed_port(adapter):
    with pytest.raises(SourceError, match="unreachable"):
        adapter(base_url=closed_port_url(), timeout=TIMEOUT).price("BTC", "EUR")


def test_exchanges_own_error_formats(exchange):
    # Kraken: HTTP 200 with an error list
    exchange.routes["/0/public/Ticker?pair=XBTEUR"] = js(
        {"error": ["EQuery:Unknown asset pair"], "result": {}}
    )
    with pytest.raises(SourceError, match="EQuery:Unknown asset pair"):
        Kraken(base_url=exchange.url, timeout=TIMEOUT).price("BTC", "EUR")
    # Binance: 400 with code and msg
    exchange.routes["/api/v3/ticker/price?symbol=BTCEUR"] = js(
        {"code": -1121, "msg": "Invalid symbol."}, status=400
    )
    with pytest.raises(SourceError, match=r"HTTP 400: Invalid symbol\."):
        Binance(base_url=exchange.url, timeout=TIMEOUT).price("BTC", "EUR")
    # Coinbase: 4xx with an errors list
    exchange.routes["/v2/prices/BTC-EUR/spot"] = js(
        {"errors": [{"id": "not_found", "message": "Invalid base currency"}]}, status=404
    )
    with pytest.raises(SourceError, match="HTTP 404: Invalid base currency"):
        Coinbase(base_url=exchange.url, timeout=TIMEOUT).price("BTC", "EUR")


def test_an_answer_for_another_pair_is_refused(exchange):
    exchange.routes["/v2/prices/BTC-EUR/spot"] = coinbase_spot("BTC", "USD", "92000")
    with pytest.raises(SourceError, match="currency 'USD', not EUR"):
        Coinbase(base_url=exchange.url, timeout=TIMEOUT).price("BTC", "EUR")
    exchange.routes["/api/v3/ticker/price?symbol=BTCEUR"] = binance_price("ETHEUR", "3000")
    with pytest.raises(SourceError, match="symbol 'ETHEUR'"):
        Binance(base_url=exchange.url, timeout=TIMEOUT).price("BTC", "EUR")


def test_kraken_names_assets_its_way(exchange):
    exchange.routes["/0/public/Ticker?pair=ETHUSD"] = kraken_ticker("XETHZUSD", "3300.10")
    assert Kraken(base_url=exchange.url, timeout=TIMEOUT).price("ETH", "USD") == Decimal("3300.10")


# --- the ECB's reference rates --------------------------------------------------------------


def test_ecb_rates_and_usd_cross(exchange):
    exchange.routes["/eurofxref-daily.xml"] = ecb_xml({"USD": "1.0705", "BRL": "5.8915"})
    rates = EcbFx(url=f"{exchange.url}/eurofxref-daily.xml", timeout=TIMEOUT).rates()
    assert rates == {"EUR": 1, "USD": Decimal("1.0705"), "BRL": Decimal("5.8915")}
    # 1 USD in BRL = 5.8915 / 1.0705
    assert usd_to(rates, "BRL") == Decimal("5.8915") / Decimal("1.0705")
    with pytest.raises(SourceError, match="no FX rate for NGN"):
        usd_to(rates, "NGN")


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (HTML, "not the ECB.s XML"),
        (Answer(body=b"<gesmes:Envelope"), "not XML"),
        (Answer(body=b"<?xml version='1.0'?><root/>"), "no rates"),
        (ecb_xml({"USD": "-1.07"}), "not positive"),
        (
            Answer(body=b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>'),
            "DOCTYPE",
        ),
        (Answer(hang=True), "timed out"),
    ],
    ids=["html", "truncated", "no-cubes", "negative", "doctype", "hang"],
)
def test_ecb_refuses_garbage(exchange, answer, words):
    exchange.routes["/fx.xml"] = answer
    with pytest.raises(SourceError, match=words):
        EcbFx(url=f"{exchange.url}/fx.xml", timeout=0.3).rates()


# --- the median -----------------------------------------------------------------------------


def D(*values: str) -> list[Decimal]:
    return [Decimal(v) for v in values]


def quotes(**by_source: str) -> dict[str, Decimal]:
    return {name: Decimal(v) for name, v in by_source.items()}


def test_median_of_three_and_of_four():
    three = price_median(quotes(a="100", b="101", c="102"), outlier_pct=Decimal(3))
    assert (three.price, three.dropped) == (Decimal("101"), {})
    four = price_median(quotes(a="100", b="101", c="102", d="101.5"), outlier_pct=Decimal(3))
    assert four.price == Decimal("101.25")  # the mean of the middle two


def test_an_outlier_is_dropped():
    # given one source 20 % off the others
    result = price_median(quotes(kraken="85000", coinbase="85100", bitstamp="102000"),
                          outlier_pct=Decimal(3))  # fmt: skip
    # then it is dropped and the price is the median of the rest
    assert result.dropped == {"bitstamp": Decimal("102000")}
    assert result.price == Decimal("85050")
    # one wild quote doesn't make the honest ones look far from "the rest"
    result = price_median(quotes(a="100", b="100", c="100.5", d="200"), outlier_pct=Decimal(1))
    assert sorted(result.kept) == ["a", "b", "c"]
    assert result.price == Decimal("100")


def test_two_sources_that_disagree_are_no_price():
    with pytest.raises(NoConsensus, match="disagree"):
        price_median(quotes(a="100", b="110"), outlier_pct=Decimal(3))
    assert price_median(quotes(a="100", b="102"), outlier_pct=Decimal(3)).price == Decimal("101")


def test_one_source_and_none():
    assert price_median(quotes(a="85000.123456789"), outlier_pct=Decimal(3)).price == Decimal(
        "85000.12345679"
    )
    with pytest.raises(NoConsensus, match="no source answered"):
        price_median({}, outlier_pct=Decimal(3))
