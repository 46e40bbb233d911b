"""``GET /metrics``: Prometheus metrics, for a bearer token or for localhost only.

With ``METRICS_TOKEN`` set, a scrape needs ``Authorization: Bearer <token>`` (401
otherwise), from anywhere. Without it, only requests from the loopback address are
answered (403 otherwise): Prometheus on the same host, or a proxy that passes the client
address (``X-Forwarded-For``, which uvicorn applies for a proxy on localhost). Behind a
proxy that does not, set the token.

A scrape reads the database once (the outbox backlog and the last books audit, in one
statement); everything else is in memory. What each metric means is written in
``devops_agent.metrics``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from devops_agent import metrics
from devops_agent.billing.books import AuditRun
from devops_agent.db import Database
from devops_agent.notifications.models import EmailOutbox, OutboxStatus
from devops_agent.web.api import errors
from devops_agent.web.errors import ApiError
from devops_agent.web.instrumentation import sample_pools

router = APIRouter(tags=["operations"])
log = logging.getLogger("devops_agent.web.metrics")

_BACKLOG = (OutboxStatus.PENDING.value, OutboxStatus.SENDING.value)


def _is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _allow(request: Request) -> None:
    token: str | None = request.app.state.settings.metrics_token
    if token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "unauthenticated", "Metrics need Authorization: Bearer <METRICS_TOKEN>.")
        return
    client = request.client.host if request.client else None
    if not _is_loopback(client):
        raise ApiError(403, "forbidden", "Metrics answer localhost only; set METRICS_TOKEN to scrape from elsewhere.")


async def read_snapshot(db: Database) -> metrics.Snapshot:
    """The outbox backlog and the last audit, in one statement; an empty snapshot if the database fails."""

    def last(column: Any) -> Any:
        return select(column).order_by(AuditRun.id.desc()).limit(1).scalar_subquery()

    backlog = select(func.count()).select_from(EmailOutbox).where(EmailOutbox.status.in_(_BACKLOG))
    query = select(
        backlog.scalar_subquery().label("backlog"),
        last(AuditRun.ok).label("ok"),
        last(AuditRun.discrepancies).label("discrepancies"),
        last(AuditRun.finished_at).label("finished_at"),
    )
    try:
        async with db.snapshot() as connection:
            row = (await connection.execute(query)).one()
    except (SQLAlchemyError, OSError) as exc:
        log.warning("metrics: the database did not answer", extra={"error": type(exc).__name__})
        return metrics.Snapshot()
    return metrics.Snapshot(
        outbox_backlog=int(row.backlog),
        audit_ok=None if row.ok is None else bool(row.ok),
        audit_discrepancies=row.discrepancies,
        audit_finished_at=row.finished_at.timestamp() if row.finished_at is not None else None,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics (Bearer METRICS_TOKEN, or localhost when it is unset)",
    response_class=Response,
    responses={
        200: {
            "content": {metrics.CONTENT_TYPE: {"schema": {"type": "string"}}},
            "description": "The Prometheus text exposition.",
        },
        **errors(401, 403),
    },
)
async def scrape(request: Request) -> Response:
    _allow(request)
    sample_pools(request.app.state.db)  # this worker's now; the others' from their last sample
    snapshot = await read_snapshot(request.app.state.db)
    body = metrics.exposition([metrics.ScrapeCollector(snapshot)])
    return Response(body, media_type=metrics.CONTENT_TYPE)
