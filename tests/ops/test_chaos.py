"""Faults on purpose: chats under load on `serve --workers 2` (PostgreSQL, offline agent) while one
worker is SIGKILLed and every database connection of the app is terminated.

What must hold afterwards is what people rely on: the books (``devops-agent audit`` exits
0: every balance equals its ledger, every charge has its usage log) and the service
(it answers chats again within seconds, with no error). During the faults, requests
may fail (a dropped connection, a 503, or a 500 where a lost connection is not yet
mapped to 503); the test counts them but does not judge them.

``make chaos`` runs this test alone.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from devops_agent.cli import app as cli
from devops_agent.config import get_settings
from tests.ops.servers import Served, serve, stop

pytestmark = pytest.mark.slow

CLIENTS = 8
LOAD_SECONDS = 12.0
KILL_AT, TERMINATE_AT = 3.0, 6.0
RECOVERY_SECONDS = 30.0  # generous: the machine runs other suites; a healthy run takes a second or two
PASSWORD = "chaos-password-123"


def worker_pids(parent: int) -> list[int]:
    """The uvicorn workers under ``serve``: its spawned children (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    pids = []
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            continue
        if "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            pids.append(pid)
    return pids


async def sign_up(base_url: str, n: int) -> httpx.AsyncClient:
    """A user with a 1,000-credit pack, logged in, with a client of its own."""
    client = httpx.AsyncClient(base_url=base_url, timeout=30)
    name = f"chaos{n}_{uuid.uuid4().hex[:6]}"
    response = await client.post(
        "/api/auth/register", json={"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    )
    assert response.status_code == 201, response.text
    client.headers["X-CSRF-Token"] = client.cookies["csrf_token"]
    bought = await client.post("/api/credits/purchase", json={"pack_size": 1000})
    assert bought.status_code == 200, bought.text
    return client


async def chat(client: httpx.AsyncClient, n: int) -> str:
    """One chat; what happened, as a word (status code, or the transport error's name)."""
    headers = {"Idempotency-Key": uuid.uuid4().hex} if n % 2 else {}  # keyed and unkeyed charges both
    try:
        response = await client.post("/api/chat", json={"message": "list my EC2 instances"}, headers=headers)
    except httpx.TransportError as exc:
        return type(exc).__name__
    return str(response.status_code)


async def terminate_backends(database_url: str) -> int:
    """pg_terminate_backend on every connection to the app's database but this one."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
    return sum(1 for r in rows if r[0])


async def recovered(clients: list[httpx.AsyncClient]) -> float:
    """Seconds until every client's chat succeeds again (fails the test past RECOVERY_SECONDS)."""
    started = time.monotonic()
    seq = itertools.count()
    while True:
        outcomes = await asyncio.gather(*(chat(c, next(seq)) for c in clients))
        if set(outcomes) == {"200"}:
            return time.monotonic() - started
        if time.monotonic() - started > RECOVERY_SECONDS:
            pytest.fail(f"the service did not recover within {RECOVERY_SECONDS:.0f} s: {outcomes}")
        await asyncio.sleep(0.2)


async def test_books_hold_and_service_recovers_after_a_killed_worker_and_cut_connections(
    scratch_postgres: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_property: pytest.RecordProperty
) -> None:
    served: Served = await asyncio.to_thread(serve, scratch_postgres, tmp_path, workers=2)
    clients: list[httpx.AsyncClient] = []
    try:
        clients = [await sign_up(served.base_url, n) for n in range(CLIENTS)]
        outcomes: Counter[str] = Counter()
        stop_at = time.monotonic() + LOAD_SECONDS

        async def load(client: httpx.AsyncClient) -> None:
            for n in itertools.count():
                if time.monotonic() > stop_at:
                    return
                outcomes[await chat(client, n)] += 1

        async def faults() -> tuple[int, int]:
            await asyncio.sleep(KILL_AT)
            victim = worker_pids(served.process.pid)[0]
            os.kill(victim, signal.SIGKILL)
            await asyncio.sleep(TERMINATE_AT - KILL_AT)
            return victim, await terminate_backends(scratch_postgres)

        *_, (victim, terminated) = await asyncio.gather(*(load(c) for c in clients), faults())
        assert terminated > 0  # the app held connections, and lost them
        assert outcomes["200"] > 0
        record_property("chaos_outcomes", dict(outcomes))

        record_property("recovery_seconds", round(await recovered(clients), 2))
        assert victim not in worker_pids(served.process.pid)  # uvicorn replaced the killed worker
        # Both workers serve again: a burst of fresh connections meets no error.
        burst = await asyncio.gather(*(chat(clients[n % CLIENTS], n) for n in range(4 * CLIENTS)))
        assert set(burst) == {"200"}, Counter(burst)
    finally:
        for client in clients:
            await client.aclose()
        await asyncio.to_thread(stop, served)

    monkeypatch.setenv("DATABASE_URL", scratch_postgres)
    get_settings.cache_clear()
    try:
        audit = await asyncio.to_thread(CliRunner().invoke, cli, ["audit"])
    finally:
        get_settings.cache_clear()
    assert audit.exit_code == 0, audit.output
    assert "the books hold" in audit.output
