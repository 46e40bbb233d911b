"""The agent over HTTP: ``/api/chat``, conversations and saved templates, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from devops_agent import billing
from devops_agent.agent.backends.claude import ClaudeBackend
from devops_agent.agent.service import AgentRuntime
from devops_agent.db import Database
from tests.agent.fake_anthropic import FakeAnthropic, api_error
from tests.factories import T0
from tests.web.conftest import build_app, make_client, register

CHAT_KEYS = {
    "conversation_id",
    "response",
    "tool_calls",
    "credits_used",
    "credits_remaining",
    "balance_after",
    "low_credits",
    "pending_actions",
}


@pytest.fixture
def app(db: Database, tmp_path: Path, runtime: AgentRuntime) -> FastAPI:
    app = build_app(db, tmp_path)
    app.state.agent_runtime = runtime
    return app


@pytest.fixture
async def client(app: FastAPI) -> Any:
    async with make_client(app) as c:
        yield c


async def _spend_down(db: Database, user_id: int, to: int) -> None:
    async with db.transaction() as session:
        await billing.adjust(session, user_id=user_id, amount=to - 20, reason="test", admin_id=None, now=T0)


async def test_chat_then_read_the_conversation(client: httpx.AsyncClient) -> None:
    await register(client)
    response = await client.post("/api/chat", json={"message": "list my EC2 instances"})
    assert response.status_code == 200, response.text
    reply = response.json()
    assert set(reply) == CHAT_KEYS
    assert reply["tool_calls"] == [
        {"tool": "get_ec2_instances", "credits_used": 1, "success": True, "summary": "0 EC2 instances"}
    ]
    assert (reply["credits_used"], reply["credits_remaining"], reply["low_credits"]) == (2, 18, False)
    assert "[Offline agent]" not in reply["response"]

    listed = (await client.get("/api/conversations")).json()["conversations"]
    assert [c["id"] for c in listed] == [reply["conversation_id"]]
    assert listed[0]["title"] == "list my EC2 instances"
    detail = (await client.get(f"/api/conversations/{reply['conversation_id']}")).json()
    assert detail["conversation"]["id"] == reply["conversation_id"]
    assert [(m["role"], m["content"]) for m in detail["messages"]] == [
        ("user", "list my EC2 instances"),
        ("assistant", reply["response"]),
    ]
    assert detail["messages"][0]["created_at"].endswith("+00:00")

    history = (await client.get("/api/usage/history")).json()["logs"]
    assert {(h["action_type"], h["tool_name"], h["conversation_id"]) for h in history} == {
        ("agent_message", None, reply["conversation_id"]),
        ("tool_use", "get_ec2_instances", reply["conversation_id"]),
    }


async def test_out_of_credits_is_the_seeds_402(client: httpx.AsyncClient, db: Database) -> None:
    user = await register(client)
    await _spend_down(db, user["id"], 0)
    response = await client.post("/api/chat", json={"message": "hello"})
    assert response.status_code == 402
    body = response.json()
    assert set(body) == {"error", "message", "credits_remaining", "tier"}
    assert (body["error"], body["credits_remaining"], body["tier"]["name"]) == ("insufficient_credits", 0, "free")
    assert body["message"] == "You have run out of credits. Please upgrade your plan or purchase more credits."
    assert (await client.get("/api/conversations")).json() == {"conversations": []}


async def test_low_credits_below_five(client: httpx.AsyncClient, db: Database) -> None:
    user = await register(client)
    await _spend_down(db, user["id"], 6)
    first = (await client.post("/api/chat", json={"message": "hello"})).json()
    second = (await client.post("/api/chat", json={"message": "hello"})).json()
    assert [(r["credits_remaining"], r["low_credits"]) for r in (first, second)] == [(5, False), (4, True)]


async def test_someone_elses_conversation_is_404(app: FastAPI, client: httpx.AsyncClient) -> None:
    await register(client)
    conversation_id = (await client.post("/api/chat", json={"message": "hello"})).json()["conversation_id"]
    async with make_client(app) as other:
        await register(other)
        for response in (
            await other.get(f"/api/conversations/{conversation_id}"),
            await other.post("/api/chat", json={"message": "hi", "conversation_id": conversation_id}),
        ):
            assert response.status_code == 404
            assert response.json()["error"] == "conversation_not_found"
        assert (await other.get("/api/usage/stats")).json()["credits_remaining"] == 20


async def test_idempotency_key_replays_and_charges_nothing(client: httpx.AsyncClient) -> None:
    await register(client)
    headers = {"Idempotency-Key": "chat-1"}
    first = await client.post("/api/chat", json={"message": "hello"}, headers=headers)
    again = await client.post("/api/chat", json={"message": "hello"}, headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert (await client.get("/api/usage/stats")).json()["credits_remaining"] == 19
    reused = await client.post("/api/chat", json={"message": "something else"}, headers=headers)
    assert (reused.status_code, reused.json()["error"]) == (409, "conflict")


async def test_bad_chat_requests_change_nothing(client: httpx.AsyncClient) -> None:
    await register(client)
    for body in (
        {},
        {"message": ""},
        {"message": "hi", "max_credits": 0},
        {"message": "hi", "extra": 1},
        {"message": 5},
    ):
        response = await client.post("/api/chat", json=body)
        assert (response.status_code, response.json()["error"]) == (422, "validation_error"), body
    for text in ("   ", "nul \u0000 byte"):
        response = await client.post("/api/chat", json={"message": text})
        assert (response.status_code, response.json()["error"]) == (400, "invalid_request"), text
    assert (await client.get("/api/conversations/99")).json()["error"] == "conversation_not_found"
    assert (await client.get("/api/usage/stats")).json()["credits_remaining"] == 20


async def test_forty_concurrent_chats_on_twenty_credits(app: FastAPI, client: httpx.AsyncClient) -> None:
    await register(client)
    responses = await asyncio.gather(*(client.post("/api/chat", json={"message": "hello"}) for _ in range(40)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 20 + [402] * 20
    assert (await client.get("/api/usage/stats")).json()["credits_remaining"] == 0


async def test_a_provider_failure_is_502_and_refunded(
    app: FastAPI, client: httpx.AsyncClient, runtime: AgentRuntime, anthropic_server: FakeAnthropic
) -> None:
    anthropic_server.script(api_error(529, "overloaded_error", "Overloaded"))
    backend = ClaudeBackend(api_key="sk-test", model="claude-test", base_url=anthropic_server.url, max_retries=0)
    app.state.agent_runtime = dataclasses.replace(runtime, backend=backend)
    await register(client)
    response = await client.post("/api/chat", json={"message": "hello"})
    assert response.status_code == 502
    body = response.json()
    assert (body["error"], body["credits_remaining"]) == ("agent_unavailable", 20)
    logs = (await client.get("/api/usage/history")).json()["logs"]
    assert [(log["action_type"], log["success"]) for log in logs] == [("agent_message", False)]
    assert "529" in logs[0]["error_message"]


# --- saved templates ------------------------------------------------------------------


async def _upgrade(client: httpx.AsyncClient, tier: str) -> None:
    tiers = (await client.get("/api/subscription/tiers")).json()["tiers"]
    tier_id = next(t["id"] for t in tiers if t["name"] == tier)
    response = await client.post("/api/subscription/upgrade", json={"tier_id": tier_id})
    assert response.status_code == 200, response.text


async def test_templates_need_the_custom_templates_feature(client: httpx.AsyncClient) -> None:
    await register(client)
    await _upgrade(client, "starter")
    for response in (
        await client.get("/api/templates"),
        await client.post("/api/templates", json={"name": "x", "prompt": "hello"}),
        await client.post("/api/templates/1/run", json={}),
    ):
        assert response.status_code == 403
        assert response.json()["error"] == "feature_not_in_plan"


async def test_save_run_and_delete_a_template(app: FastAPI, client: httpx.AsyncClient) -> None:
    await register(client)
    await _upgrade(client, "professional")
    created = await client.post(
        "/api/templates", json={"name": "web server", "prompt": "create a {size} instance named {name}"}
    )
    assert created.status_code == 201, created.text
    template = created.json()["template"]
    assert template["parameters"] == ["size", "name"]
    duplicate = await client.post("/api/templates", json={"name": "web server", "prompt": "hello"})
    assert (duplicate.status_code, duplicate.json()["error"]) == (409, "already_exists")
    assert [t["name"] for t in (await client.get("/api/templates")).json()["templates"]] == ["web server"]

    missing = await client.post(f"/api/templates/{template['id']}/run", json={"params": {"name": "web-7"}})
    assert (missing.status_code, missing.json()["error"]) == (400, "invalid_request")
    before = (await client.get("/api/usage/stats")).json()["credits_remaining"]
    ran = await client.post(
        f"/api/templates/{template['id']}/run", json={"params": {"size": "t3.micro", "name": "web-7"}}
    )
    assert ran.status_code == 200, ran.text
    reply = ran.json()
    assert set(reply) == CHAT_KEYS
    # The create awaits approval: the message is charged, the instance not yet.
    assert [(a["tool"], a["input"]["name"], a["credits"]) for a in reply["pending_actions"]] == [
        ("create_ec2_instance", "web-7", 5)
    ]
    assert reply["credits_remaining"] == before - 1

    async with make_client(app) as other:
        await register(other)
        await _upgrade(other, "business")
        assert (await other.post(f"/api/templates/{template['id']}/run", json={})).status_code == 404
        assert (await other.delete(f"/api/templates/{template['id']}")).status_code == 404

    assert (await client.delete(f"/api/templates/{template['id']}")).status_code == 204
    gone = await client.get(f"/api/templates/{template['id']}")
    assert (gone.status_code, gone.json()["error"]) == (404, "template_not_found")


async def test_a_malformed_template_is_refused(client: httpx.AsyncClient) -> None:
    await register(client)
    await _upgrade(client, "professional")
    for prompt in ("create {name", "run {obj.__class__}", "x {0}", "y {name!r}"):
        response = await client.post("/api/templates", json={"name": prompt, "prompt": prompt})
        assert response.status_code == 400, prompt
    assert (await client.get("/api/templates")).json() == {"templates": []}
