"""The customer's view of their ledger: every movement of a balance, charges grouped by message.

The ledger has one row per change of a balance; a customer reads it as "what happened
to my credits". One message to the agent charges the message and then each tool it ran,
each a row of its own; this view shows them as one movement (the message and its tools,
with the total), which is how the chat showed the reply's cost.

How a tool's charge finds its message: it is the latest message charge of the same user
in the same conversation before it (a message's tools are charged after the message and
before the reply, and the chat sends one message of a conversation at a time). The
ledger itself is not changed: the grouping is computed when read, in one window pass
over the account's charges.

Pages are cut between groups, newest first; the cursor is the id of the last group's
first row, so a group is never split across two pages. The credits of every movement
ever listed add up to the balance (``test_activity`` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import ActionType, CreditLedger, LedgerKind, UsageLog

MAX_LIMIT = 200


@dataclass(frozen=True)
class Action:
    """One charged (or refunded) action inside a movement: ``agent_message`` or a tool's name."""

    name: str
    credits: int
    success: bool


@dataclass(frozen=True)
class Movement:
    id: int
    at: datetime
    kind: str
    credits: int
    monthly_after: int
    purchased_after: int
    promotional_after: int
    reason: str | None
    conversation_id: int | None
    user_id: int | None
    actions: tuple[Action, ...] = ()


@dataclass(frozen=True)
class MovementPage:
    movements: list[Movement]
    next_cursor: int | None


def _grouped(subscription_id: int, start: datetime | None, end: datetime | None, kind: LedgerKind | None) -> Any:
    """The account's ledger rows (filtered), each with the id of its movement (``group_id``).

    A tool's charge belongs to the latest message charge of the same user and
    conversation at or before it: one window pass over the rows (both databases run
    window functions), no join against a derived table (which a planner without
    statistics turns into a nested loop over every pair of rows).
    """
    charge = CreditLedger.kind == LedgerKind.CHARGE.value
    first_row = CreditLedger.operation_id.is_(None)  # an operation that moved several grants is one movement
    message = and_(charge, first_row, UsageLog.action_type == ActionType.AGENT_MESSAGE.value)
    latest_message = func.max(case((message, CreditLedger.id), else_=None)).over(
        partition_by=(UsageLog.user_id, UsageLog.conversation_id), order_by=CreditLedger.id, rows=(None, 0)
    )
    tool_charge = and_(charge, UsageLog.action_type == ActionType.TOOL_USE.value, UsageLog.conversation_id.is_not(None))
    operation = func.coalesce(CreditLedger.operation_id, CreditLedger.id)
    group = func.coalesce(case((tool_charge, latest_message), else_=None), operation)
    rows = (
        select(CreditLedger.id.label("ledger_id"), group.label("group_id"))
        .outerjoin(UsageLog, UsageLog.id == CreditLedger.usage_log_id)
        .where(CreditLedger.subscription_id == subscription_id)
    )
    if start is not None:
        rows = rows.where(CreditLedger.created_at >= start)
    if end is not None:
        rows = rows.where(CreditLedger.created_at < end)
    if kind is not None:
        rows = rows.where(CreditLedger.kind == kind.value)
    return rows.subquery()


async def movements(
    session: AsyncSession,
    *,
    subscription_id: int,
    limit: int = 50,
    cursor: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    kind: LedgerKind | None = None,
) -> MovementPage:
    """One page of an account's movements, newest first (see the module doc)."""
    listed = _grouped(subscription_id, start, end, kind)
    keys_query = select(listed.c.group_id).distinct().order_by(listed.c.group_id.desc()).limit(limit + 1)
    if cursor is not None:
        keys_query = keys_query.where(listed.c.group_id < cursor)
    keys = [int(k) for k in (await session.execute(keys_query)).scalars()]
    more = len(keys) > limit
    keys = keys[:limit]
    if not keys:
        return MovementPage([], None)
    members = dict(
        (int(row_id), int(key))
        for row_id, key in await session.execute(
            select(listed.c.ledger_id, listed.c.group_id).where(listed.c.group_id.in_(keys))
        )
    )
    found = await session.execute(
        select(CreditLedger, UsageLog)
        .outerjoin(UsageLog, UsageLog.id == CreditLedger.usage_log_id)
        .where(CreditLedger.id.in_(list(members)))
        .order_by(CreditLedger.id)
    )
    groups: dict[int, list[tuple[CreditLedger, UsageLog | None]]] = {}
    for ledger, usage in found:
        groups.setdefault(members[ledger.id], []).append((ledger, usage))
    page = [_movement(key, groups[key]) for key in keys if key in groups]
    return MovementPage(page, keys[-1] if more else None)


def _movement(key: int, rows: list[tuple[CreditLedger, UsageLog | None]]) -> Movement:
    first, first_usage = rows[0]
    last, _ = rows[-1]
    by_usage: dict[int, Action] = {}  # one action per usage log, however many grants paid it
    for ledger, usage in rows:
        if usage is None:
            continue
        credits = -ledger.delta if ledger.kind == LedgerKind.CHARGE.value else ledger.delta
        earlier = by_usage.get(usage.id)
        by_usage[usage.id] = Action(
            name=usage.tool_name or ActionType.AGENT_MESSAGE.value,
            credits=credits + (earlier.credits if earlier else 0),
            success=bool(usage.success),
        )
    actions = tuple(by_usage.values())
    return Movement(
        id=key,
        at=first.created_at,
        kind=first.kind,
        credits=sum(ledger.delta for ledger, _ in rows),
        monthly_after=last.monthly_balance_after,
        purchased_after=last.purchased_balance_after,
        promotional_after=last.promotional_balance_after,
        reason=first.reason,
        conversation_id=first_usage.conversation_id if first_usage is not None else None,
        user_id=first.user_id,
        actions=actions,
    )


async def all_movements(
    session: AsyncSession,
    *,
    subscription_id: int,
    start: datetime | None = None,
    end: datetime | None = None,
    kind: LedgerKind | None = None,
) -> list[Movement]:
    """Every movement (newest first) for the CSV export, read page by page."""
    out: list[Movement] = []
    cursor: int | None = None
    while True:
        page = await movements(
            session, subscription_id=subscription_id, limit=MAX_LIMIT, cursor=cursor, start=start, end=end, kind=kind
        )
        out.extend(page.movements)
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor
