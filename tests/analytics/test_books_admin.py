"""The admin API and page show the last books audit (`devops-agent audit`): its time and result."""

from __future__ import annotations

from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from devops_agent.billing import books
from tests.analytics.test_admin_api import make_admin
from tests.factories import T0


async def _audit(app: FastAPI) -> books.AuditReport:
    clock = iter([T0, T0 + timedelta(seconds=2)])
    report = await books.check_books(app.state.db, clock=lambda: next(clock))
    async with app.state.db.transaction() as s:
        await books.record_run(s, report)
    return report


async def test_the_last_audit_is_shown_with_its_time_and_discrepancies(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await make_admin(app, client)
    assert (await client.get("/api/admin/books")).json() == {"last_run": None}

    assert (await _audit(app)).ok
    run = (await client.get("/api/admin/books")).json()["last_run"]
    assert run["ok"] is True
    assert run["finished_at"] == "2026-01-15T12:00:02+00:00"
    assert run["accounts"] == 1
    assert set(run["checks"].values()) == {0}

    async with app.state.db.transaction() as s:
        await s.execute(
            text("UPDATE user_subscriptions SET purchased_credits_remaining = 9 WHERE user_id = :u"), {"u": admin["id"]}
        )
    assert not (await _audit(app)).ok
    run = (await client.get("/api/admin/books")).json()["last_run"]
    assert run["ok"] is False
    assert run["discrepancies"] == 3  # the ledger's sums, the last row's balances after, the grants
    assert run["checks"]["balances"] == 1
    assert run["checks"]["grants"] == 1
    assert run["examples"][0]["account"] == f"user {admin['id']}"
    assert "purchased" in run["examples"][0]["detail"]
