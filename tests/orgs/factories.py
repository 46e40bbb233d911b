"""Plain helpers that make organizations through the real engine."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing
from devops_agent.billing import orgs
from devops_agent.billing.models import User
from devops_agent.billing.org_models import MemberRole, Organization
from tests.factories import T0, make_user


async def make_org(session: AsyncSession, *, owner: User, name: str = "Acme", now: datetime = T0) -> Organization:
    return await orgs.create_organization(session, user_id=owner.id, name=name, now=now)


async def add_member(
    session: AsyncSession, org: Organization, *, owner: User, role: MemberRole = MemberRole.MEMBER, now: datetime = T0
) -> User:
    """A new user who joined ``org`` through an invitation."""
    user = await make_user(session, now=now)
    new = await orgs.invite(session, org_id=org.id, actor_id=owner.id, email=user.email, role=role, now=now)
    await orgs.accept_invitation(session, token=new.token, user_id=user.id, now=now)
    return user


async def fill_pool(session: AsyncSession, org: Organization, *, to: int, admin: User, now: datetime = T0) -> None:
    """Bring the pool's balance to exactly ``to`` credits with an admin adjustment."""
    pool = await billing.get_account(session, user_id=None, org_id=org.id, now=now)
    delta = to - pool.balance
    if delta:
        await billing.adjust(
            session, user_id=admin.id, org_id=org.id, amount=delta, reason="test pool", admin_id=admin.id, now=now
        )
