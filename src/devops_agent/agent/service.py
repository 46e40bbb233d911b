"""Chat with the agent: check, charge, act, record, with every step in its own transaction.

``send_message`` runs one message through three phases:

1. **Charge** (one transaction): replay a reply already given for the same
   ``Idempotency-Key``; find or open the conversation (404 for someone else's);
   charge ``agent_message`` (402 ``InsufficientCredits`` and nothing changes when the
   balance is short); store the user's message. Commit.
2. **Process** (no transaction): the agent loop calls the backend and the tools, in the
   customer's cloud account (``cloud_targets``); each tool call is checked against the
   plan (``guardrails``), billable creates become pending actions (``proposals``), and
   every other call is charged and settled in short transactions of its own (``metering``).
   A turn that could not act (every tool refused, not understood, no AWS account
   connected) gets its message credit back, with the reason in the usage log.
3. **Record** (one transaction): store the reply (on the user's message too, for
   replays) and read the new balance. If the backend failed, refund the message
   instead and record the failure, which a retry with the same key gets again.

A turn in flight holds a lease on its user message (``agent.turns``). When the request
is cancelled (a shutdown past its grace period, a client that went away), the turn's
charges are refunded before the cancellation goes on. When the process dies instead,
the lease runs out: a retry with the same key then refunds the dead attempt and runs
the turn afresh (phase 1 becomes ``_restart``), and ``devops-agent recover`` refunds
turns nobody retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent.billing.catalog import Catalog, cached_catalog
from devops_agent.billing.models import Conversation
from devops_agent.config import Settings
from devops_agent.db import Database
from devops_agent.errors import DomainError

from . import records, turns
from .backends import build_backend
from .backends.base import AssistantTurn, Backend, BackendError, Turn, UserTurn
from .cloud_targets import how_to_connect, target_for
from .guardrails import Guard
from .loop import DEFAULT_MAX_TOOL_CALLS, AgentLoop, AgentRun, ToolCallOut
from .metering import Meter
from .models import Message, Role
from .proposals import PendingActionOut, Proposer
from .tools import build_cloud, build_toolbox
from .tools.aws import DEFAULT_REGION
from .tools.registry import CloudTarget, Toolbox

HISTORY_MESSAGES = 20
TITLE_LENGTH = 60
MAX_MESSAGE_LENGTH = 8000
IN_PROGRESS = "A request with this Idempotency-Key is still being processed; retry shortly."


class AgentError(DomainError):
    """Base of the errors the agent's services raise on purpose (each declares its code and status)."""

    code = "invalid_request"
    status = 400


class ConversationNotFound(AgentError):
    code = "conversation_not_found"
    status = 404


class ReplyInProgress(AgentError):
    code = "conflict"
    status = 409

    def __init__(self, message: str = IN_PROGRESS) -> None:
        super().__init__(message)


class IdempotencyKeyReused(AgentError):
    code = "conflict"
    status = 409


class AgentUnavailable(AgentError):
    """The backend failed on our side; the message's credit was refunded."""

    code = "agent_unavailable"
    status = 502


class InvalidChatRequest(AgentError):
    code = "invalid_request"
    status = 400


class ChatReply(BaseModel):
    """The contract's reply to ``POST /api/chat``.

    ``credits_used``, ``balance_after`` and ``tool_calls`` are the reply's costs, stored
    on the assistant message too, so a reloaded conversation shows the same.
    """

    conversation_id: int
    response: str
    tool_calls: list[ToolCallOut]
    credits_used: int
    credits_remaining: int
    balance_after: int
    low_credits: bool
    pending_actions: list[PendingActionOut] = []  # billable creates awaiting the user's approval


@dataclass
class AgentRuntime:
    """What a process needs to run the agent: the backend, the tools and the prices."""

    backend: Backend
    toolbox: Toolbox
    catalog: Catalog
    max_tool_calls: int = DEFAULT_MAX_TOOL_CALLS
    low_credit_threshold: int = 5
    turn_lease: timedelta = turns.DEFAULT_LEASE
    auto_approve: bool = False  # creates run at once instead of awaiting the user's approval

    @property
    def region(self) -> str:
        """The region the tools act in (the guardrails check it against the plan)."""
        return str(getattr(self.toolbox.cloud, "region", None) or DEFAULT_REGION)

    async def aclose(self) -> None:
        """Close the backend's HTTP client, if it has one (Claude's does; the offline agent not)."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            await close()


@dataclass(frozen=True)
class _Started:
    conversation_id: int
    message_id: int
    usage_log_id: int
    transcript: list[Turn]
    keyed: bool
    turn: turns.TurnRef


class _Raced(Exception):
    """A concurrent request with the same idempotency key charged first."""


class _LeaseLost(Exception):
    """The turn was recovered (its lease ran out) while this process was still running it."""


def check_storable(text: str, what: str) -> None:
    """Refuse text a database cannot store (PostgreSQL text holds no NUL; UTF-8 has no lone surrogates)."""
    if "\x00" in text:
        raise InvalidChatRequest(f"The {what} contains a NUL character.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidChatRequest(f"The {what} is not valid Unicode text.") from exc


def _transcript(messages: list[Message], text: str) -> list[Turn]:
    """Earlier turns as the backend sees them: alternating, user first, ending with ``text``."""
    turns: list[Turn] = []
    for m in messages:
        if m.role == Role.USER:
            if turns and isinstance(turns[-1], UserTurn):
                turns[-1] = UserTurn(f"{turns[-1].text}\n\n{m.content}")
            else:
                turns.append(UserTurn(m.content))
        elif turns:
            turns.append(AssistantTurn(m.content))
    if turns and isinstance(turns[-1], UserTurn):
        turns[-1] = UserTurn(f"{turns[-1].text}\n\n{text}")
    else:
        turns.append(UserTurn(text))
    return turns


async def _keyed_message(session: AsyncSession, *, user_id: int, key: str, text: str) -> Message | None:
    """The user's message sent with ``key``; raises if the key was used for another message."""
    row = (
        await session.execute(select(Message).where(Message.user_id == user_id, Message.idempotency_key == key))
    ).scalar_one_or_none()
    if row is not None and row.content != text:
        raise IdempotencyKeyReused("This Idempotency-Key was already used for a different message.")
    return row


def _answered(row: Message) -> ChatReply | None:
    """The reply recorded for ``row`` (raises the failure recorded instead); None if there is none yet."""
    if row.reply_status is None or row.reply is None:
        return None
    if row.reply_status != 200:
        body = dict(row.reply)
        raise AgentUnavailable(str(body.pop("message", "")), **{k: v for k, v in body.items() if k != "error"})
    # Replies stored before ``balance_after`` existed: it is the balance they reported.
    return ChatReply.model_validate({"balance_after": row.reply.get("credits_remaining"), **row.reply})


def _in_flight(row: Message, now: datetime) -> bool:
    """A living turn: its lease (renewed while its process runs) has not run out."""
    return row.lease_expires_at is not None and row.lease_expires_at > now


async def _replay(session: AsyncSession, *, user_id: int, key: str, text: str) -> ChatReply | None:
    """The reply already given to ``key``; raises if it failed, is still being made, or was for another message."""
    row = await _keyed_message(session, user_id=user_id, key=key, text=text)
    if row is None:
        return None
    reply = _answered(row)
    if reply is None:
        raise ReplyInProgress()
    return reply


async def _history(session: AsyncSession, conversation_id: int, *, before: int | None = None) -> list[Message]:
    """The last ``HISTORY_MESSAGES`` messages of the conversation (those before message ``before``), oldest first."""
    query = select(Message).where(Message.conversation_id == conversation_id)
    if before is not None:
        query = query.where(Message.id < before)
    rows = await session.execute(query.order_by(Message.id.desc()).limit(HISTORY_MESSAGES))
    return list(rows.scalars())[::-1]


async def _restart(
    session: AsyncSession, meter: Meter, row: Message, *, text: str, now: datetime, lease: timedelta
) -> _Started:
    """Run an interrupted keyed turn afresh: refund the dead attempt once, charge and lease a new one.

    Raises ``ReplyInProgress`` when a concurrent retry restarted it first.
    """
    dead = turns.TurnRef.of(row)
    if not await turns.claim_expired(session, dead, now=now):
        raise ReplyInProgress()
    await turns.refund_charges(session, dead, now=now, reason=turns.INTERRUPTED_REASON)
    attempt = dead.attempt + 1
    meter.conversation_id = dead.conversation_id
    meter.run_key = turns.turn_scope(dead.message_id, attempt)  # a new charge, not a replay of the refunded one
    charged = await meter.charge_message(session)
    if charged.replayed:  # pragma: no cover - the claim above lets one request through
        raise _Raced
    await session.execute(
        update(Message)
        .where(Message.id == dead.message_id)
        .values(attempt=attempt, usage_log_id=charged.usage_log_id, lease_expires_at=now + lease)
        .execution_options(synchronize_session=False)
    )
    turn = turns.TurnRef(
        dead.message_id, dead.user_id, dead.conversation_id, attempt, charged.usage_log_id, dead.idempotency_key
    )
    history = await _history(session, dead.conversation_id, before=dead.message_id)
    return _Started(dead.conversation_id, dead.message_id, charged.usage_log_id, _transcript(history, text), True, turn)


async def _start(
    db: Database,
    meter: Meter,
    *,
    user_id: int,
    text: str,
    conversation_id: int | None,
    key: str | None,
    now: datetime,
    lease: timedelta,
) -> _Started | ChatReply:
    async with db.transaction(queue=meter.account) as session:
        if key is not None:
            row = await _keyed_message(session, user_id=user_id, key=key, text=text)
            if row is not None:
                replay = _answered(row)
                if replay is not None:
                    return replay
                if _in_flight(row, now):
                    raise ReplyInProgress()
                return await _restart(session, meter, row, text=text, now=now, lease=lease)
        if conversation_id is not None:
            conversation = await session.get(Conversation, conversation_id)
            if conversation is None or conversation.user_id != user_id:
                raise ConversationNotFound(f"There is no conversation {conversation_id}.")
            # A conversation's last activity is its last message sent (a new one's is set as
            # it is made): no UPDATE of the conversation when the reply is recorded.
            conversation.updated_at = now
            history = await _history(session, conversation.id)
        else:
            title = " ".join(text.split())[:TITLE_LENGTH] or "New conversation"
            conversation_id = await records.add(
                session, records.ADD_CONVERSATION, user_id=user_id, title=title, created_at=now, updated_at=now
            )
            history = []
        meter.conversation_id = conversation_id
        charged = await meter.charge_message(session)
        if charged.replayed:
            raise _Raced
        message_id = await records.add(
            session,
            records.ADD_MESSAGE,
            conversation_id=conversation_id,
            user_id=user_id,
            role=Role.USER.value,
            content=text,
            idempotency_key=key,
            created_at=now,
            lease_expires_at=now + lease,
            usage_log_id=charged.usage_log_id,
            attempt=0,
        )
        turn = turns.TurnRef(message_id, user_id, conversation_id, 0, charged.usage_log_id, key)
        return _Started(
            conversation_id, message_id, charged.usage_log_id, _transcript(history, text), key is not None, turn
        )


async def _finish(db: Database, runtime: AgentRuntime, meter: Meter, started: _Started, run: AgentRun) -> ChatReply:
    now = meter.clock()
    async with db.transaction() as session:
        tool_calls = list(run.tool_calls)
        # The balance this turn's last charge or refund left (each returns it; the message's
        # charge always ran): the balance after this message, without reading the account again.
        assert meter.balance is not None
        balance = meter.balance
        await records.add(
            session,
            records.ADD_MESSAGE,
            conversation_id=started.conversation_id,
            user_id=meter.user_id,
            role=Role.ASSISTANT.value,
            content=run.text,
            tool_calls=[t.model_dump() for t in tool_calls],
            credits_used=meter.spent,
            balance_after=balance,
            agent=runtime.backend.name,
            created_at=now,
        )
        reply = ChatReply(
            conversation_id=started.conversation_id,
            response=run.text,
            tool_calls=tool_calls,
            credits_used=meter.spent,
            credits_remaining=balance,
            balance_after=balance,
            low_credits=balance < runtime.low_credit_threshold,
            pending_actions=run.pending_actions,
        )
        # The lease given up and, for a keyed message, the reply kept for a retry with the
        # same Idempotency-Key: one UPDATE of the user's message.
        kept = {"reply_status": 200, "reply": reply.model_dump(mode="json")} if started.keyed else {}
        if not await turns.release(session, started.turn, **kept):
            raise _LeaseLost  # rolls back the reply: the turn was recovered and refunded meanwhile
    return reply


async def _fail(db: Database, meter: Meter, started: _Started, error: str) -> AgentUnavailable:
    """Refund the message, note the failure in the conversation and keep it for replays."""
    await meter.refund_message(started.usage_log_id, error)
    now = meter.clock()
    failure = AgentUnavailable(
        "The agent could not answer (the AI provider failed); your credit for this message was refunded. "
        "Please try again.",
        credits_remaining=meter.balance,
        conversation_id=started.conversation_id,
    )
    async with db.transaction() as session:
        if not await turns.release(session, started.turn):
            return failure  # recovered meanwhile: the recovery noted it in the conversation
        session.add(
            Message(
                conversation_id=started.conversation_id,
                user_id=meter.user_id,
                role=Role.ASSISTANT,
                content="(The agent could not answer this message; its credit was refunded.)",
                tool_calls=[],
                credits_used=meter.spent,
                balance_after=meter.balance,
                created_at=now,
            )
        )
        user_message = await session.get(Message, started.message_id)
        assert user_message is not None
        user_message.reply_status = failure.status
        user_message.reply = {"error": failure.code, "message": failure.message, **failure.extra}
    return failure


async def cloud_target(db: Database, runtime: AgentRuntime, *, user_id: int, org_id: int | None) -> CloudTarget | None:
    """Where the user's tools act (the team's account in its workspace); None when none is connected."""
    if not runtime.toolbox.cloud.needs_connection:  # the sandbox: no read needed
        return CloudTarget(user_id, org_id, region=runtime.region)
    async with db.transaction() as session:
        return await target_for(session, runtime.toolbox.cloud, user_id=user_id, org_id=org_id)


async def send_message(
    db: Database,
    runtime: AgentRuntime,
    *,
    user_id: int,
    message: str,
    clock: Callable[[], datetime],
    conversation_id: int | None = None,
    idempotency_key: str | None = None,
    max_credits: int | None = None,
    org_id: int | None = None,
) -> ChatReply:
    """Charge, run the agent on ``message``, record and return the reply (see the module doc).

    With ``org_id`` the conversation runs in that organization's workspace: its pool pays
    and the member's cap applies (``billing.errors.OrganizationNotFound`` for a non-member).
    """
    text = message.strip()
    if not text or len(text) > MAX_MESSAGE_LENGTH:
        raise InvalidChatRequest(f"The message must be 1 to {MAX_MESSAGE_LENGTH} characters.")
    check_storable(text, "message")
    run_key = f"chat:{idempotency_key}" if idempotency_key else None
    meter = Meter(db, runtime.catalog, clock, user_id, run_key, max_credits=max_credits, org_id=org_id)
    if max_credits is not None and max_credits < meter.message_cost:
        raise InvalidChatRequest(f"max_credits must be at least {meter.message_cost}, the price of a message.")
    try:
        started = await _start(
            db,
            meter,
            user_id=user_id,
            text=text,
            conversation_id=conversation_id,
            key=idempotency_key,
            now=clock(),
            lease=runtime.turn_lease,
        )
    except _Raced:
        assert idempotency_key is not None
        async with db.transaction() as session:
            replay = await _replay(session, user_id=user_id, key=idempotency_key, text=text)
        if replay is None:  # pragma: no cover - the racing request's rows commit with its charge
            raise ReplyInProgress("A request with this Idempotency-Key is still being processed.") from None
        return replay
    if isinstance(started, ChatReply):
        return started
    meter.tool_scope = turns.turn_scope(started.message_id, started.turn.attempt)
    target = await cloud_target(db, runtime, user_id=user_id, org_id=org_id)
    if target is None:  # CLOUD=aws and no account connected: say how to connect, charge nothing
        run = AgentRun(how_to_connect(org_id), no_charge_reason="could not act: no AWS account is connected")
    else:
        run = await _run_turn(db, runtime, meter, started, target)
    if run.no_charge_reason is not None:  # a turn that could not act is free; the usage log says why
        await meter.refund_message(started.usage_log_id, run.no_charge_reason)
    try:
        return await _finish(db, runtime, meter, started, run)
    except _LeaseLost:
        raise await _given_up(db, meter, started) from None


async def _run_turn(
    db: Database, runtime: AgentRuntime, meter: Meter, started: _Started, target: CloudTarget
) -> AgentRun:
    """Phase 2 under the turn's lease: the loop in ``target``'s account, with the plan's guardrails
    and approval of creates; a failure or a cancellation refunds before it goes on."""
    region = target.region or runtime.region
    guard = Guard(db, runtime.catalog, meter.clock, meter.user_id, meter.org_id, region=region)
    proposer = Proposer(
        db, runtime.catalog, meter.clock, meter.user_id, meter.org_id, runtime.auto_approve, started.conversation_id
    )
    loop = AgentLoop(
        backend=runtime.backend,
        toolbox=runtime.toolbox,
        meter=meter,
        target=target,
        max_tool_calls=runtime.max_tool_calls,
        guard=guard,
        proposer=proposer,
    )
    with turns.running():
        try:
            async with turns.keep_lease(db, started.turn, lease=runtime.turn_lease, clock=meter.clock):
                return await loop.run(started.transcript)
        except BackendError as exc:
            raise await _fail(db, meter, started, str(exc)) from exc
        except asyncio.CancelledError:
            # A shutdown past its grace period, or a client that went away: nobody gets this
            # reply, so nobody pays for it. The refund completes even if cancelled again.
            await turns.interrupt_shielded(db, started.turn, now=meter.clock())
            raise
        except Exception as exc:  # our bug: the user does not pay for it either
            await _fail(db, meter, started, f"{type(exc).__name__}: {exc}")
            raise


async def _given_up(db: Database, meter: Meter, started: _Started) -> AgentUnavailable:
    """The turn outlived its lease and was recovered: refund what it charged since, and say so."""
    async with db.transaction() as session:
        await turns.refund_charges(session, started.turn, now=meter.clock(), reason=turns.INTERRUPTED_REASON)
        meter.balance = await records.balance(session, meter.user_id, meter.org_id)
    return AgentUnavailable(
        "The agent took too long to answer and this message was given up; its credits were refunded. Please try again.",
        credits_remaining=meter.balance,
        conversation_id=started.conversation_id,
    )


# --- reading conversations ------------------------------------------------------------


async def list_conversations(session: AsyncSession, *, user_id: int, limit: int = 100) -> list[Conversation]:
    """The user's conversations, most recently active first."""
    rows = await session.execute(
        select(Conversation)
        .where(Conversation.user_id == user_id)
        .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
        .limit(limit)
    )
    return list(rows.scalars())


async def get_conversation(
    session: AsyncSession, *, user_id: int, conversation_id: int
) -> tuple[Conversation, list[Message]]:
    """A conversation of the user's with its messages; 404 for anyone else's."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None or conversation.user_id != user_id:
        raise ConversationNotFound(f"There is no conversation {conversation_id}.")
    messages = await session.execute(
        select(Message).where(Message.conversation_id == conversation_id).order_by(Message.id)
    )
    return conversation, list(messages.scalars())


def build_runtime(settings: Settings) -> AgentRuntime:
    """The runtime the settings describe: Claude or the offline agent, the sandbox or AWS."""
    return AgentRuntime(
        backend=build_backend(settings),
        toolbox=build_toolbox(build_cloud(settings)),
        catalog=cached_catalog(settings.pricing_file),
        low_credit_threshold=settings.low_credit_threshold,
        turn_lease=timedelta(seconds=settings.chat_turn_lease_seconds),
        auto_approve=settings.auto_approve_actions,
    )


# --- renaming and deleting conversations ---------------------------------------------


async def rename_conversation(session: AsyncSession, *, user_id: int, conversation_id: int, title: str) -> Conversation:
    """Give a conversation of the user's a new title (1 to 200 characters after trimming)."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None or conversation.user_id != user_id:
        raise ConversationNotFound(f"There is no conversation {conversation_id}.")
    clean = " ".join(title.split())
    if not clean or len(clean) > 200:
        raise InvalidChatRequest("A conversation's name must be 1 to 200 characters.")
    check_storable(clean, "name")
    conversation.title = clean
    await session.flush()
    return conversation


async def delete_conversation(session: AsyncSession, *, user_id: int, conversation_id: int) -> None:
    """Delete a conversation of the user's and its messages.

    What it cost stays: usage logs and ledger rows are the customer's statement, so the
    database only unlinks them (``conversation_id`` becomes null), never deletes them.
    """
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None or conversation.user_id != user_id:
        raise ConversationNotFound(f"There is no conversation {conversation_id}.")
    await session.delete(conversation)
    await session.flush()
