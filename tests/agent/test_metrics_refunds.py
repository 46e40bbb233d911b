"""A message refunded after a provider failure shows in ``/metrics`` (``devops_agent_refunds_total``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from devops_agent.agent.backends.claude import ClaudeBackend
from devops_agent.agent.service import AgentRuntime
from devops_agent.db import Database
from tests.agent.fake_anthropic import FakeAnthropic, api_error
from tests.web.conftest import build_app, make_client, register
from tests.web.test_metrics import sample, scrape


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
        assert sample(after, name, action="agent_message") - sample(before, name, action="agent_message") == 1, name
