"""Guardrails per plan and free turns that could not act, on SQLite and PostgreSQL.

The offline agent drives the real loop on the moto sandbox; every charge and refund
goes through the credits engine, and the ledger must still equal the balances.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import select

from devops_agent import billing
from devops_agent.agent.service import AgentRuntime, ChatReply, send_message
from devops_agent.agent.tools.registry import CloudTarget
from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.models import SubscriptionTier, UsageLog, UserSubscription
from devops_agent.db import Database
from tests.factories import T0, balance_matching_ledger, make_user


def clock() -> Any:
    return T0


async def _user(db: Database, *, tier: str = "free", balance: int | None = None) -> int:
    async with db.transaction() as session:
        user = await make_user(session)
        if tier != "free":
            tier_id = (
                await session.execute(select(SubscriptionTier.id).where(SubscriptionTier.name == tier))
            ).scalar_one()
            sub = (
                await session.execute(select(UserSubscription).where(UserSubscription.user_id == user.id))
            ).scalar_one()
            sub.tier_id = tier_id
        if balance is not None:
            await billing.adjust(session, user_id=user.id, amount=balance - 20, reason="test", admin_id=None, now=T0)
        return user.id


async def _chat(db: Database, runtime: AgentRuntime, user_id: int, message: str) -> ChatReply:
    return await send_message(db, runtime, user_id=user_id, message=message, clock=clock)


async def _logs(db: Database, user_id: int) -> list[tuple[str, str | None, bool, str | None]]:
    async with db.transaction() as session:
        rows = await session.execute(
            select(UsageLog.action_type, UsageLog.tool_name, UsageLog.success, UsageLog.error_message)
            .where(UsageLog.user_id == user_id)
            .order_by(UsageLog.id)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_the_catalog_gives_each_tier_its_limits_and_prices_by_size() -> None:
    catalog = load_catalog()
    free = catalog.tier("free")
    business = catalog.tier("business")
    assert free is not None
    assert free.limits is not None
    assert business is not None
    assert business.limits is not None
    assert free.limits.instance_types == ("t3.micro", "t4g.micro")
    assert "m7i.2xlarge" in business.limits.instance_types
    assert "p5.48xlarge" not in business.limits.instance_types
    assert (
        catalog.cost_of("create_ec2_instance", "t3.micro"),
        catalog.cost_of("create_ec2_instance", "m7i.large"),
    ) == (
        5,
        10,
    )
    assert catalog.cost_of("create_ec2_instance", "no.such") == catalog.cost_of("create_ec2_instance") == 5


async def test_an_instance_type_outside_the_plan_is_refused_and_nothing_is_charged(
    db: Database, auto_runtime: AgentRuntime
) -> None:
    user_id = await _user(db)
    reply = await _chat(db, auto_runtime, user_id, "create a p5.48xlarge instance named big-1")
    assert [(t.tool, t.credits_used, t.success) for t in reply.tool_calls] == [("create_ec2_instance", 0, False)]
    assert "does not allow instance type p5.48xlarge; allowed: t3.micro, t4g.micro" in reply.tool_calls[0].summary
    assert "t3.micro, t4g.micro" in reply.response
    assert (reply.credits_used, reply.credits_remaining) == (0, 20)
    [(kind, tool, success, reason)] = await _logs(db, user_id)
    assert (kind, tool, success) == ("agent_message", None, False)
    assert reason is not None
    assert "p5.48xlarge" in reason
    assert await balance_matching_ledger(db, user_id) == 20
    listed = await auto_runtime.toolbox.run(
        "get_ec2_instances", auto_runtime.toolbox.validate("get_ec2_instances", {}), target=CloudTarget(user_id)
    )
    assert listed.result == {"instances": []}


async def test_rds_class_and_storage_follow_the_plan(db: Database, auto_runtime: AgentRuntime) -> None:
    user_id = await _user(db)
    loop_refusals = []
    for args in (
        {"identifier": "big", "instance_class": "db.r6i.32xlarge", "allocated_storage_gb": 20},
        {"identifier": "wide", "instance_class": "db.t3.micro", "allocated_storage_gb": 1000},
    ):
        guard = _guard(db, auto_runtime, user_id)
        loop_refusals.append(
            await guard.check("create_rds_instance", auto_runtime.toolbox.validate("create_rds_instance", args))
        )
    assert loop_refusals[0] is not None
    assert "allowed: db.t3.micro, db.t4g.micro" in loop_refusals[0]
    assert loop_refusals[1] is not None
    assert "at most 20 GB" in loop_refusals[1]


def _guard(db: Database, runtime: AgentRuntime, user_id: int, region: str = "us-east-1") -> Any:
    from devops_agent.agent.guardrails import Guard

    return Guard(db, runtime.catalog, clock, user_id, None, region=region)


async def test_a_region_outside_the_plan_is_refused(db: Database, auto_runtime: AgentRuntime) -> None:
    user_id = await _user(db)
    args = auto_runtime.toolbox.validate("create_s3_bucket", {"name": "some-bucket"})
    refused = await _guard(db, auto_runtime, user_id, region="ap-southeast-2").check("create_s3_bucket", args)
    assert refused is not None
    assert "region ap-southeast-2; allowed: us-east-1, eu-west-1" in refused
    assert await _guard(db, auto_runtime, user_id).check("create_s3_bucket", args) is None
    assert await _guard(db, auto_runtime, user_id, region="ap-southeast-2").check("get_s3_buckets", args) is None


async def test_a_bigger_plan_allows_bigger_sizes_at_their_price(db: Database, auto_runtime: AgentRuntime) -> None:
    user_id = await _user(db, tier="business", balance=100)
    reply = await _chat(db, auto_runtime, user_id, "create a m7i.large instance named app-1")
    assert [(t.tool, t.credits_used, t.success) for t in reply.tool_calls] == [("create_ec2_instance", 10, True)]
    assert (reply.credits_used, reply.credits_remaining) == (11, 89)
    assert await balance_matching_ledger(db, user_id) == 89


async def test_the_monthly_number_of_creates_is_bounded(db: Database, auto_runtime: AgentRuntime) -> None:
    catalog = auto_runtime.catalog
    free = catalog.tier("free")
    assert free is not None
    assert free.limits is not None
    tight = dataclasses.replace(free, limits=dataclasses.replace(free.limits, creates_per_month=2))
    runtime = dataclasses.replace(auto_runtime, catalog=dataclasses.replace(catalog, tiers=(tight, *catalog.tiers[1:])))
    user_id = await _user(db)
    for n in (1, 2):
        made = await _chat(db, runtime, user_id, f"create a bucket named cap-{user_id}-{n}-{id(runtime)}")
        assert made.tool_calls[0].success, made.tool_calls
    refused = await _chat(db, runtime, user_id, f"create a bucket named cap-{user_id}-3-{id(runtime)}")
    assert "allows 2 creates a month and this account has made 2" in refused.tool_calls[0].summary
    assert refused.credits_used == 0
    assert await balance_matching_ledger(db, user_id) == 20 - 2 * 2


async def test_turns_that_could_not_act_are_free_and_the_log_says_why(db: Database, auto_runtime: AgentRuntime) -> None:
    user_id = await _user(db, balance=3)
    short = await _chat(db, auto_runtime, user_id, "create a t3.micro instance named web-1")
    assert (short.credits_used, short.credits_remaining) == (0, 3)
    assert "costs 5 credits and you have 2 left" in short.response
    puzzled = await _chat(db, auto_runtime, user_id, "what is the meaning of life?")
    assert "did not understand" in puzzled.response
    assert (puzzled.credits_used, puzzled.credits_remaining) == (0, 3)
    logs = await _logs(db, user_id)
    assert [(kind, success) for kind, _, success, _ in logs] == [("agent_message", False), ("agent_message", False)]
    assert "costs 5 credits" in (logs[0][3] or "")
    assert "not understood" in (logs[1][3] or "")
    assert await balance_matching_ledger(db, user_id) == 3


async def test_listing_and_explaining_still_cost_their_message(db: Database, auto_runtime: AgentRuntime) -> None:
    user_id = await _user(db)
    helped = await _chat(db, auto_runtime, user_id, "help")
    listed = await _chat(db, auto_runtime, user_id, "list S3 buckets")
    assert (helped.credits_used, listed.credits_used) == (1, 2)
    assert await balance_matching_ledger(db, user_id) == 17
