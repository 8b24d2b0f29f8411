#!/usr/bin/env python3
"""A trading bot for the escrow P2P marketplace, using only the public REST API and `requests`.

    maker: publishes a sell offer (or reuses its open one), then every few seconds releases the
           trades on that offer that the buyer marked paid.
    taker: buys at once through POST /api/v1/match/ (the best offer that fits), marks the trade
           paid, then follows it until it is settled.

Every POST carries a fresh Idempotency-Key (a retried request is replayed, never done twice),
amounts travel as decimal strings, and a 429 is waited out as its Retry-After header says.

A real maker must confirm the fiat arrived in its bank account before releasing; this example
trusts the buyer, so run it against the demo (`make run`) only. See examples/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

import requests

log = logging.getLogger("bot")

FINAL_STATES = {"completed", "cancelled", "expired", "refunded", "split"}
RETRYABLE_STATUS = {502, 503, 504}
MAX_RETRY_AFTER = 60.0


class ApiError(Exception):
    """An error answer of the API: {"error": {"code", "message", "fields"}} and its status."""

    def __init__(self, status: int, code: str, message: str, fields: dict | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}


class Client:
    def __init__(self, base_url: str, *, token: str | None = None, retries: int = 5) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        if token:
            self.session.headers["Authorization"] = f"Token {token}"

    def login(self, username: str, password: str) -> None:
        body = self.post("/api/v1/auth/token/", {"username": username, "password": password})
        self.session.headers["Authorization"] = f"Token {body['token']}"

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v})

    def post(self, path: str, payload: dict | None = None) -> Any:
        return self.request("POST", path, json=payload or {})

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = path if path.startswith("http") else self.base_url + path
        headers = {}
        if method == "POST":
            # One key for all retries of this call: the server does the work at most once.
            headers["Idempotency-Key"] = str(uuid.uuid4())
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.session.request(method, url, headers=headers, timeout=15, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if last:
                    raise
                wait = min(2**attempt, 30)
                log.warning("%s %s: %s; retrying in %ss", method, path, exc, wait)
                time.sleep(wait)
                continue
            if response.status_code == 429 and not last:
                wait = _retry_after(response)
                log.warning("%s %s: rate limited; waiting %.0fs (Retry-After)", method, path, wait)
                time.sleep(wait)
                continue
            if response.status_code in RETRYABLE_STATUS and not last:
                wait = _retry_after(response, default=min(2**attempt, 30))
                log.warning(
                    "%s %s: %s; retrying in %.0fs", method, path, response.status_code, wait
                )
                time.sleep(wait)
                continue
            return _result(response)
        raise AssertionError("unreachable")


def _retry_after(response: requests.Response, default: float = 1.0) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", default)), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return default


def _result(response: requests.Response) -> Any:
    if response.status_code < 400:
        return response.json() if response.content else None
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        error = {"code": "http_error", "message": response.text[:200]}
    raise ApiError(
        response.status_code,
        error.get("code", "error"),
        error.get("message", ""),
        error.get("fields"),
    )


def _pages(client: Client, path: str, **params: Any) -> Any:
    """Every row of a cursor-paginated list ({"results": [...], "next": url-or-null})."""
    page = client.get(path, **params)
    while True:
        yield from page["results"]
        if not page.get("next"):
            return
        page = client.get(page["next"])


# --- maker --------------------------------------------------------------------------------------


def ensure_offer(client: Client, args: argparse.Namespace) -> dict:
    """The bot's open sell offer on the pair: its existing one, or a new one."""
    if args.offer_id:
        return client.get(f"/api/v1/offers/{args.offer_id}/")
    if args.username:
        mine = client.get(
            "/api/v1/offers/", maker=args.username, side="sell", asset=args.asset, fiat=args.fiat
        )["results"]
        if mine:
            offer = mine[0]
            log.info(
                "reusing offer #%s: sell %s %s at %s %s",
                offer["id"],
                offer["available"],
                offer["asset"],
                offer["effective_price"],
                offer["fiat"],
            )
            return offer
    payload: dict[str, Any] = {
        "side": "sell",
        "asset": args.asset,
        "fiat": args.fiat,
        "amount": args.amount,
        "min_fiat": args.min_fiat,
        "max_fiat": args.max_fiat,
        "payment_methods": args.payment_method or ["sepa"],
        "payment_window_minutes": args.payment_window,
        "terms": "Automated seller (examples/bot.py).",
    }
    if args.price:
        payload.update(price_type="fixed", price=args.price)
    else:
        payload.update(price_type="floating", margin_percent=args.margin)
    offer = client.post("/api/v1/offers/", payload)
    log.info(
        "posted offer #%s: sell %s %s at %s %s (%s-%s %s per trade)",
        offer["id"],
        offer["amount"],
        offer["asset"],
        offer["effective_price"],
        offer["fiat"],
        offer["min_fiat"],
        offer["max_fiat"],
        offer["fiat"],
    )
    return offer


def release_paid_trades(client: Client, offer_id: int, fund_password: str | None = None) -> int:
    """Release every paid trade on our offer; a trade that moved on meanwhile is skipped. A
    release is confirmed with the account password (the fund password while 2FA is off)."""
    released = 0
    for trade in _pages(client, "/api/v1/trades/", state="paid"):
        if trade["offer"] != offer_id or "release" not in trade.get("actions", []):
            continue
        log.info(
            "trade #%s: %s paid %s %s for %s %s; releasing",
            trade["id"],
            trade["buyer"],
            trade["fiat_amount"],
            trade["fiat"],
            trade["amount"],
            trade["asset"],
        )
        try:
            done = client.post(
                f"/api/v1/trades/{trade['id']}/release/", {"password": fund_password or ""}
            )
        except ApiError as exc:
            if exc.status == 409:
                log.warning("trade #%s moved on meanwhile: %s", trade["id"], exc.message)
                continue
            raise
        released += 1
        log.info("released trade #%s: now %s", done["id"], done["state"])
    return released


def run_maker(client: Client, args: argparse.Namespace) -> int:
    offer = ensure_offer(client, args)
    if args.stream_url:
        return run_maker_streaming(client, args, offer)
    while True:
        count = release_paid_trades(client, offer["id"], args.fund_password or args.password)
        log.info("pass done: %d trade(s) released", count)
        if args.once:
            return 0
        time.sleep(args.interval)


def stream_events(client: Client, url: str, *, after: str = "") -> Any:
    """The frames of /ws/v1/stream/, forever: a `hello` on each connect, then the account's
    events (the webhook bodies, each with an `id`). After a drop it reconnects with backoff and
    resumes from the last id it saw, so none is missed. Needs the `websockets` package."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    headers = {"Authorization": client.session.headers["Authorization"]}
    delay = 0.5
    while True:
        target = f"{url}?after={after}" if after else url
        try:
            with connect(target, additional_headers=headers, open_timeout=10) as socket:
                delay = 0.5
                for raw in socket:
                    frame = json.loads(raw)
                    if frame.get("type") == "hello":
                        after = after or frame.get("last_id") or ""
                    elif "id" in frame and "event" in frame:
                        after = frame["id"]
                    yield frame
        except InvalidStatus as exc:
            raise ApiError(exc.response.status_code, "stream_refused", "check the token") from None
        except (ConnectionClosed, OSError) as exc:
            log.warning(
                "stream dropped (%s); resuming from %s in %.1fs", exc, after or "now", delay
            )
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


def run_maker_streaming(client: Client, args: argparse.Namespace, offer: dict) -> int:
    """The maker, pushed instead of polling: a release pass once the stream is open (trades paid
    while it was away or connecting), then one whenever it says a trade was marked paid."""
    password = args.fund_password or args.password
    for frame in stream_events(client, args.stream_url):
        if frame.get("type") == "hello":
            log.info("following %s from event %s", args.stream_url, frame.get("last_id"))
        elif frame.get("event") == "trade.paid":
            log.info("stream %s: trade #%s marked paid", frame["id"], frame["trade"]["id"])
        else:
            continue
        count = release_paid_trades(client, offer["id"], password)
        log.info("pass done: %d trade(s) released", count)
        if args.once and count:
            return 0
    return 0


# --- taker --------------------------------------------------------------------------------------


def run_taker(client: Client, args: argparse.Namespace) -> int:
    payload = {
        "side": "buy",
        "asset": args.asset,
        "fiat": args.fiat,
        "fiat_amount": args.fiat_amount,
    }
    if args.payment_method:
        payload["payment_method"] = args.payment_method[0]
    try:
        trade = client.post("/api/v1/match/", payload)
    except ApiError as exc:
        if exc.status in (404, 409):
            log.warning("no trade: %s", exc.message)
            return 2
        raise
    log.info(
        "took trade #%s: buy %s %s from %s for %s %s, pay by %s",
        trade["id"],
        trade["amount"],
        trade["asset"],
        trade["seller"],
        trade["fiat_amount"],
        trade["fiat"],
        trade["payment_deadline"],
    )
    # Here a real buyer sends the fiat (trade["payment_method"]) before saying so.
    try:
        trade = client.post(f"/api/v1/trades/{trade['id']}/mark-paid/")
    except ApiError as exc:
        if exc.status == 409:
            log.warning("trade #%s could not be marked paid: %s", trade["id"], exc.message)
            return 2
        raise
    log.info("marked trade #%s paid; waiting for the seller to release", trade["id"])
    state = trade["state"]
    while not args.once and state not in FINAL_STATES:
        time.sleep(args.interval)
        trade = client.get(f"/api/v1/trades/{trade['id']}/")
        if trade["state"] != state:
            state = trade["state"]
            log.info("trade #%s is now %s", trade["id"], state)
    return 0


# --- command line -------------------------------------------------------------------------------


def _decimal(text: str) -> str:
    """Validate an amount but keep it a string: it goes over JSON as one."""
    try:
        Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--token", help="an account token or API key instead of a password")
    parser.add_argument(
        "--fund-password",
        help="the account password that confirms releases (default: --password)",
    )
    parser.add_argument("--mode", choices=["maker", "taker"], required=True)
    parser.add_argument("--asset", default="BTC")
    parser.add_argument("--fiat", default="EUR")
    parser.add_argument(
        "--payment-method", action="append", help="a payment method code; repeatable"
    )
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between polls")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.add_argument(
        "--stream-url",
        help="maker: follow ws://.../ws/v1/stream/ (pushed trade events) instead of polling; "
        "with --once, exit after the first release",
    )
    maker = parser.add_argument_group("maker")
    maker.add_argument("--offer-id", type=int, help="release trades on this existing offer")
    maker.add_argument("--price", type=_decimal, help="fixed price (fiat per unit)")
    maker.add_argument(
        "--margin", type=_decimal, default="1.0", help="percent over the index if no --price"
    )
    maker.add_argument("--amount", type=_decimal, default="0.05", help="asset offered in all")
    maker.add_argument("--min-fiat", type=_decimal, default="50")
    maker.add_argument("--max-fiat", type=_decimal, default="2000")
    maker.add_argument("--payment-window", type=int, default=30, help="minutes")
    taker = parser.add_argument_group("taker")
    taker.add_argument("--fiat-amount", type=_decimal, default="100")
    args = parser.parse_args(argv)
    if not args.token and not (args.username and args.password):
        parser.error("give --username and --password, or --token")
    if args.mode == "maker" and not (args.fund_password or args.password):
        parser.error("a maker releases trades: give --password or --fund-password")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s {args.mode}: %(message)s"
    )
    client = Client(args.base_url, token=args.token)
    try:
        if not args.token:
            client.login(args.username, args.password)
            log.info("logged in as %s at %s", args.username, args.base_url)
        return run_maker(client, args) if args.mode == "maker" else run_taker(client, args)
    except ApiError as exc:
        log.error("%s", exc)
        return 1
    except requests.RequestException as exc:
        log.error("cannot reach %s: %s", args.base_url, exc)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
