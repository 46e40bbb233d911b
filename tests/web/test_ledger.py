"""``GET /api/credits/ledger``: every movement of the customer's balance, on SQLite and PostgreSQL.

The worked example: a Free customer chats (a message and its tools, grouped as one
movement), buys a pack, upgrades, gets an adjustment; the pages read back through the
cursor add up to the balance the subscription shows.
"""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from devops_agent import billing
from devops_agent.agent.backends.offline import OfflineBackend
from devops_agent.agent.service import AgentRuntime
from devops_agent.agent.tools import build_toolbox
from devops_agent.agent.tools.aws import SandboxCloud
from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.models import User
from devops_agent.db import Database
from tests.factories import T0
from tests.orgs.factories import make_org
from tests.web.conftest import build_app, make_client, register

ENTRY_KEYS = {
    "id",
    "at",
    "kind",
    "credits",
    "monthly_after",
    "purchased_after",
    "promotional_after",
    "reason",
    "conversation_id",
}


@pytest.fixture
def app(db: Database, tmp_path: Path) -> FastAPI:
    app = build_app(db, tmp_path)
    sandbox = SandboxCloud(namespace=uuid.uuid4().hex)
    app.state.agent_runtime = AgentRuntime(  # creates run at once: this is about the ledger, not approval
        backend=OfflineBackend(), toolbox=build_toolbox(sandbox), catalog=load_catalog(), auto_approve=True
    )
    return app


@pytest.fixture
async def client(app: FastAPI) -> Any:
    async with make_client(app) as c:
        yield c


async def _all_pages(client: httpx.AsyncClient, limit: int, **params: Any) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/api/credits/ledger", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"entries", "next_cursor"}
        entries.extend(body["entries"])
        cursor = body["next_cursor"]
        if cursor is None:
            return entries


async def _chat(client: httpx.AsyncClient, message: str) -> dict[str, Any]:
    response = await client.post("/api/chat", json={"message": message})
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


async def test_every_movement_adds_up_to_the_balance(client: httpx.AsyncClient, app: FastAPI, db: Database) -> None:
    user = await register(client)
    create = await _chat(client, "create a t3.micro instance named web-1")
    listing = await _chat(client, "list my EC2 instances")
    bought = await client.post("/api/credits/purchase", json={"pack_size": 100})
    assert bought.status_code == 200, bought.text
    app.state.clock.advance(days=1)
    tiers = (await client.get("/api/subscription/tiers")).json()["tiers"]
    starter = next(t for t in tiers if t["name"] == "starter")
    assert (await client.post("/api/subscription/upgrade", json={"tier_id": starter["id"]})).status_code == 200
    async with db.transaction() as session:
        await billing.adjust(
            session, user_id=user["id"], amount=7, reason="Sorry for the outage", admin_id=None, now=app.state.clock()
        )

    entries = await _all_pages(client, limit=2)
    balance = (await client.get("/api/subscription")).json()["subscription"]
    assert sum(e["credits"] for e in entries) == balance["credits_remaining"] == 200 + 100 + 7
    assert all(set(e) == ENTRY_KEYS for e in entries)
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)
    newest = entries[0]
    assert (newest["monthly_after"], newest["purchased_after"]) == (
        balance["monthly_credits_remaining"],
        balance["purchased_credits_remaining"],
    )
    assert [e["kind"] for e in entries] == [
        "adjustment",
        "monthly_grant",
        "tier_change",
        "purchase",
        "charge",
        "charge",
        "monthly_grant",
    ]
    adjustment, grant, change, purchase, listed, created, opening = entries
    assert (adjustment["credits"], adjustment["reason"]) == (7, "Sorry for the outage")
    assert (change["credits"], change["monthly_after"]) == (-(20 - 6 - 2), 0)
    assert purchase["credits"] == 100
    # A message and its tools are one movement, linked to the conversation, with readable names.
    assert (created["credits"], created["conversation_id"]) == (-6, create["conversation_id"])
    assert created["reason"] == "Message to the agent (1); Create an EC2 instance (5)"
    assert (listed["credits"], listed["conversation_id"]) == (-2, listing["conversation_id"])
    assert "get_ec2_instances" not in listed["reason"]
    assert (created["monthly_after"], created["purchased_after"]) == (14, 0)
    assert (opening["credits"], opening["conversation_id"]) == (20, None)
    assert grant["credits"] == 200

    # Filters: a kind, a month; what the other pages would show is not repeated.
    purchases = await _all_pages(client, limit=50, kind="purchase")
    assert [e["id"] for e in purchases] == [purchase["id"]]
    assert await _all_pages(client, limit=50, month="2026-01") == entries
    assert await _all_pages(client, limit=50, month="2025-12") == []


@pytest.mark.parametrize(
    ("params", "field"),
    [({"month": "2026-13"}, "month"), ({"kind": "bonus"}, "kind"), ({"cursor": "abc"}, "cursor")],
)
async def test_bad_filters_are_400_with_a_sentence(
    client: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    await register(client)
    response = await client.get("/api/credits/ledger", params=params)
    assert response.status_code == 400
    body = response.json()
    assert (body["error"], body["field"]) == ("invalid_request", field)
    assert "^" not in body["message"]


async def test_a_pool_for_its_members_only(client: httpx.AsyncClient, app: FastAPI, db: Database) -> None:
    owner = await register(client)
    async with db.transaction() as session:
        owner_row = await session.get(User, owner["id"])
        assert owner_row is not None
        org = await make_org(session, owner=owner_row, now=T0)
        await billing.adjust(
            session, user_id=owner["id"], org_id=org.id, amount=50, reason="team top-up", admin_id=None, now=T0
        )
        org_id = org.id
    pool = await _all_pages(client, limit=10, org_id=org_id)
    assert [(e["kind"], e["credits"]) for e in pool] == [("adjustment", 50), ("monthly_grant", 20)]
    mine = await _all_pages(client, limit=10)
    assert [e["kind"] for e in mine] == ["monthly_grant"]

    async with make_client(app) as stranger:
        await register(stranger)
        response = await stranger.get("/api/credits/ledger", params={"org_id": org_id})
        assert response.status_code == 404


async def test_csv_export_has_readable_kinds(client: httpx.AsyncClient) -> None:
    await register(client)
    await _chat(client, "list my EC2 instances")
    response = await client.get("/api/credits/ledger.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["kind"], r["credits"]) for r in rows] == [("Agent use", "-2"), ("Monthly credits", "20")]
    assert rows[0]["what"] == "Message to the agent (1); List EC2 instances (1)"
