"""Approval before anything billable, over HTTP on SQLite and PostgreSQL.

A create the agent proposes is charged nothing until its owner approves it; approving
charges and runs it once, whatever is repeated; declining and expiry cost nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from devops_agent import billing
from devops_agent.agent import approvals
from devops_agent.agent.service import AgentRuntime
from devops_agent.billing.books import check_books
from devops_agent.db import Database
from tests.factories import T0
from tests.web.conftest import build_app, make_client, register


@pytest.fixture
def app(db: Database, tmp_path: Path, runtime: AgentRuntime) -> FastAPI:
    app = build_app(db, tmp_path)
    app.state.agent_runtime = runtime
    return app


@pytest.fixture
async def client(app: FastAPI) -> Any:
    async with make_client(app) as c:
        yield c


async def _balance(client: httpx.AsyncClient) -> int:
    body = (await client.get("/api/subscription")).json()["subscription"]
    return int(body["credits_remaining"])


async def _propose(client: httpx.AsyncClient, name: str = "web-1") -> dict[str, Any]:
    response = await client.post("/api/chat", json={"message": f"create a t3.micro instance named {name}"})
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    [action] = reply["pending_actions"]
    return {"reply": reply, "action": action}


async def test_a_create_waits_for_approval_then_runs_once(client: httpx.AsyncClient) -> None:
    await register(client)
    proposed = await _propose(client)
    reply, action = proposed["reply"], proposed["action"]
    assert set(action) == {"id", "tool", "input", "credits", "expires_at"}
    assert (action["tool"], action["input"]["instance_type"], action["credits"]) == (
        "create_ec2_instance",
        "t3.micro",
        5,
    )
    assert action["expires_at"].startswith("2026-01-15T12:15:00")
    assert "needs your approval" in reply["response"]
    # Proposing is a turn that did something: the message costs its credit, the create nothing yet.
    assert (reply["credits_used"], reply["credits_remaining"], reply["tool_calls"]) == (1, 19, [])
    listed = (await client.post("/api/chat", json={"message": "list my EC2 instances"})).json()
    assert "no EC2 instances" in listed["response"]

    approved = await client.post(f"/api/chat/actions/{action['id']}/approve")
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["conversation_id"] == reply["conversation_id"]
    assert [(t["tool"], t["credits_used"], t["success"]) for t in body["tool_calls"]] == [
        ("create_ec2_instance", 5, True)
    ]
    assert (body["credits_used"], body["credits_remaining"], body["pending_actions"]) == (5, 12, [])
    assert "web-1" in body["response"]

    again = await client.post(f"/api/chat/actions/{action['id']}/approve")
    assert (again.status_code, again.json()) == (200, body)
    assert await _balance(client) == 12
    listed = (await client.post("/api/chat", json={"message": "list my EC2 instances"})).json()
    assert listed["response"].count("web-1") == 1
    declined = await client.post(f"/api/chat/actions/{action['id']}/decline")
    assert (declined.status_code, declined.json()["error"]) == (409, "action_closed")
    history = (await client.get("/api/usage/history")).json()["logs"]
    assert [h["tool_name"] for h in history if h["action_type"] == "tool_use"].count("create_ec2_instance") == 1


async def test_declining_costs_nothing_and_closes_the_action(client: httpx.AsyncClient) -> None:
    await register(client)
    action = (await _propose(client))["action"]
    declined = await client.post(f"/api/chat/actions/{action['id']}/decline")
    assert declined.status_code == 204
    assert await _balance(client) == 19
    approved = await client.post(f"/api/chat/actions/{action['id']}/approve")
    assert (approved.status_code, approved.json()["error"]) == (409, "action_closed")
    assert await _balance(client) == 19


async def test_an_action_belongs_to_its_owner(app: FastAPI, client: httpx.AsyncClient) -> None:
    await register(client)
    action = (await _propose(client))["action"]
    async with make_client(app) as other:
        await register(other)
        for verb in ("approve", "decline"):
            response = await other.post(f"/api/chat/actions/{action['id']}/{verb}")
            assert (response.status_code, response.json()["error"]) == (404, "action_not_found")
        assert (await other.post("/api/chat/actions/999999/approve")).status_code == 404
        assert await _balance(other) == 20
    assert await _balance(client) == 19


async def test_an_unanswered_action_expires_after_15_minutes_at_no_cost(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await register(client)
    action = (await _propose(client))["action"]
    app.state.clock.advance(minutes=15)
    for _ in range(2):
        expired = await client.post(f"/api/chat/actions/{action['id']}/approve")
        assert (expired.status_code, expired.json()["error"]) == (410, "action_expired")
    assert await _balance(client) == 19


async def test_approving_without_the_credits_is_402_and_the_action_stays_open(
    db: Database, client: httpx.AsyncClient
) -> None:
    user = await register(client)
    action = (await _propose(client))["action"]
    async with db.transaction() as session:
        await billing.adjust(session, user_id=user["id"], amount=-17, reason="test", admin_id=None, now=T0)
    short = await client.post(f"/api/chat/actions/{action['id']}/approve")
    assert (short.status_code, short.json()["error"]) == (402, "insufficient_credits")
    assert await _balance(client) == 2
    async with db.transaction() as session:
        await billing.adjust(session, user_id=user["id"], amount=10, reason="test", admin_id=None, now=T0)
    approved = await client.post(f"/api/chat/actions/{action['id']}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["credits_remaining"] == 7


async def test_a_plan_flag_runs_creates_at_once(db: Database, tmp_path: Path, runtime: AgentRuntime) -> None:
    free = runtime.catalog.tier("free")
    assert free is not None
    assert free.limits is not None
    trusting = dataclasses.replace(free, limits=dataclasses.replace(free.limits, auto_approve=True))
    catalog = dataclasses.replace(runtime.catalog, tiers=(trusting, *runtime.catalog.tiers[1:]))
    app = build_app(db, tmp_path)
    app.state.agent_runtime = dataclasses.replace(runtime, catalog=catalog)
    async with make_client(app) as client:
        await register(client)
        reply = (await client.post("/api/chat", json={"message": "create a t3.micro instance named now-1"})).json()
    assert reply["pending_actions"] == []
    assert [(t["tool"], t["credits_used"]) for t in reply["tool_calls"]] == [("create_ec2_instance", 5)]


async def test_two_approvals_at_once_charge_and_run_once(app: FastAPI, client: httpx.AsyncClient) -> None:
    await register(client)
    action = (await _propose(client))["action"]
    async with make_client(app, cookies=client.cookies, headers=client.headers) as twin:
        answers = await asyncio.gather(
            client.post(f"/api/chat/actions/{action['id']}/approve"),
            twin.post(f"/api/chat/actions/{action['id']}/approve"),
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses in ([200, 200], [200, 409]), [a.text for a in answers]
    assert await _balance(client) == 14
    history = (await client.get("/api/usage/history")).json()["logs"]
    assert [h["tool_name"] for h in history].count("create_ec2_instance") == 1
    listed = (await client.post("/api/chat", json={"message": "list my EC2 instances"})).json()
    assert listed["response"].count("web-1") == 1


async def _die_mid_run(client: httpx.AsyncClient, runtime: AgentRuntime, monkeypatch: pytest.MonkeyPatch) -> int:
    """Approve a create whose run never ends, then cancel the request: as a process that died
    after the charge, it leaves the action running and its credits spent. The action's id."""
    action = (await _propose(client))["action"]
    running = asyncio.Event()

    async def hang(*_args: Any, **_kwargs: Any) -> Any:
        running.set()
        await asyncio.Event().wait()

    with monkeypatch.context() as patched:
        patched.setattr(runtime.toolbox, "run", hang)
        approving = asyncio.create_task(client.post(f"/api/chat/actions/{action['id']}/approve"))
        await asyncio.wait_for(running.wait(), 10)
        approving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await approving
    assert await _balance(client) == 20 - 1 - 5
    return int(action["id"])


async def test_an_approval_whose_process_died_is_refunded_by_the_next_approval_after_its_lease(
    app: FastAPI, client: httpx.AsyncClient, runtime: AgentRuntime, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(client)
    action_id = await _die_mid_run(client, runtime, monkeypatch)
    approve = f"/api/chat/actions/{action_id}/approve"
    assert (await client.post(approve)).status_code == 409  # its lease still runs: it may be alive

    app.state.clock.advance(seconds=runtime.turn_lease.total_seconds())
    answered = await client.post(approve)
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert [(t["tool"], t["credits_used"], t["success"]) for t in body["tool_calls"]] == [
        ("create_ec2_instance", 0, False)
    ]
    assert "refunded" in body["response"]
    assert (body["credits_remaining"], await _balance(client)) == (19, 19)
    assert (await client.post(approve)).json() == body  # answered once, refunded once
    assert await _balance(client) == 19
    assert (await check_books(db, clock=app.state.clock)).ok


async def test_recover_refunds_an_approval_whose_process_died(
    app: FastAPI, client: httpx.AsyncClient, runtime: AgentRuntime, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await register(client)
    action_id = await _die_mid_run(client, runtime, monkeypatch)
    now = app.state.clock()
    assert await approvals.recover_expired(db, now=now, low_credit_threshold=5) == []  # within its lease
    later = now + runtime.turn_lease
    [recovered] = await approvals.recover_expired(db, now=later, low_credit_threshold=5)
    assert (recovered.id, recovered.credits) == (action_id, 5)
    assert await approvals.recover_expired(db, now=later, low_credit_threshold=5) == []
    assert await _balance(client) == 19
    replay = (await client.post(f"/api/chat/actions/{action_id}/approve")).json()
    assert "refunded" in replay["response"]
    messages = (await client.get(f"/api/conversations/{replay['conversation_id']}")).json()["messages"]
    assert "refunded" in messages[-1]["content"]
    assert (await check_books(db, clock=app.state.clock)).ok
