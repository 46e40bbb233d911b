"""What the web process feeds into ``devops_agent.metrics``: request latencies and pool use.

The request histogram is observed by a pure ASGI middleware once the answer is sent:
one clock read at each end and one histogram observation, no database, no body
buffering. The route label is the template Starlette matched (``scope["route"]``).

Pool use is sampled by a background task of each worker every ``POOL_SAMPLE_SECONDS``
(and before each scrape), never on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devops_agent import metrics
from devops_agent.db import Database

POOL_SAMPLE_SECONDS = 5.0


class MetricsMiddleware:
    """Observes each HTTP request's duration under its method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or metrics.UNMATCHED
            metrics.REQUEST_SECONDS.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )


def sample_pools(db: Database) -> None:
    """Record this worker's pool use: SQLAlchemy's pool, and the charge's asyncpg pool when open."""
    pool: Any = db.engine.pool
    in_use = int(pool.checkedout()) if hasattr(pool, "checkedout") else 0
    idle = int(pool.checkedin()) if hasattr(pool, "checkedin") else 0
    metrics.DB_POOL.labels("engine", "in_use").set(in_use)
    metrics.DB_POOL.labels("engine", "idle").set(idle)
    driver = db.driver_pool
    if driver is not None:
        size, free = driver.get_size(), driver.get_idle_size()
        metrics.DB_POOL.labels("driver", "in_use").set(size - free)
        metrics.DB_POOL.labels("driver", "idle").set(free)


async def sample_pools_forever(db: Database, every: float = POOL_SAMPLE_SECONDS) -> None:
    """The worker's sampler (started by the app's lifespan, cancelled at shutdown)."""
    while True:
        with contextlib.suppress(Exception):  # a metric must never take the worker down
            sample_pools(db)
        await asyncio.sleep(every)
