"""The organization's credit pool: shared by members, held by per-member caps, in the same ledger."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from devops_agent import billing
from devops_agent.billing import orgs
from devops_agent.billing.errors import InsufficientCredits, MemberCapReached, OrganizationNotFound
from devops_agent.billing.models import CreditLedger, LedgerKind, UsageLog
from devops_agent.billing.org_models import OrganizationMember
from devops_agent.db import Database
from tests.factories import T0, make_user
from tests.orgs.factories import add_member, fill_pool, make_org


async def _charge(db: Database, *, user_id: int, org_id: int) -> str:
    try:
        async with db.transaction() as s:
            await billing.charge(s, user_id=user_id, org_id=org_id, amount=1, action_type="agent_message", now=T0)
    except MemberCapReached:
        return "cap"
    except InsufficientCredits:
        return "empty"
    return "ok"


async def test_two_hundred_concurrent_charges_on_a_pool_of_100_with_caps_of_30(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        org = await make_org(s, owner=owner)
        team = [owner] + [await add_member(s, org, owner=owner) for _ in range(4)]
        await orgs.set_default_cap(s, org_id=org.id, actor_id=owner.id, cap=30, now=T0)
        await fill_pool(s, org, to=100, admin=owner)

    # 40 charges per member, interleaved, each in its own transaction on its own connection.
    jobs = [_charge(db, user_id=team[i % 5].id, org_id=org.id) for i in range(200)]
    # return_exceptions: every task finishes before the test does, even if one fails,
    # so no stray transaction outlives the test.
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes

    assert outcomes.count("ok") == 100
    async with db.transaction() as s:
        pool = await billing.get_account(s, user_id=None, org_id=org.id, now=T0)
        assert pool.balance == 0
        sums = await billing.ledger_sums(s, subscription_id=pool.id)
        assert sums == billing.Balance.of(pool)
        charged = await s.execute(
            select(CreditLedger.user_id, func.sum(-CreditLedger.monthly_delta - CreditLedger.purchased_delta))
            .where(CreditLedger.subscription_id == pool.id, CreditLedger.kind == LedgerKind.CHARGE)
            .group_by(CreditLedger.user_id)
        )
        per_member = {int(uid): int(n) for uid, n in charged.all()}
        counters = {m.user_id: m.credits_used for m in (await s.execute(select(OrganizationMember))).scalars()}
        logs = await s.scalar(select(func.count()).select_from(UsageLog).where(UsageLog.organization_id == org.id))
    assert sum(per_member.values()) == 100
    assert max(per_member.values()) <= 30
    assert counters == {u.id: per_member.get(u.id, 0) for u in team}
    assert logs == 100
    # Personal pools were not touched.
    async with db.transaction() as s:
        for user in team:
            assert (await billing.get_account(s, user_id=user.id, now=T0)).balance == 20


async def test_cap_refuses_even_with_credits_in_the_pool(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        org = await make_org(s, owner=owner)
        member = await add_member(s, org, owner=owner)
        await orgs.set_member_cap(s, org_id=org.id, actor_id=owner.id, user_id=member.id, cap=2)
    for _ in range(2):
        assert await _charge(db, user_id=member.id, org_id=org.id) == "ok"
    async with db.transaction() as s:
        with pytest.raises(MemberCapReached) as err:
            await billing.charge(s, user_id=member.id, org_id=org.id, amount=1, action_type="agent_message", now=T0)
        pool = await billing.get_account(s, user_id=None, org_id=org.id, now=T0)
    assert (err.value.cap, err.value.used) == (2, 2)
    assert pool.balance == 18
    # The owner has no cap and goes on spending.
    assert await _charge(db, user_id=owner.id, org_id=org.id) == "ok"


async def test_caps_reset_with_the_pools_period(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        org = await make_org(s, owner=owner)
        member = await add_member(s, org, owner=owner)
        await orgs.set_member_cap(s, org_id=org.id, actor_id=owner.id, user_id=member.id, cap=1)
        await billing.charge(s, user_id=member.id, org_id=org.id, amount=1, action_type="agent_message", now=T0)
        with pytest.raises(MemberCapReached):
            async with s.begin_nested():
                await billing.charge(s, user_id=member.id, org_id=org.id, amount=1, action_type="agent_message", now=T0)
    later = T0 + timedelta(days=32)
    async with db.transaction() as s:
        await billing.charge(s, user_id=member.id, org_id=org.id, amount=1, action_type="agent_message", now=later)
        pool = await billing.get_account(s, user_id=None, org_id=org.id, now=later)
        view = {v.user_id: v for v in await orgs.members(s, org_id=org.id, now=later)}
    assert pool.balance == 19  # a fresh month of Free credits, one spent
    assert view[member.id].credits_used == 1


async def test_a_refund_returns_credits_to_the_pool_and_to_the_cap(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        org = await make_org(s, owner=owner)
        member = await add_member(s, org, owner=owner)
        await orgs.set_member_cap(s, org_id=org.id, actor_id=owner.id, user_id=member.id, cap=5)
        result = await billing.charge(
            s,
            user_id=member.id,
            org_id=org.id,
            amount=5,
            action_type="tool_use",
            tool_name="create_ec2_instance",
            now=T0,
        )
    async with db.transaction() as s:
        await billing.refund(s, usage_log_id=result.usage_log_id, now=T0, error_message="AWS said no")
    async with db.transaction() as s:
        pool = await billing.get_account(s, user_id=None, org_id=org.id, now=T0)
        personal = await billing.get_account(s, user_id=member.id, now=T0)
        view = {v.user_id: v for v in await orgs.members(s, org_id=org.id, now=T0)}
        sums = await billing.ledger_sums(s, subscription_id=pool.id)
    assert pool.balance == 20
    assert sums.total == 20
    assert personal.balance == 20
    assert view[member.id].credits_used == 0


async def test_a_non_member_cannot_charge_the_pool(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        stranger = await make_user(s)
        org = await make_org(s, owner=owner)
    async with db.transaction() as s:
        with pytest.raises(OrganizationNotFound):
            await billing.charge(s, user_id=stranger.id, org_id=org.id, amount=1, action_type="agent_message", now=T0)


async def test_pack_and_upgrade_fill_the_organizations_pool(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        org = await make_org(s, owner=owner)
        purchase = await billing.create_purchase(
            s, user_id=owner.id, org_id=org.id, credits_amount=250, price_paid="20.00", now=T0
        )
        await billing.grant_purchase(s, purchase_id=purchase.id, now=T0)
        pro = await billing.tier_by_name(s, "professional")
        await billing.change_tier(s, user_id=owner.id, org_id=org.id, tier_id=pro.id, now=T0)
        pool = await billing.get_account(s, user_id=None, org_id=org.id, now=T0)
        personal = await billing.get_account(s, user_id=owner.id, now=T0)
        sums = await billing.ledger_sums(s, subscription_id=pool.id)
        due = await billing.due_account_org_ids(s, now=T0 + timedelta(days=40))
        due_users = await billing.due_account_user_ids(s, now=T0 + timedelta(days=40))
    assert (pool.credits_remaining, pool.purchased_credits_remaining) == (1000, 250)
    assert (sums.monthly, sums.purchased) == (1000, 250)
    assert personal.balance == 20
    assert personal.tier.name == "free"
    assert due == [org.id]
    assert owner.id in due_users


async def test_an_account_must_be_named(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        await make_org(s, owner=owner)
        with pytest.raises(ValueError, match="user_id or org_id"):
            await billing.get_account(s, user_id=None, now=T0)
