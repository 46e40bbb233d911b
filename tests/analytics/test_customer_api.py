"""Customer analytics over HTTP: each report gated by its plan feature; email preferences; bad input is a 400."""

from __future__ import annotations

import csv
import io

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from devops_agent import billing
from devops_agent.billing.models import User
from tests.web.conftest import make_client, register


async def upgrade_to(client: httpx.AsyncClient, name: str) -> None:
    tiers = {t["name"]: t["id"] for t in (await client.get("/api/subscription/tiers")).json()["tiers"]}
    response = await client.post("/api/subscription/upgrade", json={"tier_id": tiers[name]})
    assert response.status_code == 200, response.text


async def spend(app: FastAPI, user_id: int, tool: str | None, amount: int = 1) -> None:
    async with app.state.db.transaction() as s:
        await billing.charge(
            s,
            user_id=user_id,
            amount=amount,
            action_type="tool_use" if tool else "agent_message",
            tool_name=tool,
            now=app.state.clock(),
        )


REPORTS = {
    "/api/analytics/usage": "usage_analytics",
    "/api/analytics/usage.csv": "advanced_analytics",
    "/api/analytics/statement": "compliance_reports",
    "/api/analytics/statement.csv": "compliance_reports",
}


async def test_each_report_is_gated_by_its_plan_feature_and_emails_can_be_turned_off(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await register(client)
    expected_open = {
        "free": set(),
        "starter": {"/api/analytics/usage"},
        "professional": {"/api/analytics/usage", "/api/analytics/usage.csv"},
        "business": set(REPORTS),
    }
    for tier, open_paths in expected_open.items():
        if tier != "free":
            app.state.clock.advance(minutes=1)  # two upgrades in one instant collide in the engine (reported)
            await upgrade_to(client, tier)
        for path, feature in REPORTS.items():
            response = await client.get(path)
            if path in open_paths:
                assert response.status_code == 200, (tier, path)
            else:
                assert response.status_code == 403, (tier, path)
                body = response.json()
                assert (body["error"], body["feature"]) == ("feature_not_in_plan", feature)
                assert tier not in body["tiers"]
    async with make_client(app) as anonymous:
        assert (await anonymous.get("/api/analytics/usage")).status_code == 401

    # Any plan may turn the optional low-credit emails off.
    assert (await client.get("/api/account/email-preferences")).json()["low_credit_emails"] is True
    response = await client.put("/api/account/email-preferences", json={"low_credit_emails": False})
    assert response.json()["low_credit_emails"] is False
    async with app.state.db.transaction() as s:
        assert (await s.execute(select(User.email_opt_out).where(User.id == user["id"]))).scalar_one() is True
    assert (await client.get("/api/account/email-preferences")).json()["low_credit_emails"] is False
    bad = await client.put("/api/account/email-preferences", json={"low_credit_emails": "sometimes"})
    assert bad.status_code == 422


async def test_business_customer_sees_usage_csv_and_statement(app: FastAPI, client: httpx.AsyncClient) -> None:
    user = await register(client)
    await upgrade_to(client, "business")
    await spend(app, user["id"], None)
    await spend(app, user["id"], "create_ec2_instance", amount=5)
    app.state.clock.advance(days=1)
    await spend(app, user["id"], "create_ec2_instance", amount=5)

    usage = (await client.get("/api/analytics/usage")).json()
    assert usage["total_credits"] == 11
    assert [d["credits"] for d in usage["per_day"]] == [6, 5]
    assert usage["by_tool"][0] == {"tool": "create_ec2_instance", "count": 2, "credits_used": 10, "failures": 0}
    window = await client.get("/api/analytics/usage", params={"start": "2026-01-16", "end": "2026-01-16"})
    assert window.json()["per_day"] == [{"day": "2026-01-16", "credits": 5}]
    backwards = await client.get("/api/analytics/usage", params={"start": "2026-01-16", "end": "2026-01-10"})
    assert backwards.status_code == 400

    exported = await client.get("/api/analytics/usage.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["credits_used"] for r in rows] == ["1", "5", "5"]

    statement = (await client.get("/api/analytics/statement", params={"month": "2026-01"})).json()
    assert statement["opening_balance"] == 0
    assert statement["closing_balance"] == 3000 - 11
    assert statement["totals_by_kind"]["charge"] == -11
    assert statement["opening_balance"] + sum(e["delta"] for e in statement["entries"]) == statement["closing_balance"]
    statement_csv = await client.get("/api/analytics/statement.csv", params={"month": "2026-01"})
    assert statement_csv.text.splitlines()[-1].endswith(f"closing_balance,,,,{3000 - 11}")
    assert (await client.get("/api/analytics/statement", params={"month": "2026-13"})).status_code == 400
    # Out-of-range days and months are a 400, never an overflow into a 500.
    for path, params in (
        ("/api/analytics/usage", {"start": "9999-12-31"}),
        ("/api/analytics/usage", {"end": "0001-01-01"}),
        ("/api/analytics/usage.csv", {"end": "9999-12-31"}),
        ("/api/analytics/statement", {"month": "9999-12"}),
        ("/api/analytics/statement.csv", {"month": "1999-12"}),
    ):
        response = await client.get(path, params=params)
        assert response.status_code == 400, (path, params, response.text)
        assert response.json()["error"] == "invalid_request"
