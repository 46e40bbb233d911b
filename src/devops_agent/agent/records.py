"""The rows a chat turn writes (its conversation, its messages) and the balance it reads.

These run on every chat, so they are Core statements built once and run with a dict of
values on the session's connection: a turn then costs SQLAlchemy a cache lookup per
statement, not a new statement with its bound values, nor the ORM's unit of work and
execution hooks (nothing on this path reads the rows back as objects, and nothing ORM
is pending in the session when they run).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Executable, Insert, Result, Table, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent.billing.models import Conversation, UserSubscription

from .models import Message

_messages = cast(Table, Message.__table__)
_conversations = cast(Table, Conversation.__table__)
_accounts = cast(Table, UserSubscription.__table__)

ADD_CONVERSATION = insert(_conversations).returning(_conversations.c.id)
ADD_MESSAGE = insert(_messages).returning(_messages.c.id)
_BALANCE = select(
    _accounts.c.credits_remaining + _accounts.c.purchased_credits_remaining + _accounts.c.promotional_credits_remaining
)
_USER_BALANCE = _BALANCE.where(_accounts.c.user_id == bindparam("owner"))
_POOL_BALANCE = _BALANCE.where(_accounts.c.organization_id == bindparam("owner"))


async def run(session: AsyncSession, statement: Executable, **values: Any) -> Result[Any]:
    """One of the statements above, with ``values``, on the session's connection."""
    return await (await session.connection()).execute(statement, values)


async def add(session: AsyncSession, statement: Insert, **values: Any) -> int:
    """Run ``ADD_CONVERSATION`` or ``ADD_MESSAGE``; the new row's id."""
    return int((await run(session, statement, **values)).scalar_one())


async def balance(session: AsyncSession, user_id: int, org_id: int | None = None) -> int:
    """The balance that paid: the organization's pool in a team workspace, else the user's own."""
    if org_id is not None:
        return int((await run(session, _POOL_BALANCE, owner=org_id)).scalar_one())
    return int((await run(session, _USER_BALANCE, owner=user_id)).scalar_one())
