"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from devops_agent.migrate import is_current
from devops_agent.web.deps import DatabaseDep

router = APIRouter(tags=["operations"])


class HealthOut(BaseModel):
    status: str
    checks: dict[str, Any] | None = None


@router.get("/healthz", response_model=HealthOut, summary="The process is up")
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


@router.get(
    "/readyz",
    response_model=HealthOut,
    summary="The database answers and its schema is current",
    responses={503: {"model": HealthOut, "description": "Not ready: database down or migrations pending."}},
)
async def readyz(db: DatabaseDep) -> HealthOut | JSONResponse:
    checks: dict[str, object] = {}
    try:
        # One connection at a time: the SQLite pool holds a single connection.
        async with db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
        checks["migrations"] = "current" if await is_current(db) else "pending"
    except Exception as exc:  # any failure to reach the database means "not ready"
        checks["database"] = f"unreachable: {type(exc).__name__}"
    ready = checks.get("database") == "ok" and checks.get("migrations") == "current"
    body = HealthOut(status="ok" if ready else "unavailable", checks=checks)
    if ready:
        return body
    return JSONResponse(body.model_dump(), status_code=503)
