"""Creates proposed for approval: what the loop records instead of running a billable create.

A create starts something the customer pays AWS for, so the agent does not run it on
its own say: the loop records a pending action (nothing charged) and the reply
carries it; its owner approves or declines it (``approvals``). An operator setting
(``AUTO_APPROVE_ACTIONS``) or the plan's ``auto_approve`` flag runs creates at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from devops_agent.billing.catalog import Catalog
from devops_agent.db import Database

from .cloud_models import ActionStatus, PendingAction
from .guardrails import account_limits

ACTION_TTL = timedelta(minutes=15)


class PendingActionOut(BaseModel):
    """The contract's ``pending_actions`` item of a chat reply."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    tool: str
    input: dict[str, Any]
    credits: int
    expires_at: datetime


@dataclass
class Proposer:
    """Records a run's creates as pending actions, unless the setting or the plan approves them."""

    db: Database
    catalog: Catalog
    clock: Callable[[], datetime]
    user_id: int
    org_id: int | None
    auto_approve: bool = False
    conversation_id: int | None = None

    async def propose(self, tool: str, arguments: dict[str, Any], credits: int) -> PendingActionOut | None:
        """A pending action for the create, or None when it may run at once."""
        if self.auto_approve:
            return None
        assert self.conversation_id is not None
        now = self.clock()
        async with self.db.transaction() as session:
            account = await account_limits(session, self.catalog, user_id=self.user_id, org_id=self.org_id)
            if account.limits is not None and account.limits.auto_approve:
                return None
            action = PendingAction(
                user_id=self.user_id,
                organization_id=self.org_id,
                conversation_id=self.conversation_id,
                tool=tool,
                input=arguments,
                credits=credits,
                status=ActionStatus.PENDING.value,
                created_at=now,
                expires_at=now + ACTION_TTL,
            )
            session.add(action)
            await session.flush()
            return PendingActionOut.model_validate(action)
