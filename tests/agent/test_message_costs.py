"""A reply's costs last: stored on the assistant message and returned with the conversation.

Also renaming and deleting conversations, which must leave what they cost in place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from devops_agent import billing
from devops_agent.agent.service import AgentRuntime
from devops_agent.billing.models import CreditLedger, UsageLog
from devops_agent.db import Database
from tests.factories import T0
from tests.web.conftest import build_app, make_client, register


@pytest.fixture
def app(db: Database, tmp_path: Path, auto_runtime: AgentRuntime) -> FastAPI:
    app = build_app(db, tmp_path)
    app.state.agent_runtime = auto_runtime  # creates run at once: this is about costs, not approval
    return app


@pytest.fixture
async def client(app: FastAPI) -> Any:
    async with make_client(app) as c:
        yield c


async def _chat(client: httpx.AsyncClient, message: str, conversation_id: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"message": message}
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    response = await client.post("/api/chat", json=body)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


async def test_each_reply_keeps_its_tools_total_and_balance_after(client: httpx.AsyncClient) -> None:
    await register(client)
    first = await _chat(client, "create a t3.micro instance named web-1")
    second = await _chat(client, "stop instance i-0123456789abcdef0", first["conversation_id"])
    assert first["balance_after"] == first["credits_remaining"] == 20 - 6
    assert second["tool_calls"][0]["success"] is False  # the cloud refused: charged, marked failed

    detail = (await client.get(f"/api/conversations/{first['conversation_id']}")).json()
    user_1, reply_1, user_2, reply_2 = detail["messages"]
    for stored, live in ((reply_1, first), (reply_2, second)):
        assert stored["role"] == "assistant"
        assert stored["content"] == live["response"]
        assert (stored["credits_used"], stored["balance_after"]) == (live["credits_used"], live["balance_after"])
        assert stored["tool_calls"] == live["tool_calls"]
        assert stored["agent"] == "offline"
    assert reply_1["tool_calls"] == [
        {
            "tool": "create_ec2_instance",
            "credits_used": 5,
            "success": True,
            "summary": reply_1["tool_calls"][0]["summary"],
        }
    ]
    assert (reply_1["credits_used"], reply_1["balance_after"]) == (6, 14)
    assert reply_2["balance_after"] == 14 - reply_2["credits_used"]
    for user_message in (user_1, user_2):
        assert (user_message["credits_used"], user_message["balance_after"], user_message["tool_calls"]) == (
            None,
            None,
            [],
        )


async def test_a_replayed_reply_carries_the_same_costs(client: httpx.AsyncClient) -> None:
    await register(client)
    headers = {"Idempotency-Key": "costs-1"}
    first = await client.post("/api/chat", json={"message": "list my EC2 instances"}, headers=headers)
    again = await client.post("/api/chat", json={"message": "list my EC2 instances"}, headers=headers)
    assert first.json() == again.json()
    assert again.json()["balance_after"] == 18


async def test_the_conversation_written_in_last_comes_first(client: httpx.AsyncClient, app: FastAPI) -> None:
    await register(client)
    older = await _chat(client, "hello")
    app.state.clock.advance(minutes=1)
    newer = await _chat(client, "list my S3 buckets")
    app.state.clock.advance(minutes=1)
    await _chat(client, "hello again", older["conversation_id"])
    listed = (await client.get("/api/conversations")).json()["conversations"]
    assert [c["id"] for c in listed] == [older["conversation_id"], newer["conversation_id"]]
    assert listed[0]["updated_at"] > listed[0]["created_at"]


async def test_rename_a_conversation(client: httpx.AsyncClient, app: FastAPI) -> None:
    await register(client)
    reply = await _chat(client, "hello")
    cid = reply["conversation_id"]
    renamed = await client.patch(f"/api/conversations/{cid}", json={"title": "  Morning   checks "})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["conversation"]["title"] == "Morning checks"
    assert (await client.get("/api/conversations")).json()["conversations"][0]["title"] == "Morning checks"

    blank = await client.patch(f"/api/conversations/{cid}", json={"title": "   "})
    assert blank.status_code == 400
    assert blank.json()["error"] == "invalid_request"

    async with make_client(app) as other:
        await register(other)
        stranger = await other.patch(f"/api/conversations/{cid}", json={"title": "mine now"})
        assert stranger.status_code == 404
        assert (await other.delete(f"/api/conversations/{cid}")).status_code == 404
    assert (await client.get(f"/api/conversations/{cid}")).json()["conversation"]["title"] == "Morning checks"


async def test_deleting_a_conversation_keeps_usage_and_ledger(client: httpx.AsyncClient, db: Database) -> None:
    user = await register(client)
    reply = await _chat(client, "list my EC2 instances")
    cid = reply["conversation_id"]
    async with db.transaction() as session:
        ledger_before = (await session.execute(select(CreditLedger.id).where(CreditLedger.user_id == user["id"]))).all()

    deleted = await client.delete(f"/api/conversations/{cid}")
    assert deleted.status_code == 204
    assert (await client.get(f"/api/conversations/{cid}")).status_code == 404
    assert (await client.get("/api/conversations")).json()["conversations"] == []

    logs = (await client.get("/api/usage/history")).json()["logs"]
    assert sorted((log["action_type"], log["credits_used"], log["conversation_id"]) for log in logs) == [
        ("agent_message", 1, None),
        ("tool_use", 1, None),
    ]
    async with db.transaction() as session:
        ledger_after = (await session.execute(select(CreditLedger.id).where(CreditLedger.user_id == user["id"]))).all()
        assert ledger_after == ledger_before
        account = await billing.get_account(session, user_id=user["id"], now=T0)
        assert account.balance == 18
        assert (await session.execute(select(UsageLog).where(UsageLog.conversation_id == cid))).first() is None
