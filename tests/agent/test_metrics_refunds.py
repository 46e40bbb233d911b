"""The agent's charges and refunds show in ``/metrics``, wherever they happen: a provider failure,
a cancelled turn (its lease's refund), an approved create."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from devops_agent.agent.backends.claude import ClaudeBackend
from devops_agent.agent.service import AgentRuntime
from devops_agent.db import Database
from tests.agent.fake_anthropic import FakeAnthropic, api_error, hang, tool_use
from tests.agent.test_interrupted import until
from tests.web.conftest import build_app, make_client, register
from tests.web.test_metrics import sample, scrape


def moved(before: str, after: str, name: str, action: str) -> float:
    return sample(after, name, action=action) - sample(before, name, action=action)


async def test_a_refund_moves_the_refund_counters(
    db: Database, tmp_path: Path, runtime: AgentRuntime, anthropic_server: FakeAnthropic
) -> None:
    anthropic_server.script(api_error(529, "overloaded_error", "Overloaded"))
    app = build_app(db, tmp_path)
    backend = ClaudeBackend(api_key="sk-test", model="claude-test", base_url=anthropic_server.url, max_retries=0)
    app.state.agent_runtime = dataclasses.replace(runtime, backend=backend)
    async with make_client(app) as client:
        before = await scrape(client)
        await register(client)
        assert (await client.post("/api/chat", json={"message": "hello"})).status_code == 502
        after = await scrape(client)
    for name in ("devops_agent_refunds_total", "devops_agent_credits_refunded_total", "devops_agent_charges_total"):
        assert moved(before, after, name, "agent_message") == 1, name


async def test_a_cancelled_turns_refunds_are_counted(
    db: Database, tmp_path: Path, runtime: AgentRuntime, anthropic_server: FakeAnthropic
) -> None:
    anthropic_server.script(tool_use("get_ec2_instances", {}), hang())
    app = build_app(db, tmp_path)
    backend = ClaudeBackend(api_key="sk-test", model="claude-test", base_url=anthropic_server.url, max_retries=0)
    app.state.agent_runtime = dataclasses.replace(runtime, backend=backend, turn_lease=timedelta(hours=1))
    async with make_client(app) as client:
        before = await scrape(client)
        await register(client)
        request = asyncio.create_task(client.post("/api/chat", json={"message": "hello"}))
        await until(lambda: len(anthropic_server.requests) == 2, "the model was asked again after the tool call")
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        anthropic_server.release()
        after = await scrape(client)
    for action in ("agent_message", "get_ec2_instances"):
        assert moved(before, after, "devops_agent_charges_total", action) == 1, action
        assert moved(before, after, "devops_agent_refunds_total", action) == 1, action
        assert moved(before, after, "devops_agent_credits_refunded_total", action) == 1, action


async def test_an_approved_create_counts_its_charge(db: Database, tmp_path: Path, runtime: AgentRuntime) -> None:
    app = build_app(db, tmp_path)
    app.state.agent_runtime = runtime
    async with make_client(app) as client:
        before = await scrape(client)
        await register(client)
        proposed = await client.post("/api/chat", json={"message": "create a t3.micro instance named web-1"})
        [action] = proposed.json()["pending_actions"]
        assert (await client.post(f"/api/chat/actions/{action['id']}/approve")).status_code == 200
        assert (await client.post(f"/api/chat/actions/{action['id']}/approve")).status_code == 200  # a replay
        after = await scrape(client)
    assert moved(before, after, "devops_agent_charges_total", "create_ec2_instance") == 1
    assert moved(before, after, "devops_agent_credits_charged_total", "create_ec2_instance") == 5
