"""The agent over HTTP: ``POST /api/chat`` and the conversations it keeps.

``POST /api/chat`` deliberately takes the ``Database`` and not the per-request
``SessionDep``: the agent waits on the LLM and on cloud APIs, and the service opens
short transactions of its own around those waits (charge and commit first, record
afterwards). Wrapping it in the request's transaction would hold row locks (and on
SQLite, every writer) for as long as Claude thinks.

A client that goes away while the agent works cancels the turn (``until_disconnected``):
nobody would read the reply, so the service refunds it and frees its Idempotency-Key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Protocol, TypeVar

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Request, Response
from pydantic import BaseModel, Field, field_validator

from devops_agent import notifications
from devops_agent.agent import approvals
from devops_agent.agent.loop import ToolCallOut
from devops_agent.agent.service import (
    MAX_MESSAGE_LENGTH,
    AgentRuntime,
    ChatReply,
    build_runtime,
    delete_conversation,
    get_conversation,
    list_conversations,
    rename_conversation,
    send_message,
)
from devops_agent.billing.models import User
from devops_agent.config import Settings
from devops_agent.db import Database
from devops_agent.payments import auto_recharge
from devops_agent.web.api import AUTHED, POOL_CREDITS, errors
from devops_agent.web.deps import CurrentUser, DatabaseDep, IdempotencyKeyDep, SessionDep
from devops_agent.web.schemas import FromAttributes, Strict, Timestamp

router = APIRouter(prefix="/api", tags=["agent"])
T = TypeVar("T")


async def get_runtime(request: Request) -> AgentRuntime:
    """The process's agent runtime, built from the settings on first use (tests may set their own)."""
    runtime: AgentRuntime | None = getattr(request.app.state, "agent_runtime", None)
    if runtime is None:
        settings: Settings = request.app.state.settings
        runtime = request.app.state.agent_runtime = build_runtime(settings)
    return runtime


async def get_clock(request: Request) -> Callable[[], datetime]:
    """The clock itself, not one reading: a run spans time and each step reads it anew."""
    clock: Callable[[], datetime] = request.app.state.clock
    return clock


RuntimeDep = Annotated[AgentRuntime, Depends(get_runtime)]
# The clock itself (a callable, read at each step); ``deps.NowDep`` is one reading of it.
ClockDep = Annotated[Callable[[], datetime], Depends(get_clock)]
IdPath = Annotated[int, Path(ge=1, le=2**62)]


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it if the client disconnects first (the body is read already)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception:  # a server that cannot tell us: let the turn run to its end
            return
        task.cancel()

    watcher = asyncio.create_task(watch())
    try:
        return await task
    finally:
        watcher.cancel()


class ChatIn(Strict):
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_LENGTH)
    conversation_id: int | None = Field(default=None, ge=1, le=2**62)
    max_credits: int | None = Field(
        default=None, ge=1, le=1_000_000, description="The most this message (with its tool calls) may spend."
    )
    org_id: int | None = Field(
        default=None, ge=1, le=2**62, description="Run in this organization's workspace: its pool pays."
    )


class ConversationRenameIn(Strict):
    title: str = Field(min_length=1, max_length=200)


class ConversationOut(FromAttributes):
    id: int
    title: str
    created_at: Timestamp
    updated_at: Timestamp


class ConversationsOut(BaseModel):
    conversations: list[ConversationOut]


class MessageOut(FromAttributes):
    """A message; an assistant reply carries its costs as the chat reply did (null on user messages)."""

    role: str
    content: str
    created_at: Timestamp
    credits_used: int | None = None
    balance_after: int | None = None
    tool_calls: list[ToolCallOut] = []
    agent: str | None = Field(default=None, description="The backend that answered: offline or claude.")

    @field_validator("tool_calls", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        """A user's message stores no tool calls (null); the body says ``[]``."""
        return [] if value is None else value


class ConversationDetailOut(BaseModel):
    conversation: ConversationOut
    messages: list[MessageOut]


@dataclass(frozen=True, slots=True)
class AgentCall:
    """Who asks the agent and with what: shared by a chat message and a template run."""

    user: User
    db: Database
    runtime: AgentRuntime
    clock: Callable[[], datetime]
    idempotency_key: str | None


async def get_agent_call(
    user: CurrentUser, db: DatabaseDep, runtime: RuntimeDep, clock: ClockDep, idempotency_key: IdempotencyKeyDep
) -> AgentCall:
    # A function, not the dataclass itself as the dependency: FastAPI would call a class in its thread pool.
    return AgentCall(user=user, db=db, runtime=runtime, clock=clock, idempotency_key=idempotency_key)


AgentCallDep = Annotated[AgentCall, Depends(get_agent_call)]


class TurnOptions(Protocol):
    """The body fields a chat message and a template run share."""

    @property
    def conversation_id(self) -> int | None: ...
    @property
    def max_credits(self) -> int | None: ...
    @property
    def org_id(self) -> int | None: ...


async def chat_reply(
    call: AgentCall,
    message: str,
    options: TurnOptions,
    *,
    request: Request | None = None,
    background: BackgroundTasks | None = None,
) -> ChatReply:
    """Run the agent (shared by chat and template runs).

    With ``request`` and ``background``, the user's auto-recharge runs after the
    response (the charges have committed; Stripe is called outside any transaction).
    """
    db, clock, user_id, org_id = call.db, call.clock, call.user.id, options.org_id
    turn = send_message(
        db,
        call.runtime,
        user_id=user_id,
        message=message,
        clock=clock,
        conversation_id=options.conversation_id,
        idempotency_key=call.idempotency_key,
        max_credits=options.max_credits,
        org_id=org_id,
    )
    reply = await (until_disconnected(request, turn) if request is not None else turn)
    # The charges have committed: the low-credit email, to the user or to the team's owner.
    balance = reply.credits_remaining
    if org_id is None:
        await notifications.after_balance_change(db, user_id=user_id, now=clock(), balance=balance)
    else:
        await notifications.after_pool_change(db, org_id=org_id, now=clock(), balance=balance)
    if background is not None and request is not None:
        state = request.app.state
        background.add_task(
            auto_recharge.recharge_if_due,
            db,
            state.gateway,
            user_id=None if org_id is not None else user_id,
            org_id=org_id,
            now=clock(),
            catalog=state.catalog,
        )
    return reply


@router.post(
    "/chat",
    response_model=ChatReply,
    summary="Send the agent a message: 1 credit, charged before processing, plus each tool call's price",
    responses=errors(*AUTHED, 404, 409, 502, payment=POOL_CREDITS),
)
async def chat(body: ChatIn, call: AgentCallDep, request: Request, background: BackgroundTasks) -> ChatReply:
    return await chat_reply(call, body.message, body, request=request, background=background)


@router.post(
    "/chat/actions/{action_id}/approve",
    response_model=ChatReply,
    summary="Approve a create the agent proposed: it is charged and run, answered like a chat reply",
    responses=errors(*AUTHED, 404, 409, 410, payment=POOL_CREDITS),
)
async def approve_action(
    action_id: IdPath, user: CurrentUser, db: DatabaseDep, runtime: RuntimeDep, clock: ClockDep
) -> ChatReply:
    return await approvals.approve(db, runtime, user_id=user.id, action_id=action_id, clock=clock)


@router.post(
    "/chat/actions/{action_id}/decline",
    status_code=204,
    summary="Decline a create the agent proposed; it costs nothing",
    responses=errors(*AUTHED, 404, 409),
)
async def decline_action(action_id: IdPath, user: CurrentUser, db: DatabaseDep, clock: ClockDep) -> Response:
    await approvals.decline(db, user_id=user.id, action_id=action_id, now=clock())
    return Response(status_code=204)


@router.get(
    "/conversations",
    response_model=ConversationsOut,
    summary="Your conversations, most recently active first",
    responses=errors(*AUTHED),
)
async def conversations(user: CurrentUser, session: SessionDep) -> ConversationsOut:
    rows = await list_conversations(session, user_id=user.id)
    return ConversationsOut(conversations=[ConversationOut.model_validate(c) for c in rows])


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationDetailOut,
    summary="One of your conversations with its messages",
    responses=errors(*AUTHED, 404),
)
async def conversation(conversation_id: IdPath, user: CurrentUser, session: SessionDep) -> ConversationDetailOut:
    found, messages = await get_conversation(session, user_id=user.id, conversation_id=conversation_id)
    return ConversationDetailOut(
        conversation=ConversationOut.model_validate(found),
        messages=[MessageOut.model_validate(m) for m in messages],
    )


class ConversationEnvelope(BaseModel):
    conversation: ConversationOut


@router.patch(
    "/conversations/{conversation_id}",
    response_model=ConversationEnvelope,
    summary="Rename one of your conversations",
    responses=errors(*AUTHED, 404),
)
async def rename(
    conversation_id: IdPath, body: ConversationRenameIn, user: CurrentUser, session: SessionDep
) -> ConversationEnvelope:
    found = await rename_conversation(session, user_id=user.id, conversation_id=conversation_id, title=body.title)
    return ConversationEnvelope(conversation=ConversationOut.model_validate(found))


@router.delete(
    "/conversations/{conversation_id}",
    status_code=204,
    summary="Delete one of your conversations; what it cost stays in your usage and ledger",
    responses=errors(*AUTHED, 404),
)
async def delete(conversation_id: IdPath, user: CurrentUser, session: SessionDep) -> Response:
    await delete_conversation(session, user_id=user.id, conversation_id=conversation_id)
    return Response(status_code=204)
