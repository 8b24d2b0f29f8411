"""The Prometheus figures. Requests are counted in the process that served them (with several
gunicorn workers, in prometheus-client's multiprocess files under PROMETHEUS_MULTIPROC_DIR, summed
at scrape time); the business figures are read from PostgreSQL and Redis when scraped, so every
web process reports the same numbers and nothing is lost when one restarts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from operations import selectors

PREFIX = "p2p"

requests_total = Counter(
    f"{PREFIX}_http_requests_total",
    "HTTP requests served, by view and status code.",
    ["view", "method", "status"],
)
request_seconds = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "Time to answer an HTTP request, by view.",
    ["view"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def _gauge(name: str, doc: str, value: float, **labels: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


class BusinessCollector(Collector):
    """Figures read from the database and the broker at scrape time."""

    def collect(self) -> Iterator[Metric]:
        trades = GaugeMetricFamily(f"{PREFIX}_trades", "Trades by escrow state.", labels=["state"])
        for state, n in sorted(selectors.trades_by_state().items()):
            trades.add_metric([state], n)
        yield trades
        settlement = selectors.settlement_figures()
        yield _gauge(
            "settlement_lag_seconds",
            "Age of the oldest pending settlement (0: none pending). Alert when it grows.",
            settlement["oldest_pending_seconds"],
        )
        yield _gauge(
            "settlement_last_lag_seconds",
            "Queueing to settled, for the newest settled trade.",
            settlement["last_lag_seconds"],
        )
        yield _gauge("settlements_pending", "Settlements waiting.", settlement["pending"])
        yield _gauge("settlements_done", "Settlements posted.", settlement["done"])
        yield _gauge(
            "settlements_failed",
            "Settlements out of every queue after SETTLEMENT_MAX_ATTEMPTS: a moderator must act.",
            settlement["failed"],
        )
        yield _gauge(
            "ledger_seal_lag_seconds",
            "Age of the oldest committed transfer the sequencer has not sealed (0: none).",
            selectors.seal_lag_seconds(),
        )
        checkpoint = selectors.checkpoint_figures()
        yield _gauge(
            "ledger_checkpoint_age_seconds",
            "Age of the newest signed checkpoint (-1: none yet). Old is fine on a quiet ledger.",
            checkpoint["age_seconds"],
        )
        yield _gauge(
            "ledger_checkpoint_tree_size",
            "Entries the newest checkpoint holds.",
            checkpoint["tree_size"],
        )
        yield _gauge(
            "ledger_uncovered_seconds",
            "How long the oldest sealed entry has waited for a checkpoint (/readyz fails past "
            "3 x LEDGER_CHECKPOINT_INTERVAL).",
            checkpoint["uncovered_seconds"],
        )
        yield _gauge(
            "withdrawals_queued",
            "Withdrawals held and waiting for a worker.",
            selectors.withdrawals_queued(),
        )
        webhooks = selectors.webhook_failures()
        yield _gauge(
            "webhook_deliveries_failed", "Webhook deliveries given up on.", webhooks["failed"]
        )
        yield _gauge(
            "webhook_deliveries_retrying",
            "Pending webhook deliveries that have failed at least once.",
            webhooks["retrying"],
        )
        queued = selectors.celery_queue_length()
        yield _gauge(
            "celery_queue_length",
            "Messages waiting in the Celery queue (-1: Redis did not answer).",
            -1 if queued is None else queued,
        )


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets: this process's request counters (or every worker's, in
    multiprocess mode) followed by the business figures."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY

    registry: Any
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    business = CollectorRegistry()
    business.register(BusinessCollector())
    return generate_latest(registry) + generate_latest(business), CONTENT_TYPE_LATEST
