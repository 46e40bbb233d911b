"""What an account's credits were spent on: usage totals per tool and the usage log.

One implementation serves both kinds of account, named by who pays, as everywhere in
the engine: ``user_id`` alone is the user's own account (actions with no
organization), ``org_id`` an organization's pool, where ``user_id`` is the member
asking. In a pool, admins and the owner see every member's actions and members their
own (``orgs.can_see_everyone``); a user who is not a member gets
``OrganizationNotFound``, as for every route of an organization.

Read-only, except that reading an account first applies its due monthly reset (as
``get_account`` does), so the totals answered belong to the current period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from . import orgs, seats
from .accounts import apply_due_reset, get_account
from .errors import OrgForbidden
from .models import UsageLog, User, UserSubscription


def tool_name() -> ColumnElement[str]:
    """A usage row's tool, or its action type (``agent_message``) when it is the message itself.

    The one way every report names an action, so the per-tool counts of the usage
    page, the team page and the admin dashboard agree.
    """
    return func.coalesce(UsageLog.tool_name, UsageLog.action_type)


@dataclass(frozen=True)
class ToolUse:
    tool: str
    count: int


@dataclass(frozen=True)
class MemberUsage:
    """One member of a pool: who, this period's use beside their cap, and their actions per tool."""

    member: orgs.MemberView
    tools: list[ToolUse]


@dataclass(frozen=True)
class UsageStats:
    """An account's balance and use (``account``), with its actions per tool, most used first.

    For a pool, ``tools`` and ``members`` are what the asking member may see: everyone's
    for admins and the owner, their own for a member. Empty ``members`` for a user's own account.
    """

    account: UserSubscription
    tools: list[ToolUse]
    members: list[MemberUsage] = field(default_factory=list)


@dataclass(frozen=True)
class UsageEntry:
    log: UsageLog
    username: str  # the user who acted: in a pool, one of its members


@dataclass(frozen=True)
class UsagePage:
    entries: list[UsageEntry]
    total: int


def _paid_from(*, user_id: int | None, org_id: int | None) -> tuple[ColumnElement[bool], ...]:
    """The usage rows of an account: the user's own (no organization), or a pool's (one member's with ``user_id``)."""
    if org_id is None:
        return (UsageLog.user_id == user_id, UsageLog.organization_id.is_(None))
    if user_id is None:
        return (UsageLog.organization_id == org_id,)
    return (UsageLog.organization_id == org_id, UsageLog.user_id == user_id)


async def tool_counts(session: AsyncSession, *, user_id: int | None, org_id: int | None = None) -> list[ToolUse]:
    """Actions per tool paid by the account (see ``_paid_from``), most used first."""
    tool = tool_name()
    count = func.count(UsageLog.id)
    rows = await session.execute(
        select(tool, count)
        .where(*_paid_from(user_id=user_id, org_id=org_id))
        .group_by(tool)
        .order_by(count.desc(), tool)
    )
    return [ToolUse(str(name), int(n)) for name, n in rows.all()]


async def tool_counts_by_member(session: AsyncSession, *, org_id: int) -> dict[int, list[ToolUse]]:
    """Every member's actions per tool paid from the pool, most used first."""
    tool = tool_name()
    count = func.count(UsageLog.id)
    rows = await session.execute(
        select(UsageLog.user_id, tool, count)
        .where(UsageLog.organization_id == org_id)
        .group_by(UsageLog.user_id, tool)
        .order_by(UsageLog.user_id, count.desc(), tool)
    )
    out: dict[int, list[ToolUse]] = {}
    for uid, name, n in rows.all():
        out.setdefault(int(uid), []).append(ToolUse(str(name), int(n)))
    return out


async def _everyone(session: AsyncSession, *, user_id: int, org_id: int) -> bool:
    """Whether the member sees every member's usage of the pool (404 for a non-member)."""
    viewer = await orgs.membership(session, org_id=org_id, user_id=user_id)
    return orgs.can_see_everyone(viewer)


async def stats(session: AsyncSession, *, user_id: int, now: datetime, org_id: int | None = None) -> UsageStats:
    """The account's balance and actions per tool; for a pool, also per member (see ``UsageStats``)."""
    if org_id is None:
        account = await get_account(session, user_id=user_id, now=now)
        return UsageStats(account, await tool_counts(session, user_id=user_id))
    everyone = await _everyone(session, user_id=user_id, org_id=org_id)
    account = await get_account(session, user_id=None, org_id=org_id, now=now)
    tools = await tool_counts(session, user_id=None if everyone else user_id, org_id=org_id)
    by_member = await tool_counts_by_member(session, org_id=org_id)
    members = [
        MemberUsage(view, by_member.get(view.user_id, []))
        for view in await orgs.members(session, org_id=org_id, now=now)
        if everyone or view.user_id == user_id
    ]
    return UsageStats(account, tools, members)


async def history(
    session: AsyncSession, *, user_id: int, now: datetime, limit: int, offset: int, org_id: int | None = None
) -> UsagePage:
    """The account's usage log, newest first, one page; for a pool, what the member may see."""
    if org_id is None:
        await apply_due_reset(session, user_id=user_id, now=now)
        where = _paid_from(user_id=user_id, org_id=None)
    else:
        everyone = await _everyone(session, user_id=user_id, org_id=org_id)
        await apply_due_reset(session, user_id=None, org_id=org_id, now=now)
        where = _paid_from(user_id=None if everyone else user_id, org_id=org_id)
    total = await session.scalar(select(func.count()).select_from(UsageLog).where(*where))
    rows = await session.execute(
        select(UsageLog, User.username)
        .join(User, User.id == UsageLog.user_id)
        .where(*where)
        .order_by(UsageLog.created_at.desc(), UsageLog.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return UsagePage([UsageEntry(log, username) for log, username in rows.all()], int(total or 0))


@dataclass(frozen=True)
class PoolBilling:
    """A pool's seats, its period, and every member's use this period beside their cap (the billing page)."""

    seats: seats.Seats
    period_start: datetime
    period_end: datetime
    members: list[orgs.MemberView]


async def pool_billing(session: AsyncSession, *, org_id: int, user_id: int, now: datetime) -> PoolBilling:
    """The organization's billing page for its owner and admins (``OrgForbidden`` for a member, 404 for others)."""
    if not await _everyone(session, user_id=user_id, org_id=org_id):
        raise OrgForbidden("Only the owner and admins of the organization see its billing.")
    pool = await get_account(session, user_id=None, org_id=org_id, now=now)
    taken = await seats.seats_of(session, org_id=org_id, now=now)
    members = await orgs.members(session, org_id=org_id, now=now)
    return PoolBilling(taken, pool.current_period_start, pool.current_period_end, members)
