"""The Claude backend through the real ``anthropic`` client, against a local Messages API server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import select

from devops_agent.agent.backends.claude import ClaudeBackend
from devops_agent.agent.service import AgentRuntime, AgentUnavailable, send_message
from devops_agent.billing.models import UsageLog
from devops_agent.db import Database
from tests.agent.fake_anthropic import FakeAnthropic, api_error, text_reply, tool_use
from tests.factories import T0, make_user
from tests.web.conftest import build_app


def _claude(runtime: AgentRuntime, server: FakeAnthropic) -> AgentRuntime:
    backend = ClaudeBackend(api_key="sk-test", model="claude-test", base_url=server.url, timeout=10, max_retries=1)
    return dataclasses.replace(runtime, backend=backend)


async def _user(db: Database) -> int:
    async with db.transaction() as session:
        return (await make_user(session)).id


async def test_a_tool_use_round_trip(db: Database, auto_runtime: AgentRuntime, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.script(
        tool_use("create_ec2_instance", {"name": "api-1"}, text="Launching it."),
        text_reply("Your instance api-1 is launching."),
    )
    user_id = await _user(db)
    reply = await send_message(
        db,
        _claude(auto_runtime, anthropic_server),
        user_id=user_id,
        message="I need a server called api-1",
        clock=lambda: T0,
    )
    assert reply.response == "Your instance api-1 is launching."
    assert [(t.tool, t.credits_used, t.success) for t in reply.tool_calls] == [("create_ec2_instance", 5, True)]
    assert (reply.credits_used, reply.credits_remaining) == (6, 14)

    first, second = (r["body"] for r in anthropic_server.requests)
    assert "sk-test" in (
        anthropic_server.headers[0].get("x-api-key", "") + anthropic_server.headers[0].get("authorization", "")
    )
    assert first["model"] == "claude-test"
    assert first["messages"] == [{"role": "user", "content": "I need a server called api-1"}]
    assert "create_ec2_instance" in {t["name"] for t in first["tools"]}
    call = second["messages"][1]["content"][1]
    result = second["messages"][2]["content"][0]
    assert (result["type"], result["tool_use_id"], result["is_error"]) == ("tool_result", call["id"], False)
    assert '"name": "api-1"' in result["content"]


async def test_a_transient_overload_is_retried(
    db: Database, runtime: AgentRuntime, anthropic_server: FakeAnthropic
) -> None:
    anthropic_server.script(api_error(529, "overloaded_error", "Overloaded"), text_reply("Hello from Claude."))
    user_id = await _user(db)
    reply = await send_message(db, _claude(runtime, anthropic_server), user_id=user_id, message="hi", clock=lambda: T0)
    assert (reply.response, reply.credits_remaining) == ("Hello from Claude.", 19)
    assert len(anthropic_server.requests) == 2


async def test_a_provider_error_refunds_the_message(
    db: Database, runtime: AgentRuntime, anthropic_server: FakeAnthropic
) -> None:
    anthropic_server.script(api_error(500, "api_error", "boom"), api_error(500, "api_error", "boom again"))
    user_id = await _user(db)
    claude = _claude(runtime, anthropic_server)
    with pytest.raises(AgentUnavailable) as failed:
        await send_message(db, claude, user_id=user_id, message="hi", clock=lambda: T0, idempotency_key="k")
    assert failed.value.extra["credits_remaining"] == 20
    async with db.transaction() as session:
        log = (await session.execute(select(UsageLog).where(UsageLog.user_id == user_id))).scalar_one()
    assert (log.action_type, log.success) == ("agent_message", False)
    assert "500" in (log.error_message or "")

    # A retry with the same key gets the same answer without asking Claude or charging again.
    requests = len(anthropic_server.requests)
    with pytest.raises(AgentUnavailable):
        await send_message(db, claude, user_id=user_id, message="hi", clock=lambda: T0, idempotency_key="k")
    assert len(anthropic_server.requests) == requests


async def test_the_app_closes_the_claude_client_on_shutdown(
    db: Database, runtime: AgentRuntime, anthropic_server: FakeAnthropic, tmp_path: Path
) -> None:
    app = build_app(db, tmp_path)
    claude = _claude(runtime, anthropic_server)
    async with app.router.lifespan_context(app):
        app.state.agent_runtime = claude
        assert not claude.backend.client.is_closed()  # type: ignore[attr-defined]
    assert claude.backend.client.is_closed()  # type: ignore[attr-defined]
