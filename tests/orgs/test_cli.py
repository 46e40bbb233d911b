"""`devops-agent reset-due` renews organizations' pools too (Typer's runner, a real database)."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from typer.testing import CliRunner

from devops_agent import billing
from devops_agent.billing.models import UserSubscription
from devops_agent.billing.periods import utcnow
from devops_agent.cli import app
from devops_agent.db import Database
from tests.factories import T0, make_user
from tests.orgs.factories import make_org


def _in_db(url: str, work):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        db = Database(url)
        try:
            async with db.transaction() as s:
                return await work(s)
        finally:
            await db.dispose()

    return asyncio.run(go())


def test_reset_due_renews_the_pools_of_organizations(env: str) -> None:
    async def setup(s):  # type: ignore[no-untyped-def]
        owner = await make_user(s, now=T0)
        org = await make_org(s, owner=owner, now=T0)
        await billing.charge(s, user_id=owner.id, org_id=org.id, amount=5, action_type="agent_message", now=T0)
        return org.id

    org_id = _in_db(env, setup)
    result = CliRunner().invoke(app, ["reset-due"])
    assert result.exit_code == 0, result.output
    assert "Reset 2 account(s)." in result.output  # the owner's own account and the pool

    async def pool(s):  # type: ignore[no-untyped-def]
        return (
            await s.execute(select(UserSubscription).where(UserSubscription.organization_id == org_id))
        ).scalar_one()

    renewed = _in_db(env, pool)
    assert renewed.current_period_start <= utcnow() < renewed.current_period_end
    assert (renewed.credits_remaining, renewed.credits_used_this_month) == (20, 0)
