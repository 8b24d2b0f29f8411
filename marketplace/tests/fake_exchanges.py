"""Local HTTP servers on 127.0.0.1 answering as the exchanges and the ECB do, for the price feed's
tests: each route gives a status and a body, or hangs until the test ends (a timeout)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    hang: bool = False


def js(data: Any, status: int = 200) -> Answer:
    return Answer(status=status, body=json.dumps(data).encode())


def kraken_ticker(key: str, last: str) -> Answer:
    """/0/public/Ticker as Kraken answers it: the pair under Kraken's own name (XXBTZEUR)."""
    return js({
        "error": [],
        "result": {key: {
            "a": [last, "1", "1.000"], "b": [last, "2", "2.000"], "c": [last, "0.0015"],
            "v": ["120.5", "1800.2"], "p": [last, last], "t": [1500, 25000],
            "l": [last, last], "h": [last, last], "o": last,
        }},
    })  # fmt: skip


def coinbase_spot(base: str, currency: str, amount: str) -> Answer:
    return js({"data": {"amount": amount, "base": base, "currency": currency}})


def bitstamp_ticker(last: str) -> Answer:
    return js({
        "timestamp": "1717000000", "open": last, "high": last, "low": last, "last": last,
        "volume": "812.3", "vwap": last, "bid": last, "ask": last, "side": "0",
        "open_24": last, "percent_change_24": "0.10",
    })  # fmt: skip


def binance_price(symbol: str, price: str) -> Answer:
    return js({"symbol": symbol, "price": price})


def ecb_xml(rates: dict[str, str], day: str = "2024-06-28") -> Answer:
    cubes = "\n".join(f"\t\t\t<Cube currency='{c}' rate='{r}'/>" for c, r in rates.items())
    body = f"""<?xml version="1.0" encoding="UTF-8"?>
<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">
\t<gesmes:subject>Reference rates</gesmes:subject>
\t<gesmes:Sender>
\t\t<gesmes:name>European Central Bank</gesmes:name>
\t</gesmes:Sender>
\t<Cube>
\t\t<Cube time='{day}'>
{cubes}
\t\t</Cube>
\t</Cube>
</gesmes:Envelope>"""
    return Answer(body=body.encode(), content_type="text/xml")


HTML = Answer(status=200, body=b"<!doctype html><html><body>Maintenance</body></html>",
              content_type="text/html")  # fmt: skip


class FakeExchange:
    """One server; `routes` maps a path with its query ("/api/v3/ticker/price?symbol=BTCEUR") to
    an Answer; an unknown route is a 404. `requests` lists what was asked."""

    def __init__(self) -> None:
        self.routes: dict[str, Answer] = {}
        self.requests: list[str] = []
        self.released = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append(self.path)
                answer = fake.routes.get(self.path, Answer(status=404, body=b"Not Found",
                                                           content_type="text/plain"))  # fmt: skip
                if answer.hang:
                    # Answers nothing until the test is over: the client's timeout must fire.
                    fake.released.wait(timeout=30)
                    return
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """A loopback address nothing listens on (connection refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
