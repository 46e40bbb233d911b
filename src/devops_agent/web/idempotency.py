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

A reservation is a lease (``IDEMPOTENCY_LEASE_SECONDS``, from its ``created_at``): a
process killed during the work leaves the record "in progress", and once the lease has
run out a retry takes the reservation over (one conditional UPDATE, so one retry wins)
and runs the work again, and ``devops-agent recover`` releases such records. Running
the work again is safe because its effects are named by the request: a purchase
carries the request's key (``billing.purchase_for_request``) and an upgrade's grant
is keyed by it (``billing.change_tier``), so a second run finds what the first one
committed and answers it instead of applying it twice. With Stripe, a plan change
carries the key to Stripe, and a pack checkout is only a pending purchase until paid
(a second run opens another checkout; the lost one is never shown, so never paid).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from devops_agent.db import Database, rowcount
from devops_agent.web.errors import ApiError
from devops_agent.web.models import IdempotencyRecord

REPLAY_HEADER = "Idempotent-Replayed"
DEFAULT_LEASE = timedelta(minutes=2)

Work = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


def fingerprint(method: str, path: str, body: Any) -> str:
    """A digest of what was asked, to tell a true retry from a reused key."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


async def _take_over(db: Database, record: IdempotencyRecord, *, now: datetime, lease: timedelta) -> bool:
    """Renew a reservation whose lease ran out (its request died in the work); False if another retry did."""
    async with db.transaction() as session:
        taken = await session.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.id == record.id,
                IdempotencyRecord.status_code.is_(None),
                IdempotencyRecord.created_at <= now - lease,
            )
            .values(created_at=now)
        )
    return rowcount(taken) == 1


async def release_stale(db: Database, *, now: datetime, lease: timedelta = DEFAULT_LEASE) -> int:
    """Release the reservations left in progress past their lease (``devops-agent recover``); return how many."""
    async with db.transaction() as session:
        released = await session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.status_code.is_(None), IdempotencyRecord.created_at <= now - lease
            )
        )
    return rowcount(released)


async def _release(db: Database, *, user_id: int, key: str) -> None:
    async with db.transaction() as session:
        await session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.user_id == user_id,
                IdempotencyRecord.key == key,
                IdempotencyRecord.status_code.is_(None),
            )
        )


async def _reserve(
    db: Database, *, user_id: int, key: str, digest: str, now: datetime, lease: timedelta = DEFAULT_LEASE
) -> JSONResponse | None:
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
        return await _reserve(db, user_id=user_id, key=key, digest=digest, now=now, lease=lease)
    if record.fingerprint != digest:
        raise ApiError(409, "conflict", "This Idempotency-Key was already used for a different request.")
    if record.response_body is None or record.status_code is None:
        if record.created_at <= now - lease and await _take_over(db, record, now=now, lease=lease):
            return None
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
    lease: timedelta = DEFAULT_LEASE,
) -> JSONResponse:
    """Run ``work`` once per (user, key); without a key just run it.

    ``work`` returns ``(status_code, json_body)``; any exception it raises releases the key
    (a cancellation too: shielded, so the release completes).
    """
    if key is None:
        status, body = await work()
        return JSONResponse(body, status_code=status)
    replay = await _reserve(db, user_id=user_id, key=key, digest=digest, now=now, lease=lease)
    if replay is not None:
        return replay
    try:
        status, body = await work()
    except BaseException:
        await asyncio.shield(_release(db, user_id=user_id, key=key))
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
    lease = timedelta(seconds=request.app.state.settings.idempotency_lease_seconds)
    return await run_idempotent(db, user_id=user_id, key=key, digest=digest, now=now, work=work, lease=lease)
