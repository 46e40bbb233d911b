"""What the web process feeds into ``devops_agent.metrics``: request latencies and pool use.

The request histogram is observed by the request log's pure ASGI middleware once the
answer is sent: one clock read at each end and one histogram observation, no database,
no body buffering. The route label is the template Starlette matched (``scope["route"]``).

Pool use is sampled by a background task of each worker every ``POOL_SAMPLE_SECONDS``
(and before each scrape), never on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.types import Scope

from devops_agent import metrics
from devops_agent.db import Database

POOL_SAMPLE_SECONDS = 5.0


def observe_request(scope: Scope, status: int, seconds: float) -> None:
    """Observe one answered request under its method, route template and status.

    Called by the request log's middleware (``web.logging``), which already times every
    request: one middleware, one clock pair, one histogram observation.
    """
    route = scope.get("route")
    template = getattr(route, "path", None) or metrics.UNMATCHED
    metrics.REQUEST_SECONDS.labels(scope["method"], template, str(status)).observe(seconds)


def sample_pools(db: Database) -> None:
    """Record this worker's use of its connection pool."""
    pool: Any = db.engine.pool
    in_use = int(pool.checkedout()) if hasattr(pool, "checkedout") else 0
    idle = int(pool.checkedin()) if hasattr(pool, "checkedin") else 0
    metrics.DB_POOL.labels("engine", "in_use").set(in_use)
    metrics.DB_POOL.labels("engine", "idle").set(idle)


async def sample_pools_forever(db: Database, every: float = POOL_SAMPLE_SECONDS) -> None:
    """The worker's sampler (started by the app's lifespan, cancelled at shutdown)."""
    while True:
        with contextlib.suppress(Exception):  # a metric must never take the worker down
            sample_pools(db)
        await asyncio.sleep(every)
