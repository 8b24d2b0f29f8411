"""Adapters for public price sources, each reading one exchange's own answer format.

An adapter asks one URL for one pair and returns a positive Decimal, or raises SourceError with
a short reason (timed out, unreachable, HTTP status, not JSON, a field missing, a price that is
zero, negative or absurd). It never retries and never touches the database: the price feed
(marketplace.services.prices) calls every source in parallel, takes the median and decides what
a failure means. Each base URL comes from settings (PRICE_SOURCE_URLS) so that tests point the
adapters at local servers answering in each exchange's format.

Formats (as the exchanges document them):
- Kraken     GET /0/public/Ticker?pair=XBTEUR ->
             {"error": [], "result": {"XXBTZEUR": {"a": [...], "b": [...], "c": ["<last>", "<lot>"],
             ...}}}; failures come as HTTP 200 with {"error": ["EQuery:Unknown asset pair"]}.
- Coinbase   GET /v2/prices/BTC-EUR/spot -> {"data": {"amount": "<price>", "base": "BTC",
             "currency": "EUR"}}; failures as 4xx with {"errors": [{"id": ..., "message": ...}]}.
- Bitstamp   GET /api/v2/ticker/btceur/ -> {"last": "<price>", "bid": ..., "ask": ..., "high": ...,
             "low": ..., "vwap": ..., "volume": ..., "open": ..., "timestamp": "<unix>"}.
- Binance    GET /api/v3/ticker/price?symbol=BTCEUR -> {"symbol": "BTCEUR", "price": "<price>"};
             failures as 4xx with {"code": -1121, "msg": "Invalid symbol."}.
- ECB (FX)   GET eurofxref-daily.xml -> <gesmes:Envelope ...><Cube><Cube time="YYYY-MM-DD">
             <Cube currency="USD" rate="1.0705"/>...: units of each currency per 1 EUR.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import urllib3

# No ticker or FX file is anywhere near this; a bigger answer is not one.
MAX_BODY_BYTES = 256 * 1024
# A price above this (fiat per unit) is garbage, not a market (it would not fit the price field).
MAX_PRICE = Decimal("1e15")

_pool = urllib3.PoolManager(num_pools=8, maxsize=4, retries=False)


class SourceError(Exception):
    """A source gave no usable price; the message says why, in a few words."""


def http_get(url: str, *, timeout: float, params: Mapping[str, str] | None = None) -> bytes:
    """The body of a 200 answer to GET `url`, at most MAX_BODY_BYTES; SourceError otherwise.
    `timeout` bounds the connection and each read (a source that hangs costs at most that)."""
    try:
        response = _pool.request(
            "GET",
            url,
            fields=dict(params or {}),
            headers={"Accept": "application/json, application/xml", "User-Agent": "p2p-price-feed"},
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            redirect=False,
            preload_content=False,
        )
    except urllib3.exceptions.NewConnectionError:  # (a ConnectTimeoutError too, in urllib3 2)
        raise SourceError("unreachable (connection refused)") from None
    except urllib3.exceptions.TimeoutError:
        raise SourceError("timed out") from None
    except urllib3.exceptions.HTTPError as exc:
        raise SourceError(f"unreachable ({type(exc).__name__})") from None
    try:
        body = response.read(MAX_BODY_BYTES + 1)
    except urllib3.exceptions.TimeoutError:
        raise SourceError("timed out") from None
    except urllib3.exceptions.HTTPError as exc:
        raise SourceError(f"broken answer ({type(exc).__name__})") from None
    finally:
        response.release_conn()
    if len(body) > MAX_BODY_BYTES:
        raise SourceError("answer too large")
    if response.status != 200:
        detail = _error_detail(body)
        raise SourceError(f"HTTP {response.status}{': ' + detail if detail else ''}")
    return body


def _error_detail(body: bytes) -> str:
    """The exchange's own error message, when the body is its JSON error format."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    if isinstance(data.get("msg"), str):  # Binance
        return str(data["msg"])[:80]
    errors = data.get("errors") or data.get("error")  # Coinbase, Kraken
    if isinstance(errors, list) and errors:
        first = errors[0]
        text = first.get("message", "") if isinstance(first, dict) else first
        return str(text)[:80]
    return ""


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise SourceError("not JSON") from None


def positive_price(value: Any, *, what: str = "price") -> Decimal:
    """A price as the exchanges send it (a decimal string, sometimes a JSON number), refused when
    missing, not a number, zero, negative or absurd."""
    if isinstance(value, bool) or not isinstance(value, (str, Decimal)):
        raise SourceError(f"{what} missing or not a number")
    try:
        price = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise SourceError(f"{what} not a number") from None
    if not price.is_finite():
        raise SourceError(f"{what} not a number")
    if price <= 0:
        raise SourceError(f"{what} not positive ({value})")
    if price >= MAX_PRICE:
        raise SourceError(f"{what} absurd ({value})")
    return price


def _field(data: Any, *path: str | int) -> Any:
    """data[path[0]][path[1]]..., or SourceError naming the first missing step."""
    for step in path:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            raise SourceError(f"field {step!r} missing") from None
    return data


class PriceSource:
    """One exchange's ticker. `assets` and `fiats` are the pairs it is asked for directly; the
    feed derives other fiats from its USD price through the FX source."""

    name: ClassVar[str]
    assets: ClassVar[frozenset[str]]
    fiats: ClassVar[frozenset[str]]

    def __init__(self, *, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def quotes(self, asset: str, fiat: str) -> bool:
        return asset in self.assets and fiat in self.fiats

    def price(self, asset: str, fiat: str) -> Decimal:
        raise NotImplementedError


class Kraken(PriceSource):
    name = "kraken"
    assets = frozenset({"BTC", "ETH", "USDT"})
    fiats = frozenset({"USD", "EUR", "GBP", "CAD", "JPY", "CHF", "AUD"})
    _SYMBOLS: ClassVar[dict[str, str]] = {"BTC": "XBT"}

    def price(self, asset: str, fiat: str) -> Decimal:
        pair = f"{self._SYMBOLS.get(asset, asset)}{fiat}"
        data = parse_json(
            http_get(
                f"{self.base_url}/0/public/Ticker", timeout=self.timeout, params={"pair": pair}
            )
        )
        if not isinstance(data, dict):
            raise SourceError("not a ticker")
        errors = data.get("error")
        if errors:
            raise SourceError(
                f"error: {str(errors[0] if isinstance(errors, list) else errors)[:80]}"
            )
        result = _field(data, "result")
        # The answer's key is Kraken's own name of the pair (XXBTZEUR for XBTEUR): the one entry.
        if not isinstance(result, dict) or len(result) != 1:
            raise SourceError("result is not one pair")
        (ticker,) = result.values()
        return positive_price(_field(ticker, "c", 0), what="last trade price (c)")


class Coinbase(PriceSource):
    name = "coinbase"
    assets = frozenset({"BTC", "ETH", "USDT"})
    fiats = frozenset(
        {"USD", "EUR", "GBP", "CAD", "AUD", "CHF", "JPY", "SGD", "BRL", "MXN", "NGN", "KES", "INR"}
    )

    def price(self, asset: str, fiat: str) -> Decimal:
        data = parse_json(
            http_get(f"{self.base_url}/v2/prices/{asset}-{fiat}/spot", timeout=self.timeout)
        )
        quote = _field(data, "data")
        for key, expected in (("base", asset), ("currency", fiat)):
            if isinstance(quote, dict) and key in quote and quote[key] != expected:
                raise SourceError(f"answered {key} {quote[key]!r}, not {expected}")
        return positive_price(_field(quote, "amount"), what="amount")


class Bitstamp(PriceSource):
    name = "bitstamp"
    assets = frozenset({"BTC", "ETH", "USDT"})
    fiats = frozenset({"USD", "EUR", "GBP"})

    def price(self, asset: str, fiat: str) -> Decimal:
        pair = f"{asset}{fiat}".lower()
        data = parse_json(http_get(f"{self.base_url}/api/v2/ticker/{pair}/", timeout=self.timeout))
        return positive_price(_field(data, "last"), what="last")


class Binance(PriceSource):
    name = "binance"
    # Binance quotes crypto against stablecoins and a few fiats (USDT/EUR is listed inverted, as
    # EURUSDT, so it is not asked here); it has no USD market, so nothing is derived from it.
    assets = frozenset({"BTC", "ETH"})
    fiats = frozenset({"EUR", "TRY", "BRL", "PLN", "JPY", "MXN", "ZAR"})

    def price(self, asset: str, fiat: str) -> Decimal:
        symbol = f"{asset}{fiat}"
        data = parse_json(
            http_get(
                f"{self.base_url}/api/v3/ticker/price",
                timeout=self.timeout,
                params={"symbol": symbol},
            )
        )
        if isinstance(data, dict) and "symbol" in data and data["symbol"] != symbol:
            raise SourceError(f"answered symbol {data['symbol']!r}, not {symbol}")
        return positive_price(_field(data, "price"))


SOURCES: dict[str, type[PriceSource]] = {s.name: s for s in (Kraken, Coinbase, Bitstamp, Binance)}


# --- FX: fiat against fiat, to derive a fiat a source lacks from its USD price ------------------


class EcbFx:
    """The ECB's euro foreign exchange reference rates (daily, about 30 currencies)."""

    name = "ecb"

    def __init__(self, *, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    def rates(self) -> dict[str, Decimal]:
        """Units of each currency per 1 EUR (EUR itself included, at 1)."""
        return _ecb_rates(http_get(self.url, timeout=self.timeout))


_ECB = "{http://www.ecb.int/vocabulary/2002-08-01/eurofxref}"


def _ecb_rates(body: bytes) -> dict[str, Decimal]:
    # A DOCTYPE could declare entities (expansion bombs); the ECB's file has none.
    if b"<!DOCTYPE" in body[:2048].upper() or b"<!ENTITY" in body.upper():
        raise SourceError("not the ECB's XML (has a DOCTYPE)")
    try:
        root = ET.fromstring(body)  # noqa: S314 - capped size, no DOCTYPE/entities (above)
    except ET.ParseError:
        raise SourceError("not XML") from None
    rates = {"EUR": Decimal(1)}
    for cube in root.iter(f"{_ECB}Cube"):
        currency, rate = cube.get("currency"), cube.get("rate")
        if currency and rate is not None:
            rates[currency.upper()] = positive_price(rate, what=f"rate of {currency}")
    if len(rates) == 1:
        raise SourceError("no rates in the answer")
    return rates


def usd_to(rates: Mapping[str, Decimal], fiat: str) -> Decimal:
    """Units of `fiat` per 1 USD from rates against a common base."""
    if "USD" not in rates or fiat not in rates:
        raise SourceError(f"no FX rate for {'USD' if 'USD' not in rates else fiat}")
    return rates[fiat] / rates["USD"]
