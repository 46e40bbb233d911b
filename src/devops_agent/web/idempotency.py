"""``Idempotency-Key`` on POSTs that spend or grant credits: a retry replays the first answer.

The first request with a key reserves it (a row with no response yet, unique per
user and key) in a transaction of its own, does its work, then stores its status
and body. A retry with the same key and the same request gets the stored answer
and changes nothing; the same key with a different request, or while the first is
still running, gets 409 ``conflict``. When the work fails with an error (which by
contract changed nothing), the reservation is released so the client may retry.

The record is kept in the database, so a retry that lands on another worker still
replays. The reservation is committed before the work runs because the work may
call the network (Stripe) and must not sit inside a transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from devops_agent.db import Database
from devops_agent.web.errors import ApiError
from devops_agent.web.models import IdempotencyRecord

REPLAY_HEADER = "Idempotent-Replayed"

Work = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


def fingerprint(method: str, path: str, body: Any) -> str:
    """A digest of what was asked, to tell a true retry from a reused key."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


async def _reserve(db: Database, *, user_id: int, key: str, digest: str, now: datetime) -> JSONResponse | None:
    try:
        async with db.transaction() as session:
            session.add(IdempotencyRecord(user_id=user_id, key=key, fingerprint=digest, created_at=now))
        return None
    except IntegrityError:
        pass
    async with db.transaction() as session:
        record = (
            await session.execute(
                select(IdempotencyRecord).where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
            )
        ).scalar_one_or_none()
    if record is None:  # released between our insert and our read: the other request failed
        return await _reserve(db, user_id=user_id, key=key, digest=digest, now=now)
    if record.fingerprint != digest:
        raise ApiError(409, "conflict", "This Idempotency-Key was already used for a different request.")
    if record.response_body is None or record.status_code is None:
        raise ApiError(409, "conflict", "A request with this Idempotency-Key is still being processed; retry later.")
    return JSONResponse(record.response_body, status_code=record.status_code, headers={REPLAY_HEADER: "true"})


async def run_idempotent(
    db: Database,
    *,
    user_id: int,
    key: str | None,
    digest: str,
    now: datetime,
    work: Work,
) -> JSONResponse:
    """Run ``work`` once per (user, key); without a key just run it.

    ``work`` returns ``(status_code, json_body)``; any exception it raises releases the key.
    """
    if key is None:
        status, body = await work()
        return JSONResponse(body, status_code=status)
    replay = await _reserve(db, user_id=user_id, key=key, digest=digest, now=now)
    if replay is not None:
        return replay
    try:
        status, body = await work()
    except BaseException:
        async with db.transaction() as session:
            await session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.user_id == user_id,
                    IdempotencyRecord.key == key,
                    IdempotencyRecord.status_code.is_(None),
                )
            )
        raise
    async with db.transaction() as session:
        await session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key)
            .values(status_code=status, response_body=body)
        )
    return JSONResponse(body, status_code=status)


async def run_idempotent_post(
    db: Database, request: Request, body: BaseModel, *, user_id: int, key: str | None, now: datetime, work: Work
) -> JSONResponse:
    """``run_idempotent`` for a POST whose request is its path and its JSON body."""
    digest = fingerprint("POST", request.url.path, body.model_dump())
    return await run_idempotent(db, user_id=user_id, key=key, digest=digest, now=now, work=work)
