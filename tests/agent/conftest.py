"""Fixtures of the agent tests: a sandbox cloud, the runtime, and a local Messages API server."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import pytest

from devops_agent.agent.backends.offline import OfflineBackend
from devops_agent.agent.service import AgentRuntime
from devops_agent.agent.tools import build_toolbox
from devops_agent.agent.tools.aws import SandboxCloud
from devops_agent.billing.catalog import load_catalog
from tests.agent.fake_anthropic import FakeAnthropic


@pytest.fixture
def sandbox() -> SandboxCloud:
    """A sandbox of its own (moto itself starts once per process; accounts differ per namespace)."""
    return SandboxCloud(namespace=uuid.uuid4().hex)


@pytest.fixture
def runtime(sandbox: SandboxCloud) -> AgentRuntime:
    """The offline agent on the sandbox with the shipped prices."""
    return AgentRuntime(backend=OfflineBackend(), toolbox=build_toolbox(sandbox), catalog=load_catalog())


@pytest.fixture
def auto_runtime(runtime: AgentRuntime) -> AgentRuntime:
    """The same runtime with creates run at once (no approval in the chat)."""
    return dataclasses.replace(runtime, auto_approve=True)


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeAnthropic]:
    """A local HTTP server speaking the Messages API, on a free loopback port."""
    server = FakeAnthropic()
    server.start()
    yield server
    server.stop()
