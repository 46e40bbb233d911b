"""The admin API: admin-only access, the figures on the seeded business, adjustments with audit rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from devops_agent.billing.audit import AdminAudit
from devops_agent.billing.models import CreditLedger, User
from tests.analytics.seed import seed_business
from tests.web.conftest import make_client, register

ADMIN_GETS = [
    "/api/admin/revenue",
    "/api/admin/usage/daily",
    "/api/admin/usage/top-users",
    "/api/admin/usage/top-tools",
    "/api/admin/users",
    "/api/admin/users/1",
    "/api/admin/audit",
    "/api/admin/emails",
    "/api/admin/books",
]


async def make_admin(app: FastAPI, client: httpx.AsyncClient, name: str = "root") -> dict[str, Any]:
    user = await register(client, name)
    async with app.state.db.transaction() as s:
        await s.execute(update(User).where(User.id == user["id"]).values(is_admin=True))
    return user


async def test_admin_endpoints_refuse_anonymous_401_and_non_admins_403(app: FastAPI, client: httpx.AsyncClient) -> None:
    await register(client, "mallory")
    async with make_client(app) as anonymous:
        for path in ADMIN_GETS:
            assert (await anonymous.get(path)).status_code == 401, path
        response = await anonymous.post("/api/admin/revenue/projection", json={"tier_mix": {}})
        assert response.json()["error"] == "unauthenticated"
    for path in ADMIN_GETS:
        response = await client.get(path)
        assert response.status_code == 403, path
        assert response.json()["error"] == "forbidden"
    response = await client.post("/api/admin/users/1/adjust", json={"amount": 1000, "reason": "for me"})
    assert response.status_code == 403
    async with app.state.db.transaction() as s:
        assert (
            await s.scalar(select(func.count()).select_from(CreditLedger).where(CreditLedger.kind == "adjustment")) == 0
        )


async def test_revenue_and_usage_figures_over_http(app: FastAPI, client: httpx.AsyncClient) -> None:
    ids = await seed_business(app.state.db)
    await make_admin(app, client)
    app.state.clock.now = datetime(2026, 2, 20, 12, 0, tzinfo=UTC)

    revenue = (await client.get("/api/admin/revenue", params={"months": 2})).json()
    assert revenue["mrr"] == 98.0
    assert revenue["pack_revenue"] == 55.0
    assert revenue["subscribers_by_tier"] == {"free": 3, "starter": 1, "professional": 1, "business": 1}
    assert [(m["month"], m["net"]) for m in revenue["pack_revenue_by_month"]] == [("2026-01", 30.0), ("2026-02", 25.0)]
    assert revenue["start"] == "2026-01-01T00:00:00+00:00"

    # Churn is this month's whatever the window: four paid accounts on Feb 1, dave left.
    assert revenue["churn"] == {"paid_at_start": 4, "churned": 1, "rate": 0.25}

    top_users = (await client.get("/api/admin/usage/top-users", params={"days": 40})).json()
    assert top_users == [
        {"user_id": ids.alice, "name": "alice", "credits_used": 8},
        {"user_id": ids.bob, "name": "bob", "credits_used": 2},
    ]
    top_tools = (await client.get("/api/admin/usage/top-tools", params={"days": 40, "limit": 2})).json()
    assert [(t["name"], t["count"]) for t in top_tools] == [("agent_message", 3), ("get_ec2_instances", 3)]
    assert top_tools[1]["failure_rate"] == pytest.approx(0.6667)

    daily = (await client.get("/api/admin/usage/daily", params={"days": 40})).json()
    assert len(daily["days"]) == 40
    assert daily["total"] == 10
    assert {d["day"]: d["credits"] for d in daily["days"] if d["credits"]} == {"2026-01-16": 3, "2026-01-17": 7}

    assert (await client.get("/api/admin/usage/daily", params={"days": 0})).status_code == 400


async def test_projection_endpoint_reproduces_the_seed_and_rejects_bad_mixes(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await make_admin(app, client)
    for body, mrr in (
        ({"users": 100, "tier_mix": {"starter": 15, "professional": 4, "business": 1}}, 800.0),
        ({"tier_mix": {"free": 700, "starter": 200, "professional": 80, "business": 20}}, 14100.0),
    ):
        response = await client.post("/api/admin/revenue/projection", json=body)
        assert response.status_code == 200
        assert response.json()["mrr"] == mrr
        assert sum(response.json()["by_tier"].values()) == mrr
    growth = (await client.post("/api/admin/revenue/projection", json=body)).json()
    assert growth["by_tier"] == {"free": 0.0, "starter": 3800.0, "professional": 6320.0, "business": 3980.0}

    unknown = await client.post("/api/admin/revenue/projection", json={"tier_mix": {"enterprise": 3}})
    assert unknown.status_code == 400
    assert "enterprise" in unknown.json()["message"]
    negative = await client.post("/api/admin/revenue/projection", json={"tier_mix": {"starter": -1}})
    assert negative.status_code == 422
    assert negative.json()["details"][0]["field"] == "tier_mix.starter"
    crowded = await client.post("/api/admin/revenue/projection", json={"users": 5, "tier_mix": {"starter": 6}})
    assert crowded.status_code == 400


async def test_lookup_adjust_and_audit(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await make_admin(app, client)
    async with make_client(app) as customer_client:
        customer = await register(customer_client, "customer")

    found = (await client.get("/api/admin/users", params={"q": "CUST"})).json()["users"]
    assert [u["username"] for u in found] == ["customer"]
    assert (await client.get("/api/admin/users", params={"q": "100%"})).json()["users"] == []

    response = await client.post(
        f"/api/admin/users/{customer['id']}/adjust", json={"amount": 50, "reason": "outage on Jan 14"}
    )
    assert response.status_code == 200
    assert response.json()["balance"] == {"monthly": 20, "purchased": 50, "total": 70}

    taken = await client.post(f"/api/admin/users/{customer['id']}/adjust", json={"amount": -5, "reason": "typo"})
    assert taken.json()["balance"] == {"monthly": 15, "purchased": 50, "total": 65}

    # Refused changes leave no trace: a missing reason, too large a debit, an unknown user.
    assert (await client.post(f"/api/admin/users/{customer['id']}/adjust", json={"amount": 5})).status_code == 422
    blank = await client.post(f"/api/admin/users/{customer['id']}/adjust", json={"amount": 5, "reason": "   "})
    assert blank.status_code == 400
    too_much = await client.post(f"/api/admin/users/{customer['id']}/adjust", json={"amount": -999, "reason": "x" * 5})
    assert too_much.status_code == 402
    assert (await client.post("/api/admin/users/999/adjust", json={"amount": 1, "reason": "nobody"})).status_code == 404

    detail = (await client.get(f"/api/admin/users/{customer['id']}")).json()
    assert detail["balance"] == {"monthly": 15, "purchased": 50, "total": 65}
    assert detail["subscription"]["tier"]["name"] == "free"
    adjustments = [e for e in detail["ledger"] if e["kind"] == "adjustment"]
    assert [(e["monthly_delta"] + e["purchased_delta"], e["reason"], e["admin_id"]) for e in adjustments] == [
        (-5, "typo", admin["id"]),
        (50, "outage on Jan 14", admin["id"]),
    ]
    assert [(a["action"], a["reason"], a["admin_id"]) for a in detail["audit"]] == [
        ("adjust_credits", "typo", admin["id"]),
        ("adjust_credits", "outage on Jan 14", admin["id"]),
    ]
    assert {a["ledger_id"] for a in detail["audit"]} == {e["id"] for e in adjustments}
    async with app.state.db.transaction() as s:
        assert await s.scalar(select(func.count()).select_from(AdminAudit)) == 2
    assert (await client.get("/api/admin/users/999")).json()["error"] == "user_not_found"

    # A retried adjustment with the same Idempotency-Key applies once and is audited once.
    for _ in range(2):
        response = await client.post(
            f"/api/admin/users/{customer['id']}/adjust",
            json={"amount": 10, "reason": "retry me"},
            headers={"Idempotency-Key": "ticket-42"},
        )
        assert response.json()["balance"]["total"] == 75
    assert len((await client.get("/api/admin/audit")).json()["entries"]) == 3


async def test_suspend_and_restore(app: FastAPI, client: httpx.AsyncClient) -> None:
    admin = await make_admin(app, client)
    async with make_client(app) as customer_client:
        customer = await register(customer_client, "customer")
        suspended = await client.post(f"/api/admin/users/{customer['id']}/suspend", json={"reason": "chargeback"})
        assert suspended.json()["user"]["is_suspended"] is True
        assert (await customer_client.get("/api/usage/stats")).status_code == 403

        restored = await client.post(f"/api/admin/users/{customer['id']}/restore", json={"reason": "resolved"})
        assert restored.json()["user"]["is_suspended"] is False
        assert (await customer_client.get("/api/usage/stats")).status_code == 200

    self_suspend = await client.post(f"/api/admin/users/{admin['id']}/suspend", json={"reason": "oops"})
    assert self_suspend.status_code == 400
    audit = (await client.get("/api/admin/audit")).json()["entries"]
    assert [(a["action"], a["target_user_id"], a["reason"]) for a in audit] == [
        ("restore", customer["id"], "resolved"),
        ("suspend", customer["id"], "chargeback"),
    ]
