"""A restarted or cut PostgreSQL costs a 503 to retry, never a 500, and the service recovers.

The app runs on a database of its own (so cutting its connections touches no other
test). ``pg_terminate_backend`` stands in for a database restart or a failover:
between requests (pooled connections die while idle) and mid-request (the request's
statement is waiting on a row lock when its connection is cut), on a purchase and
on a charge in a transaction of its own (as the agent charges a tool call).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from devops_agent import billing
from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.catalog_sync import sync_catalog
from devops_agent.db import Database
from devops_agent.migrate import upgrade
from devops_agent.web.deps import CurrentUser, DatabaseDep, NowDep
from tests.scratch_pg import brand_new_postgres, terminate_backends
from tests.web.conftest import build_app, make_client, register

pytestmark = pytest.mark.postgres
POOL_SIZE = 3


@pytest.fixture
async def own_db() -> AsyncIterator[tuple[Database, str]]:
    """A migrated, seeded database of the test's own, and its plain URL."""
    async with brand_new_postgres() as url:
        db = Database(url, pool_size=POOL_SIZE)
        await upgrade(db)
        async with db.transaction() as session:
            await sync_catalog(session, load_catalog())
        try:
            yield db, url
        finally:
            await db.dispose()


def _add_tool_charge_route(app: FastAPI) -> None:
    """A tool call's charge as the agent makes it: a charge in a transaction of its own."""

    async def tool_charge(user: CurrentUser, db: DatabaseDep, now: NowDep) -> dict[str, int]:
        async with db.transaction() as session:
            result = await billing.charge(session, user_id=user.id, amount=1, action_type="tool_call", now=now)
        return {"credits_remaining": result.balance.total}

    app.add_api_route("/api/test-tool-charge", tool_charge, methods=["POST"])


@pytest.fixture
async def client(own_db: tuple[Database, str], tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(own_db[0], tmp_path)
    _add_tool_charge_route(app)
    async with make_client(app) as c:
        c.user = await register(c)  # type: ignore[attr-defined]
        yield c


def _assert_retryable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"]
    assert response.json()["error"] == "service_unavailable"


async def _recovers(send: Any, allowed_failures: int) -> None:
    """``send()`` answers 503 (never anything else) at most ``allowed_failures`` times, then 200."""
    for _ in range(allowed_failures + 1):
        response = await send()

        if response.status_code == 200:
            return
        _assert_retryable(response)
    pytest.fail(f"still failing after {allowed_failures} retries: {response.status_code} {response.text}")


def _database_name(url: str) -> str:
    name = make_url(url).database
    assert name is not None
    return name


async def test_connections_closed_by_the_server_between_requests_are_replaced_without_an_error(
    own_db: tuple[Database, str], client: httpx.AsyncClient
) -> None:
    """A restart while the pools sit idle: the next requests get new connections, no error."""
    _db, url = own_db
    for _ in range(3):  # warm the pool
        assert (await client.get("/api/subscription")).status_code == 200
        assert (await client.post("/api/test-tool-charge")).status_code == 200
    assert await terminate_backends(_database_name(url)) >= 1
    await asyncio.sleep(0.2)  # the loop reads the closed sockets
    balance = (await client.get("/api/subscription")).json()["subscription"]["credits_remaining"]
    for n in range(1, POOL_SIZE + 2):
        response = await client.post("/api/test-tool-charge")
        assert response.status_code == 200, response.text
        assert response.json()["credits_remaining"] == balance - n
        assert (await client.get("/api/subscription")).status_code == 200


async def _cut_while_waiting_on_the_account(url: str, user_id: int, request: Any) -> httpx.Response:
    """Lock the account's row elsewhere, send ``request`` (it waits on the lock), cut every
    connection of the database while it waits, and return its answer."""
    holder = await asyncpg.connect(url)
    await holder.execute("BEGIN")
    await holder.execute("SELECT 1 FROM user_subscriptions WHERE user_id = $1 FOR UPDATE", user_id)
    pending = asyncio.ensure_future(request())
    try:
        watcher = await asyncpg.connect(url)
        try:
            for _ in range(600):  # until the request's statement waits on the row lock
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
                if waiting:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the request never waited on the account's row lock")
        finally:
            await watcher.close()
        await terminate_backends(_database_name(url))
        return await asyncio.wait_for(pending, timeout=60)
    finally:
        pending.cancel()
        await holder.close(timeout=5)


@pytest.mark.parametrize("path", ["/api/credits/purchase", "/api/test-tool-charge"], ids=["purchase", "tool_charge"])
async def test_a_connection_cut_mid_request_is_a_503_and_nothing_is_charged(
    own_db: tuple[Database, str], client: httpx.AsyncClient, path: str
) -> None:
    _db, url = own_db
    user_id = client.user["id"]  # type: ignore[attr-defined]
    assert (await client.post("/api/test-tool-charge")).status_code == 200  # the account is warm
    before = (await client.get("/api/subscription")).json()["subscription"]["credits_remaining"]
    body = {"pack_size": 100} if path.endswith("purchase") else None
    response = await _cut_while_waiting_on_the_account(
        url, user_id, lambda: client.post(path, json=body, headers={"Idempotency-Key": "cut-1"})
    )
    _assert_retryable(response)
    await _recovers(lambda: client.get("/api/subscription"), allowed_failures=POOL_SIZE)
    after = (await client.get("/api/subscription")).json()["subscription"]["credits_remaining"]
    assert after == before  # the cut transaction never committed
    retried = await client.post(path, json=body, headers={"Idempotency-Key": "cut-1"})
    assert retried.status_code == 200, retried.text


async def test_a_database_that_refuses_connections_is_a_503(tmp_path: Path) -> None:
    """PostgreSQL down (nothing listens on its port): every request that needs it is a 503."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    db = Database(f"postgresql://postgres@127.0.0.1:{port}/none", pool_size=1)
    try:
        app = build_app(db, tmp_path)
        _add_tool_charge_route(app)
        async with make_client(app) as client:
            assert (await client.get("/healthz")).status_code == 200
            _assert_retryable(await client.get("/api/subscription/tiers"))
            _assert_retryable(await client.post("/api/auth/login", json={"username": "a", "password": "b"}))
    finally:
        await db.dispose()
