"""Prometheus metrics of DevOps Agent (``GET /metrics``), with the ``prometheus-client`` library.

What is counted where it happens (an observation costs a few microseconds, measured 6 to
8 us on a busy two-core host, in memory or in multiprocess mode; no I/O, no database):

* ``devops_agent_http_request_duration_seconds{method, route, status}``: every request,
  by its route template (``/api/conversations/{conversation_id}``, never the raw path,
  which would make one series per id); requests no route matched count as ``unmatched``;
* ``devops_agent_charges_total`` / ``devops_agent_credits_charged_total{action}``: the
  agent's charges (``agent_message`` or the tool's name), and
  ``devops_agent_refunds_total`` / ``devops_agent_credits_refunded_total{action}``;
* ``devops_agent_payment_required_total{reason}``: 402 answers, by error code;
* ``devops_agent_pack_purchases_total{outcome}``: pack purchases (``completed`` in demo
  mode, ``checkout`` when Stripe Checkout was started);
* ``devops_agent_webhook_events_total{type, outcome}``: Stripe events (``applied``,
  ``ignored``, ``duplicate``, ``rejected``, ``invalid``).

What is read when Prometheus scrapes (``ScrapeCollector``, one short read):

* ``devops_agent_outbox_backlog``: emails waiting in the outbox;
* ``devops_agent_books_audit_ok``, ``..._discrepancies``, ``..._last_run_timestamp_seconds``:
  the last ``devops-agent audit``.

And ``devops_agent_db_pool_connections{pool, state}``: each worker's database pools
(SQLAlchemy's and the charge's asyncpg pool), sampled every few seconds by the worker
itself and summed over the live workers.

Several workers (``devops-agent serve --workers N``) share the counts through the
library's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` names a directory where each
worker keeps its values in memory-mapped files, and a scrape answered by any worker adds
them up. The variable must be set before this module is first imported in a worker
(``serve`` sets it, and empties the directory, before the workers start).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED = "unmatched"

REQUEST_SECONDS = Histogram(
    "devops_agent_http_request_duration_seconds",
    "Time to answer a request, by route template",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
CHARGES = Counter("devops_agent_charges", "Charges made by the agent, by action", ["action"])
CREDITS_CHARGED = Counter("devops_agent_credits_charged", "Credits charged by the agent, by action", ["action"])
REFUNDS = Counter("devops_agent_refunds", "Charges refunded after a failure on our side, by action", ["action"])
CREDITS_REFUNDED = Counter("devops_agent_credits_refunded", "Credits refunded, by action", ["action"])
PAYMENT_REQUIRED = Counter("devops_agent_payment_required", "402 answers, by reason (the error code)", ["reason"])
PACK_PURCHASES = Counter("devops_agent_pack_purchases", "Credit pack purchases, by outcome", ["outcome"])
WEBHOOK_EVENTS = Counter(
    "devops_agent_webhook_events", "Stripe webhook deliveries, by type and outcome", ["type", "outcome"]
)
DB_POOL = Gauge(
    "devops_agent_db_pool_connections",
    "Database connections of the workers' pools, by pool and state (in_use, idle)",
    ["pool", "state"],
    multiprocess_mode="livesum",
)


def count_charge(action: str, credits: int) -> None:
    CHARGES.labels(action).inc()
    CREDITS_CHARGED.labels(action).inc(credits)


def count_refund(action: str, credits: int) -> None:
    REFUNDS.labels(action).inc()
    CREDITS_REFUNDED.labels(action).inc(credits)


def webhook_outcome(*, duplicate: bool, outcome: str, rejected: bool = False) -> str:
    """A webhook's outcome as a label: a few values, never the free text (it names ids)."""
    if rejected:
        return "rejected"
    if duplicate:
        return "duplicate"
    return "ignored" if outcome.startswith("ignored") else "applied"


# --- scrape-time figures -------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Figures read from the database for one scrape (None: unknown, e.g. the database is down)."""

    outbox_backlog: int | None = None
    audit_ok: bool | None = None
    audit_discrepancies: int | None = None
    audit_finished_at: float | None = None


class ScrapeCollector(Collector):
    """The figures of one scrape, added to the registry it is collected from."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        up = GaugeMetricFamily("devops_agent_metrics_database_up", "1 when this scrape could read the database")
        up.add_metric([], 0 if s.outbox_backlog is None else 1)
        yield up
        if s.outbox_backlog is not None:
            yield GaugeMetricFamily(
                "devops_agent_outbox_backlog", "Emails waiting in the outbox (pending)", value=s.outbox_backlog
            )
        if s.audit_ok is not None:
            yield GaugeMetricFamily(
                "devops_agent_books_audit_ok",
                "1 when the last devops-agent audit found the books in order",
                value=int(s.audit_ok),
            )
            yield GaugeMetricFamily(
                "devops_agent_books_audit_discrepancies",
                "Discrepancies found by the last devops-agent audit",
                value=s.audit_discrepancies or 0,
            )
            yield GaugeMetricFamily(
                "devops_agent_books_audit_last_run_timestamp_seconds",
                "When the last devops-agent audit finished (Unix time)",
                value=s.audit_finished_at or 0,
            )


def _reap_dead_workers(path: str) -> None:
    """Forget the live gauges of workers that died (a SIGKILLed worker never says so itself)."""
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        match = re.search(r"_(\d+)\.db$", name)
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
        except PermissionError:  # alive, another user's
            pass


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """The text exposition of every worker's metrics (multiprocess mode) or this process's, then ``extra``."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        _reap_dead_workers(path)
        shared = CollectorRegistry()
        multiprocess.MultiProcessCollector(shared, path)  # type: ignore[no-untyped-call]
        text = generate_latest(shared)
    else:
        text = generate_latest(REGISTRY)
    scraped = CollectorRegistry()
    for collector in extra:
        scraped.register(collector)
    return text + generate_latest(scraped)
