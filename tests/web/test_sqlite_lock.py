"""Another process holding SQLite's write lock never freezes the server.

A separate process (as ``sqlite3`` in a shell, a backup or a cron command would) holds
``BEGIN IMMEDIATE`` on the app's database file. Meanwhile ``/healthz`` and reads answer,
and writes (a purchase, and a charge as the agent makes it) answer 503 with
Retry-After instead of blocking the event loop for the 30 s busy timeout. Once the
lock is released, the same write goes through.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from devops_agent import billing
from devops_agent.db import Database
from devops_agent.web.deps import CurrentUser, DatabaseDep, NowDep
from tests.web.conftest import SQLITE_ONLY, build_app, make_client, register

pytestmark = SQLITE_ONLY
# Far above the ~2 s a write may wait, far below the 30 s a frozen loop took: no timing
# is asserted beyond "the server did not freeze".
FROZEN = 10.0

HOLD_LOCK = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("ROLLBACK")
"""


@contextmanager
def write_lock_held_elsewhere(path: Path) -> Iterator[None]:
    """A process of its own holds the write lock on ``path`` until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)


def _add_tool_charge_route(app: FastAPI) -> None:
    """A tool call's charge as the agent makes it: a charge in a transaction of its own."""

    async def tool_charge(user: CurrentUser, db: DatabaseDep, now: NowDep) -> dict[str, int]:
        async with db.transaction() as session:
            result = await billing.charge(session, user_id=user.id, amount=1, action_type="tool_call", now=now)
        return {"credits_remaining": result.balance.total}

    app.add_api_route("/api/test-tool-charge", tool_charge, methods=["POST"])


async def _timed(request: asyncio.Future[httpx.Response] | asyncio.Task[httpx.Response]) -> httpx.Response:
    return await asyncio.wait_for(request, timeout=60)


@pytest.mark.parametrize(
    ("path", "body"),
    [("/api/credits/purchase", {"pack_size": 100}), ("/api/test-tool-charge", None)],
    ids=["purchase", "tool_charge"],
)
async def test_a_write_lock_held_by_another_process_freezes_nothing(
    db: Database, tmp_path: Path, path: str, body: dict[str, int] | None
) -> None:
    app = build_app(db, tmp_path)
    _add_tool_charge_route(app)
    database_file = Path(db.url.database or "")
    async with make_client(app) as client:
        await register(client)
        before = (await client.get("/api/subscription")).json()["subscription"]["credits_remaining"]
        with write_lock_held_elsewhere(database_file):
            write = asyncio.ensure_future(client.post(path, json=body, headers={"Idempotency-Key": "w1"}))
            await asyncio.sleep(0.05)  # the write is waiting for the lock now
            started = time.monotonic()
            health = await _timed(asyncio.ensure_future(client.get("/healthz")))
            read = await _timed(asyncio.ensure_future(client.get("/api/subscription")))
            waited_for_reads = time.monotonic() - started
            refused = await _timed(write)
        assert health.status_code == 200
        assert read.status_code == 200, read.text
        assert read.json()["subscription"]["credits_remaining"] == before
        assert waited_for_reads < FROZEN, f"the event loop was blocked for {waited_for_reads:.1f} s"
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"]
        assert refused.json()["error"] == "database_busy"
        # The lock is gone: the same request goes through, once.
        retried = await client.post(path, json=body, headers={"Idempotency-Key": "w1"})
        assert retried.status_code == 200, retried.text
        after = (await client.get("/api/subscription")).json()["subscription"]["credits_remaining"]
        assert after == (before + 100 if body else before - 1)
