"""Approving or declining a create the agent proposed (``POST /api/chat/actions/{id}/...``).

Approval follows the chat's shape, with each step in its own transaction:

1. **Claim** (one transaction, the action's row locked): only its owner sees it (404
   for anyone else); an approved one answers its recorded reply again (a repeated
   approval charges and runs nothing); a declined or expired one is closed (409); one
   past its 15 minutes expires (410). The plan's guardrails are checked again (a month's
   creates may have run out meanwhile), then the action's price is charged (402 and the
   action stays open when the balance is short) and it is marked ``running`` with a
   lease (``expires_at``, the chat turn's lease). Commit.
2. **Run** (no transaction): the tool runs on the cloud; the lease is renewed meanwhile.
3. **Record** (one transaction): settle the charge as a chat tool call is settled
   (refunded when it failed on our side), add the answer to the conversation, keep it
   on the action, and mark the action ``approved``.

A process that dies between 1 and 3 leaves the action ``running`` and its credits
spent. Once its lease has run out, the next approval of it (or ``devops-agent recover``)
refunds the charge and closes the action with that answer (``recover_action``): nobody
knows whether the create happened, and a customer is not charged for what may not have.

Declining costs nothing and closes the action.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing, metrics
from devops_agent.billing.models import ActionType, Conversation
from devops_agent.db import Database, rowcount

from . import records, turns
from .backends.offline import describe_result
from .cloud_models import ActionStatus, PendingAction
from .cloud_targets import target_for
from .guardrails import account_limits, creates_this_month, refusal
from .loop import ToolCallOut
from .models import Message, Role
from .service import AgentError, AgentRuntime, ChatReply, ReplyInProgress
from .tools.registry import ToolOutcome


class ActionNotFound(AgentError):
    code = "action_not_found"
    status = 404


class ActionClosed(AgentError):
    code = "action_closed"
    status = 409


class CloudNotConnected(AgentError):
    code = "cloud_not_connected"
    status = 400


class ActionExpired(AgentError):
    code = "action_expired"
    status = 410


async def _owned(session: AsyncSession, *, user_id: int, action_id: int) -> PendingAction:
    action = (
        await session.execute(select(PendingAction).where(PendingAction.id == action_id).with_for_update())
    ).scalar_one_or_none()
    if action is None or action.user_id != user_id:
        raise ActionNotFound(f"There is no pending action {action_id}.")
    return action


def _expired(action: PendingAction, now: datetime) -> bool:
    return action.status == ActionStatus.EXPIRED.value or (
        action.status == ActionStatus.PENDING.value and now >= action.expires_at
    )


async def _close(db: Database, action_id: int, status: ActionStatus, now: datetime) -> None:
    async with db.transaction() as session:
        action = await session.get(PendingAction, action_id)
        if action is not None and action.status == ActionStatus.PENDING.value:
            action.status, action.closed_at = status.value, now


INTERRUPTED = "interrupted before its outcome was known"


async def _record(
    session: AsyncSession,
    action: PendingAction,
    *,
    text: str,
    call: ToolCallOut,
    now: datetime,
    agent: str | None,
    low_credit_threshold: int,
) -> ChatReply:
    """Add the answer to the conversation and keep it on the (now approved or declined) action."""
    balance = await records.balance(session, action.user_id, action.organization_id)
    session.add(
        Message(
            conversation_id=action.conversation_id,
            user_id=action.user_id,
            role=Role.ASSISTANT,
            content=text,
            tool_calls=[call.model_dump()],
            credits_used=call.credits_used,
            balance_after=balance,
            agent=agent,
            created_at=now,
        )
    )
    reply = ChatReply(
        conversation_id=action.conversation_id,
        response=text,
        tool_calls=[call],
        credits_used=call.credits_used,
        credits_remaining=balance,
        balance_after=balance,
        low_credits=balance < low_credit_threshold,
    )
    action.reply = reply.model_dump(mode="json")
    action.closed_at = now
    conversation = await session.get(Conversation, action.conversation_id)
    if conversation is not None:
        conversation.updated_at = now
    return reply


async def approve(
    db: Database, runtime: AgentRuntime, *, user_id: int, action_id: int, clock: Callable[[], datetime]
) -> ChatReply:
    """Charge and run a pending action of the user's; answer like a chat reply (see the module doc)."""
    now = clock()
    expired = False
    agent, threshold = runtime.backend.name, runtime.low_credit_threshold
    async with db.transaction() as session:
        action = await _owned(session, user_id=user_id, action_id=action_id)
        target = await target_for(session, runtime.toolbox.cloud, user_id=user_id, org_id=action.organization_id)
        if action.status == ActionStatus.APPROVED.value and action.reply is not None:
            return ChatReply.model_validate(action.reply)
        if action.status == ActionStatus.RUNNING.value:
            if action.expires_at > now:
                raise ReplyInProgress("This action is being run; its answer comes with the first approval.")
            return await recover_action(session, action, now=now, low_credit_threshold=threshold)
        if _expired(action, now):
            expired = True
        elif action.status != ActionStatus.PENDING.value:
            raise ActionClosed(f"Action {action_id} is {action.status}; ask the agent again.")
        elif target is None:
            raise CloudNotConnected("No AWS account is connected; connect one on the account page, then approve.")
        else:
            account = await account_limits(session, runtime.catalog, user_id=user_id, org_id=action.organization_id)
            made = await creates_this_month(session, user_id=user_id, org_id=action.organization_id, now=now)
            arguments = runtime.toolbox.validate(action.tool, action.input)
            refused = refusal(
                account.limits,
                tier_name=account.tier_name,
                tool=action.tool,
                arguments=arguments,
                region=target.region or runtime.region,
                created=made,
            )
            if refused is not None:
                action.status = ActionStatus.DECLINED.value
                call = ToolCallOut(tool=action.tool, credits_used=0, success=False, summary=refused)
                return await _record(
                    session,
                    action,
                    text=f"{action.tool} was not run: {refused}",
                    call=call,
                    now=now,
                    agent=agent,
                    low_credit_threshold=threshold,
                )
            charged = await billing.charge(
                session,
                user_id=user_id,
                amount=action.credits,
                action_type=ActionType.TOOL_USE,
                tool_name=action.tool,
                conversation_id=action.conversation_id,
                now=now,
                idempotency_key=f"action:{action.id}",
                org_id=action.organization_id,
            )
            action.status, action.usage_log_id = ActionStatus.RUNNING.value, charged.usage_log_id
            action.expires_at = now + runtime.turn_lease  # the run's lease, renewed while it runs
            if not charged.replayed:
                metrics.count_charge(action.tool, charged.credits_used)
    if expired:
        await _close(db, action_id, ActionStatus.EXPIRED, now)
        raise ActionExpired(f"Action {action_id} expired unanswered; nothing was charged. Ask the agent again.")

    assert target is not None  # checked before the charge
    renew = partial(_renew, db, action_id)
    async with turns.keep_renewed(renew, lease=runtime.turn_lease, clock=clock, what=f"action {action_id}"):
        outcome = await runtime.toolbox.run(action.tool, arguments, target=target)

    cost = await _settle(db, charged.usage_log_id, action.credits, outcome, clock, tool=action.tool)
    now = clock()
    async with db.transaction() as session:
        action = await _owned(session, user_id=user_id, action_id=action_id)
        if action.status != ActionStatus.RUNNING.value and action.reply is not None:
            return ChatReply.model_validate(action.reply)  # recovered meanwhile (its lease had run out)
        action.status = ActionStatus.APPROVED.value
        text = describe_result(action.tool, outcome.result, not outcome.ok)
        call = ToolCallOut(tool=action.tool, credits_used=cost, success=outcome.ok, summary=outcome.summary)
        return await _record(
            session, action, text=text, call=call, now=now, agent=agent, low_credit_threshold=threshold
        )


async def _renew(db: Database, action_id: int, until: datetime) -> bool:
    """Extend a running action's lease; False once it is no longer running (recovered)."""
    async with db.transaction() as session:
        renewed = await session.execute(
            update(PendingAction)
            .where(PendingAction.id == action_id, PendingAction.status == ActionStatus.RUNNING.value)
            .values(expires_at=until)
            .execution_options(synchronize_session=False)
        )
    return rowcount(renewed) == 1


async def recover_action(
    session: AsyncSession, action: PendingAction, *, now: datetime, low_credit_threshold: int
) -> ChatReply:
    """Close a ``running`` action whose lease ran out (its process died): refund its charge,
    answer that, and keep the answer for every later approval. ``action`` is locked."""
    assert action.usage_log_id is not None  # running: charged
    await billing.refund(session, usage_log_id=action.usage_log_id, now=now, error_message=INTERRUPTED)
    metrics.count_refund(action.tool, action.credits)
    action.status = ActionStatus.APPROVED.value
    call = ToolCallOut(tool=action.tool, credits_used=0, success=False, summary=INTERRUPTED)
    text = (
        f"{action.tool} was {INTERRUPTED}, so its {action.credits} credits were refunded. "
        "Check your AWS account before asking the agent again: it may have been created."
    )
    return await _record(
        session, action, text=text, call=call, now=now, agent=None, low_credit_threshold=low_credit_threshold
    )


async def recover_expired(db: Database, *, now: datetime, low_credit_threshold: int) -> list[PendingAction]:
    """Recover every running action whose lease ran out (``devops-agent recover``), one transaction each."""
    async with db.transaction() as session:
        stale = (
            await session.scalars(
                select(PendingAction.id).where(
                    PendingAction.status == ActionStatus.RUNNING.value, PendingAction.expires_at <= now
                )
            )
        ).all()
    recovered = []
    for action_id in stale:
        async with db.transaction() as session:
            action = (
                await session.execute(select(PendingAction).where(PendingAction.id == action_id).with_for_update())
            ).scalar_one()
            if action.status == ActionStatus.RUNNING.value and action.expires_at <= now:  # not taken meanwhile
                await recover_action(session, action, now=now, low_credit_threshold=low_credit_threshold)
                recovered.append(action)
    return recovered


async def _settle(
    db: Database, usage_log_id: int, cost: int, outcome: ToolOutcome, clock: Callable[[], datetime], *, tool: str
) -> int:
    """What the run finally cost: refunded when it failed on our side (as a chat's tool call)."""
    if outcome.ok:
        return cost
    async with db.transaction() as session:
        if outcome.our_side:
            refunded = await billing.refund(
                session, usage_log_id=usage_log_id, now=clock(), error_message=outcome.summary
            )
            if not refunded.replayed:
                metrics.count_refund(tool, cost)
            return 0
        await billing.mark_failed(session, usage_log_id=usage_log_id, error_message=outcome.summary)
        return cost


async def decline(db: Database, *, user_id: int, action_id: int, now: datetime) -> None:
    """Close a pending action of the user's at no cost (409 when it is no longer open)."""
    async with db.transaction() as session:
        action = await _owned(session, user_id=user_id, action_id=action_id)
        if action.status != ActionStatus.PENDING.value or _expired(action, now):
            state = ActionStatus.EXPIRED.value if _expired(action, now) else action.status
            raise ActionClosed(f"Action {action_id} is {state}; there is nothing to decline.")
        action.status, action.closed_at = ActionStatus.DECLINED.value, now
        call = ToolCallOut(tool=action.tool, credits_used=0, success=False, summary="declined")
        session.add(
            Message(
                conversation_id=action.conversation_id,
                user_id=user_id,
                role=Role.ASSISTANT,
                content=f"Declined: {action.tool} was not run and nothing was charged.",
                tool_calls=[call.model_dump()],
                created_at=now,
            )
        )
