"""Probes: ``/healthz`` says the process is up; ``/readyz`` that the database answers and is migrated."""

from __future__ import annotations

from pathlib import Path

from devops_agent.db import Database
from tests.web.conftest import SQLITE_ONLY, build_app, make_client


@SQLITE_ONLY
async def test_ready_on_a_migrated_database(client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok", "checks": None}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "migrations": "current"}


async def test_not_ready_while_migrations_are_pending(tmp_path: Path) -> None:
    empty = Database(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        async with make_client(build_app(empty, tmp_path)) as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "checks": {"database": "ok", "migrations": "pending"}}
    finally:
        await empty.dispose()
