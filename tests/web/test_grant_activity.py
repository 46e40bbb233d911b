"""The customer's activity when a charge draws on two grants: still one movement per message, one line per action.

A charge that empties one grant and takes the rest from the next writes one ledger row
per grant (``billing.grants``); the customer reads it as the one action it was.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
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
from devops_agent.db import Database
from tests.factories import T0
from tests.web.conftest import build_app, make_client, register


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


async def test_a_tool_charge_split_over_two_grants_reads_as_one_action(client: httpx.AsyncClient, db: Database) -> None:
    user = await register(client)
    async with db.transaction() as session:  # 4 credits spent before the plan's: they expire first
        await billing.grant_promotional(
            session,
            user_id=user["id"],
            credits=4,
            reason="welcome",
            admin_id=None,
            now=T0,
            expires_at=T0 + timedelta(days=10),
        )
    reply = await client.post("/api/chat", json={"message": "create a t3.micro instance named web-1"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["credits_used"] == 6  # the message's 1 and the create's 5 (3 promotional, 2 monthly)

    entries = (await client.get("/api/credits/ledger")).json()["entries"]
    assert [(e["kind"], e["credits"]) for e in entries] == [("charge", -6), ("grant", 4), ("monthly_grant", 20)]
    assert entries[0]["reason"] == "Message to the agent (1); Create an EC2 instance (5)"
    assert (entries[0]["monthly_after"], entries[0]["promotional_after"]) == (18, 0)


async def test_a_message_charge_and_its_refund_split_over_two_grants_are_one_movement_each(
    client: httpx.AsyncClient, db: Database
) -> None:
    user = await register(client)
    async with db.transaction() as session:
        await billing.grant_promotional(
            session,
            user_id=user["id"],
            credits=1,
            reason="one for the road",
            admin_id=None,
            now=T0,
            expires_at=T0 + timedelta(days=5),
        )
        charged = await billing.charge(session, user_id=user["id"], amount=3, action_type="agent_message", now=T0)
        await billing.refund(session, usage_log_id=charged.usage_log_id, now=T0)

    entries = (await client.get("/api/credits/ledger")).json()["entries"]
    assert [(e["kind"], e["credits"], e["reason"]) for e in entries[:2]] == [
        ("refund", 3, "Message to the agent (3): action failed"),
        ("charge", -3, "Message to the agent (3), failed"),
    ]
    assert len(entries) == 4  # and the grant, and the plan's opening grant
