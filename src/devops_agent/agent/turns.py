"""Turns in flight: the lease a chat turn holds while it runs, and the refund of interrupted ones.

A turn charges before it runs (the message, then each tool call) and records its
reply afterwards. A process killed in between (SIGKILL, a lost machine) leaves the
charges spent and no reply. So the user's message holds a lease while its turn runs:

* it is taken when the message is stored (``lease_expires_at = now + lease``) and
  renewed every third of the lease by the process running the turn (``keep_lease``),
  so a slow but living turn never looks dead;
* it is cleared when the outcome (reply or failure) is recorded, or when the turn is
  given up (a cancelled request, see ``interrupt``);
* a lease that ran out means the turn's process is gone. ``recover_expired`` (the
  ``devops-agent recover`` command) and a retry with the turn's ``Idempotency-Key``
  (``service``) then refund its charges and free it.

Whoever refunds first *claims* the turn with one conditional UPDATE on its message
(still unanswered, same attempt, lease ran out): a second claimer's UPDATE matches no
row (PostgreSQL re-checks the condition after the first claimer's commit; SQLite
writers are serialised), so the refunds happen once. Each refund also carries its own
ledger key (``billing.refund``), so a charge can never be given back twice anyway.

Which charges belong to a turn: the message's (``Message.usage_log_id``) and the tool
calls charged under the turn's scope (``turn_scope``): their ledger keys are
``u<user>:charge:turn:<message>:<attempt>:tool:<n>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing, metrics
from devops_agent.billing.models import CreditLedger, LedgerKind, UsageLog
from devops_agent.db import Database, rowcount

from .models import Message, Role

log = logging.getLogger("devops_agent.agent")

DEFAULT_LEASE = timedelta(minutes=2)
INTERRUPTED_NOTE = "(This message was interrupted before the agent answered; its credits were refunded.)"
INTERRUPTED_REASON = "interrupted: the turn ended without a reply"


@dataclass(frozen=True)
class TurnRef:
    """One attempt of one turn: its user message and the charges made for it."""

    message_id: int
    user_id: int
    conversation_id: int
    attempt: int
    usage_log_id: int | None
    idempotency_key: str | None = None

    @classmethod
    def of(cls, message: Message) -> TurnRef:
        return cls(
            message.id,
            message.user_id,
            message.conversation_id,
            message.attempt,
            message.usage_log_id,
            message.idempotency_key,
        )


@dataclass(frozen=True)
class Refunded:
    """What giving up a turn gave back."""

    message_id: int
    user_id: int
    charges: int
    credits: int


def turn_scope(message_id: int, attempt: int) -> str:
    """The idempotency scope of an attempt's charges: its tool calls (``Meter`` appends ``:tool:<n>``)
    and, for an attempt that restarts the turn, its message (``:message``)."""
    return f"turn:{message_id}:{attempt}"


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


def _tool_key_prefixes(turn: TurnRef) -> list[str]:
    prefixes = [f"u{turn.user_id}:charge:{turn_scope(turn.message_id, turn.attempt)}:tool:"]
    if turn.attempt == 0 and turn.idempotency_key:  # keyed turns started before leases existed
        prefixes.append(f"u{turn.user_id}:charge:chat:{turn.idempotency_key}:tool:")
    return prefixes


async def turn_charges(session: AsyncSession, turn: TurnRef) -> list[int]:
    """The usage logs of the charges of this attempt of the turn: its message, then its tool calls."""
    found = [turn.usage_log_id] if turn.usage_log_id is not None else []
    since: ColumnElement[bool] = UsageLog.id > turn.usage_log_id if turn.usage_log_id is not None else UsageLog.id > 0
    tools = await session.execute(
        select(CreditLedger.usage_log_id)
        .join(UsageLog, UsageLog.id == CreditLedger.usage_log_id)
        .where(
            UsageLog.user_id == turn.user_id,
            since,
            CreditLedger.kind == LedgerKind.CHARGE.value,
            or_(*(CreditLedger.idempotency_key.like(_like_prefix(p), escape="\\") for p in _tool_key_prefixes(turn))),
        )
        .order_by(CreditLedger.usage_log_id)
    )
    found.extend(int(u) for u in tools.scalars() if u is not None)
    return found


async def refund_charges(session: AsyncSession, turn: TurnRef, *, now: datetime, reason: str) -> Refunded:
    """Refund every charge of the turn's attempt not refunded yet (each has its own ledger row)."""
    charges = credits_back = 0
    for usage_log_id in await turn_charges(session, turn):
        charge_row = (
            await session.execute(
                select(
                    CreditLedger.monthly_delta, CreditLedger.purchased_delta, UsageLog.action_type, UsageLog.tool_name
                )
                .join(UsageLog, UsageLog.id == CreditLedger.usage_log_id)
                .where(CreditLedger.usage_log_id == usage_log_id, CreditLedger.kind == LedgerKind.CHARGE.value)
            )
        ).one_or_none()
        if charge_row is None:
            continue
        result = await billing.refund(session, usage_log_id=usage_log_id, now=now, error_message=reason)
        if not result.replayed:
            charges += 1
            credits_back -= int(charge_row[0]) + int(charge_row[1])
            metrics.count_refund(
                charge_row.tool_name or charge_row.action_type, -(int(charge_row[0]) + int(charge_row[1]))
            )
    return Refunded(turn.message_id, turn.user_id, charges, credits_back)


# The table, not the entity: these UPDATEs are plain Core (the ORM's bulk-update machinery
# costs more than the statement, and nothing in the session needs synchronising).
_messages = cast(Table, Message.__table__)


# Built once (the release runs on every chat): this attempt of the turn, still unanswered;
# run with ``_lease_of(turn, ...)``.
_UNANSWERED = and_(
    _messages.c.id == bindparam("message_id"),
    _messages.c.attempt == bindparam("turn_attempt"),
    _messages.c.reply_status.is_(None),
)
# ... that still holds its lease.
_HELD_LEASE = update(_messages).where(_UNANSWERED, _messages.c.lease_expires_at.is_not(None))


def _lease_of(turn: TurnRef, until: datetime | None) -> dict[str, Any]:
    """The values that set the lease of ``turn``'s attempt to ``until`` (None: no lease)."""
    return {"message_id": turn.message_id, "turn_attempt": turn.attempt, "lease_expires_at": until}


async def claim_expired(session: AsyncSession, turn: TurnRef, *, now: datetime, released_too: bool = True) -> bool:
    """Take an unanswered turn whose lease ran out (or, ``released_too``, was given up and
    refunded already); False if someone else took it first."""
    lease = _messages.c.lease_expires_at
    expired = or_(lease.is_(None), lease <= now) if released_too else lease <= now
    claimed = await session.execute(update(_messages).where(_UNANSWERED, expired), _lease_of(turn, None))
    return rowcount(claimed) == 1


async def release(session: AsyncSession, turn: TurnRef, **answer: Any) -> bool:
    """Give up the lease this attempt holds, writing ``answer`` (the message's columns, such
    as its stored reply) in the same UPDATE; False if the turn was already taken from it."""
    released = await session.execute(_HELD_LEASE, {**_lease_of(turn, None), **answer})
    return rowcount(released) == 1


def add_interrupted_note(session: AsyncSession, turn: TurnRef, *, now: datetime) -> None:
    """Tell the conversation that this message got no answer and cost nothing."""
    session.add(
        Message(
            conversation_id=turn.conversation_id,
            user_id=turn.user_id,
            role=Role.ASSISTANT,
            content=INTERRUPTED_NOTE,
            created_at=now,
        )
    )


async def interrupt(db: Database, turn: TurnRef, *, now: datetime) -> Refunded | None:
    """Give up a turn this process was running (its request was cancelled): refund it, free its key.

    None when the turn was no longer ours (already recovered or answered).
    """
    async with db.transaction() as session:
        if not await release(session, turn):
            return None
        refunded = await refund_charges(session, turn, now=now, reason="interrupted: the request was cancelled")
        add_interrupted_note(session, turn, now=now)
    return refunded


_interrupting: set[asyncio.Task[Refunded | None]] = set()
_running = 0  # turns of this process between their charge and their outcome


@contextlib.contextmanager
def running() -> Iterator[None]:
    """Count a turn as running until its outcome (reply, failure or refund) is recorded."""
    global _running
    _running += 1
    try:
        yield
    finally:
        _running -= 1


async def interrupt_shielded(db: Database, turn: TurnRef, *, now: datetime) -> Refunded | None:
    """``interrupt`` from a cancelled request: it completes even if the request is cancelled again,

    and a shutting-down process waits for it (``wait_interrupted``) before closing the database.
    """
    task = asyncio.create_task(interrupt(db, turn, now=now))
    _interrupting.add(task)
    task.add_done_callback(_interrupting.discard)
    return await asyncio.shield(task)


async def wait_interrupted(timeout: float = 10) -> None:
    """At shutdown, before the database closes: let the turns the server just cancelled refund.

    The server cancels the requests still running after its grace period and goes on to
    shut the app down at once; their turns need a few more steps to reach their refund.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (_running or _interrupting) and loop.time() < deadline:
        await asyncio.sleep(0.01)


async def recover_expired(db: Database, *, now: datetime, batch: int = 100) -> list[Refunded]:
    """Refund every turn whose lease ran out without a reply, one short transaction each."""
    done: list[Refunded] = []
    after = 0
    while True:
        async with db.transaction() as session:
            rows = (
                await session.execute(
                    select(Message)
                    .where(
                        Message.role == Role.USER,
                        Message.lease_expires_at <= now,
                        Message.reply_status.is_(None),
                        Message.id > after,
                    )
                    .order_by(Message.id)
                    .limit(batch)
                )
            ).scalars()
            expired = [TurnRef.of(m) for m in rows]
        for turn in expired:
            refunded = await recover_turn(db, turn, now=now)
            if refunded is not None:
                done.append(refunded)
        if len(expired) < batch:
            return done
        after = expired[-1].message_id


async def recover_turn(db: Database, turn: TurnRef, *, now: datetime) -> Refunded | None:
    """Claim one expired turn and refund it; None when a retry or another recovery got there first."""
    async with db.transaction() as session:
        if not await claim_expired(session, turn, now=now, released_too=False):
            return None
        refunded = await refund_charges(session, turn, now=now, reason=INTERRUPTED_REASON)
        add_interrupted_note(session, turn, now=now)
    log.info(
        "interrupted chat turn refunded",
        extra={"message_id": turn.message_id, "user_id": turn.user_id, "credits": refunded.credits},
    )
    return refunded


async def _renew(db: Database, turn: TurnRef, *, until: datetime) -> bool:
    async with db.transaction() as session:
        renewed = await session.execute(_HELD_LEASE, _lease_of(turn, until))
    return rowcount(renewed) == 1


def keep_lease(
    db: Database, turn: TurnRef, *, lease: timedelta, clock: Callable[[], datetime]
) -> contextlib.AbstractAsyncContextManager[None]:
    """Renew the turn's lease every third of it while the body runs (the process's sign of life)."""
    return keep_renewed(lambda until: _renew(db, turn, until=until), lease=lease, clock=clock, what=turn)


@contextlib.asynccontextmanager
async def keep_renewed(
    renew: Callable[[datetime], Awaitable[bool]], *, lease: timedelta, clock: Callable[[], datetime], what: object
) -> AsyncIterator[None]:
    """Call ``renew(now + lease)`` every third of the lease while the body runs, until it
    answers False (the lease was taken from us: nothing left to keep)."""

    async def renew_forever() -> None:
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            try:
                if not await renew(clock() + lease):
                    return
            except Exception:  # a database hiccup: the next round tries again before the lease ends
                log.warning("could not renew the lease of %s", what, exc_info=True)

    task = asyncio.create_task(renew_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
