"""Metering of the agent on SQLite and PostgreSQL: what a message and its tool calls cost.

The offline agent drives the real loop, the real tools run on the moto sandbox, and
every charge goes through the credits engine into ``usage_logs`` and the ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from devops_agent import billing
from devops_agent.agent.models import Message
from devops_agent.agent.service import (
    AgentRuntime,
    ChatReply,
    ConversationNotFound,
    InvalidChatRequest,
    send_message,
)
from devops_agent.agent.tools import build_toolbox
from devops_agent.agent.tools.aws import SandboxCloud
from devops_agent.agent.tools.registry import CloudTarget
from devops_agent.billing.models import CreditLedger, UsageLog
from devops_agent.db import Database
from tests.agent.test_tools import UnreachableCloud
from tests.factories import T0, balance_matching_ledger, make_user


def clock() -> Any:
    return T0


async def _user(db: Database, *, spend_down_to: int | None = None) -> int:
    async with db.transaction() as session:
        user = await make_user(session)
        if spend_down_to is not None:
            await billing.adjust(
                session, user_id=user.id, amount=spend_down_to - 20, reason="test: spend down", admin_id=None, now=T0
            )
        return user.id


async def _chat(db: Database, runtime: AgentRuntime, user_id: int, message: str, **kwargs: Any) -> ChatReply:
    return await send_message(db, runtime, user_id=user_id, message=message, clock=clock, **kwargs)


async def _logs(db: Database, user_id: int) -> list[tuple[str, str | None, int, bool]]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(UsageLog.action_type, UsageLog.tool_name, UsageLog.credits_used, UsageLog.success)
            .where(UsageLog.user_id == user_id)
            .order_by(UsageLog.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_a_message_costs_one_credit_charged_and_logged(db: Database, runtime: AgentRuntime) -> None:
    user_id = await _user(db)
    reply = await _chat(db, runtime, user_id, "hello")
    assert reply.response == "Hello! I can list and create EC2 instances, RDS databases and S3 buckets. Say 'help'."
    assert (reply.credits_used, reply.credits_remaining, reply.low_credits, reply.tool_calls) == (1, 19, False, [])
    assert await _logs(db, user_id) == [("agent_message", None, 1, True)]
    assert await balance_matching_ledger(db, user_id) == 19
    async with db.transaction() as session:
        roles = (
            await session.execute(
                select(Message.role).where(Message.conversation_id == reply.conversation_id).order_by(Message.id)
            )
        ).scalars()
        assert list(roles) == ["user", "assistant"]


async def test_tools_cost_their_catalog_price(db: Database, auto_runtime: AgentRuntime) -> None:
    user_id = await _user(db)
    created = await _chat(db, auto_runtime, user_id, "create a t3.micro instance named web-1")
    assert [(t.tool, t.credits_used, t.success) for t in created.tool_calls] == [("create_ec2_instance", 5, True)]
    assert (created.credits_used, created.credits_remaining) == (6, 14)
    listed = await _chat(db, auto_runtime, user_id, "list my EC2 instances", conversation_id=created.conversation_id)
    assert "web-1" in listed.response
    assert (listed.credits_used, listed.credits_remaining, listed.conversation_id) == (2, 12, created.conversation_id)
    assert await _logs(db, user_id) == [
        ("agent_message", None, 1, True),
        ("tool_use", "create_ec2_instance", 5, True),
        ("agent_message", None, 1, True),
        ("tool_use", "get_ec2_instances", 1, True),
    ]
    assert await balance_matching_ledger(db, user_id) == 12


async def test_a_heavy_tool_the_balance_cannot_pay_is_not_run(
    db: Database, auto_runtime: AgentRuntime, sandbox: SandboxCloud
) -> None:
    user_id = await _user(db, spend_down_to=3)
    reply = await _chat(db, auto_runtime, user_id, "create a t3.micro instance named web-1")
    assert [(t.tool, t.credits_used, t.success) for t in reply.tool_calls] == [("create_ec2_instance", 0, False)]
    assert "costs 5 credits and you have 2 left" in reply.response
    # A turn that could not act is free: its message credit comes back in the same request.
    assert (reply.credits_used, reply.credits_remaining, reply.low_credits) == (0, 3, True)
    assert await _logs(db, user_id) == [("agent_message", None, 1, False)]
    listed = await auto_runtime.toolbox.run(
        "get_ec2_instances", auto_runtime.toolbox.validate("get_ec2_instances", {}), target=CloudTarget(user_id)
    )
    assert listed.result == {"instances": []}


async def test_max_credits_caps_what_one_message_spends(db: Database, auto_runtime: AgentRuntime) -> None:
    user_id = await _user(db)
    reply = await _chat(db, auto_runtime, user_id, "create a bucket named never-made-bucket", max_credits=1)
    assert [(t.tool, t.success) for t in reply.tool_calls] == [("create_s3_bucket", False)]
    assert "max_credits 1" in reply.tool_calls[0].summary
    assert (reply.credits_used, reply.credits_remaining) == (0, 20)  # nothing could be done: free
    with pytest.raises(InvalidChatRequest):
        await _chat(db, auto_runtime, user_id, "hello", max_credits=0)
    assert await balance_matching_ledger(db, user_id) == 20


async def test_the_per_message_tool_call_cap(db: Database, runtime: AgentRuntime) -> None:
    user_id = await _user(db)
    capped = dataclasses.replace(runtime, max_tool_calls=1)
    reply = await _chat(db, capped, user_id, "show my EC2 instances, RDS databases and S3 buckets")
    assert [(t.tool, t.credits_used, t.success) for t in reply.tool_calls] == [
        ("get_ec2_instances", 1, True),
        ("get_rds_instances", 0, False),
        ("get_s3_buckets", 0, False),
    ]
    assert "limit of 1 tool calls" in reply.tool_calls[1].summary
    assert reply.credits_used == 2


async def test_a_request_aws_refuses_is_charged_and_logged_as_failed(db: Database, runtime: AgentRuntime) -> None:
    user_id = await _user(db)
    reply = await _chat(db, runtime, user_id, "stop instance i-0123456789abcdef0")
    assert [(t.tool, t.credits_used, t.success) for t in reply.tool_calls] == [("stop_ec2_instance", 1, False)]
    assert "did not succeed" in reply.response
    assert await _logs(db, user_id) == [("agent_message", None, 1, True), ("tool_use", "stop_ec2_instance", 1, False)]
    assert reply.credits_remaining == await balance_matching_ledger(db, user_id) == 18


async def test_a_tool_that_fails_on_our_side_is_refunded(db: Database, runtime: AgentRuntime) -> None:
    user_id = await _user(db)
    broken = dataclasses.replace(runtime, toolbox=build_toolbox(UnreachableCloud()))
    reply = await _chat(db, broken, user_id, "list S3 buckets")
    assert [(t.tool, t.credits_used, t.success) for t in reply.tool_calls] == [("get_s3_buckets", 0, False)]
    assert (reply.credits_used, reply.credits_remaining) == (1, 19)
    assert await _logs(db, user_id) == [("agent_message", None, 1, True), ("tool_use", "get_s3_buckets", 1, False)]
    async with db.transaction() as session:
        kinds = (await session.execute(select(CreditLedger.kind).order_by(CreditLedger.id))).scalars()
        assert list(kinds) == ["monthly_grant", "charge", "charge", "refund"]
    assert await balance_matching_ledger(db, user_id) == 19


async def test_an_idempotent_retry_returns_the_first_reply_and_charges_nothing(
    db: Database, auto_runtime: AgentRuntime
) -> None:
    user_id = await _user(db)
    request = f"create a bucket named retry-{uuid.uuid4().hex[:12]}"
    first = await _chat(db, auto_runtime, user_id, request, idempotency_key="k-1")
    again = await _chat(db, auto_runtime, user_id, request, idempotency_key="k-1")
    assert again == first
    assert first.credits_remaining == 18
    assert await _logs(db, user_id) == [("agent_message", None, 1, True), ("tool_use", "create_s3_bucket", 1, True)]
    assert await balance_matching_ledger(db, user_id) == 18


async def test_concurrent_retries_with_one_key_run_once(db: Database, runtime: AgentRuntime) -> None:
    user_id = await _user(db)
    replies = await asyncio.gather(
        *(_chat(db, runtime, user_id, "hello", idempotency_key="same") for _ in range(5)), return_exceptions=True
    )
    done = [r for r in replies if isinstance(r, ChatReply)]
    assert done, replies
    assert all(r == done[0] for r in done)
    assert await _logs(db, user_id) == [("agent_message", None, 1, True)]


async def test_someone_elses_conversation_is_not_found(db: Database, runtime: AgentRuntime) -> None:
    owner, other = await _user(db), await _user(db)
    reply = await _chat(db, runtime, owner, "hello")
    with pytest.raises(ConversationNotFound):
        await _chat(db, runtime, other, "hello", conversation_id=reply.conversation_id)
    assert await _logs(db, other) == []
