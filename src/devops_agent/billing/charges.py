"""Charges and refunds: spending credits for an action, and giving them back once.

Rules:

* A charge spends the account's grants in the draw-down order (``grants.draw_key``:
  with default priorities, the plan's monthly credits before packs) and never takes a
  balance below zero: the account's row is locked (PostgreSQL; SQLite writers are
  serialised already) while its grants are read, and each grant and the account's sums
  are decremented by conditional UPDATEs the database computes and CHECK constraints
  bound; no Python read-modify-write of a balance.
* Too few credits raise ``InsufficientCredits`` and change nothing.
* A charge writes its ``usage_logs`` row and one ledger row per grant it draws from.
  Its key is the caller's ``idempotency_key`` scoped to the user (``ledger.scoped_key``)
  on the first row: a retry returns the first charge's result, and two racing retries
  are settled by the ledger's unique index (a savepoint, then the replay).
* A refund gives a charge's credits back to the grants they came from, once (its key
  is ``refund:usage:<id>``; ``grants.give_back`` says what happens to a grant that has
  expired since), and marks the usage log failed; ``mark_failed`` marks it without
  giving anything back.
* On an organization's pool (``org_id``) the acting member's monthly cap is counted
  under the pool's row lock, so one charge at a time reads and writes it; a refund
  returns what it counted, if still in the same period.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, Table, and_, bindparam, case, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from .accounts import lock_account, no_account, settle
from .errors import ChargeNotFound, InsufficientCredits, InvalidAmount, MemberCapReached, OrganizationNotFound
from .grants import Slot, deltas, give_back, is_due, moved, plan_draw, provider_renews, waits_for_provider
from .ledger import (
    Balance,
    ChargeResult,
    LedgerResult,
    append_ledger,
    replay_charge,
    replay_ledger,
    scoped_key,
    split_key,
)
from .models import ActionType, CreditGrant, CreditLedger, GrantCategory, LedgerKind, UsageLog, UserSubscription
from .org_models import Organization, OrganizationMember

_sub = cast(Table, UserSubscription.__table__)
_grants = cast(Table, CreditGrant.__table__)
_usage = cast(Table, UsageLog.__table__)
_members = cast(Table, OrganizationMember.__table__)
_orgs = cast(Table, Organization.__table__)

# A charge's statements, built once and run with values: every chat and tool call pays
# SQLAlchemy a cache lookup for each, not the building of a new statement.
# The account and its grants with credits left, in one read made while the account is
# locked: on PostgreSQL its row lock is taken by a statement of its own first, because a
# statement that waits for a row lock re-reads only the locked row, and grants joined to
# it would be read as they were before the wait (tests/billing/test_concurrency.py). On
# SQLite the write transaction holds the database's write lock already. Grants change
# only under their account's lock.
_ACCOUNT = select(
    _sub.c.id,
    _sub.c.credits_remaining,
    _sub.c.purchased_credits_remaining,
    _sub.c.promotional_credits_remaining,
    _sub.c.current_period_end,
    _sub.c.current_period_start,
    _sub.c.tier_id,
    _sub.c.stripe_subscription_id,
    _sub.c.cancel_at_period_end,
    _grants.c.id.label("grant_id"),
    _grants.c.category,
    _grants.c.remaining,
    _grants.c.priority,
    _grants.c.effective_at,
    _grants.c.expires_at,
).select_from(_sub.outerjoin(_grants, and_(_grants.c.subscription_id == _sub.c.id, _grants.c.remaining > 0)))
_USERS = (
    select(_sub.c.id).where(_sub.c.user_id == bindparam("owner")).with_for_update(),
    _ACCOUNT.where(_sub.c.user_id == bindparam("owner")),
)
_POOL = (
    select(_sub.c.id).where(_sub.c.organization_id == bindparam("owner")).with_for_update(),
    _ACCOUNT.where(_sub.c.organization_id == bindparam("owner")),
)
# Conditional UPDATEs computed by the database: they can never take a grant or a
# balance below zero even if the lock were missing (and CHECK constraints refuse it).
_TAKE = (
    update(_grants)
    .where(_grants.c.id == bindparam("grant"), _grants.c.remaining >= bindparam("take"))
    .values(remaining=_grants.c.remaining - bindparam("take"))
)
_SPEND = (
    update(_sub)
    .where(
        _sub.c.id == bindparam("account_id"),
        _sub.c.credits_remaining >= bindparam("from_plan"),
        _sub.c.purchased_credits_remaining >= bindparam("from_paid"),
        _sub.c.promotional_credits_remaining >= bindparam("from_promotional"),
    )
    .values(
        credits_remaining=_sub.c.credits_remaining - bindparam("from_plan"),
        purchased_credits_remaining=_sub.c.purchased_credits_remaining - bindparam("from_paid"),
        promotional_credits_remaining=_sub.c.promotional_credits_remaining - bindparam("from_promotional"),
        credits_used_this_month=_sub.c.credits_used_this_month + bindparam("spent"),
        total_credits_used=_sub.c.total_credits_used + bindparam("spent"),
        updated_at=bindparam("at"),
    )
    .returning(_sub.c.credits_remaining, _sub.c.purchased_credits_remaining, _sub.c.promotional_credits_remaining)
)
_LOG_USAGE = insert(_usage).returning(_usage.c.id)


async def charge(
    session: AsyncSession,
    *,
    user_id: int,
    amount: int,
    action_type: ActionType | str,
    now: datetime,
    tool_name: str | None = None,
    conversation_id: int | None = None,
    idempotency_key: str | None = None,
    org_id: int | None = None,
) -> ChargeResult:
    """Spend ``amount`` credits from the account's grants in draw-down order and log the action.

    Raises ``InsufficientCredits`` and changes nothing when the balance is short.
    With an ``idempotency_key`` a retry returns the first charge's result.
    With ``org_id`` the organization's pool pays and ``user_id`` is the member who
    acts: ``OrganizationNotFound`` if they are not a member, ``MemberCapReached``
    if the charge would pass their monthly cap, however full the pool.
    """
    if amount <= 0:
        raise InvalidAmount("a charge must be at least one credit")
    key = scoped_key(user_id, "charge", idempotency_key)
    if idempotency_key:
        replay = await replay_charge(session, key)
        if replay is not None:
            return replay
        try:
            async with session.begin_nested():
                return await _charge(
                    session, user_id, amount, str(action_type), now, tool_name, conversation_id, key, org_id
                )
        except IntegrityError:  # a racing retry took the key first
            replay = await replay_charge(session, key)
            if replay is None:
                raise
            return replay
    return await _charge(session, user_id, amount, str(action_type), now, tool_name, conversation_id, key, org_id)


async def _locked(
    connection: AsyncConnection, owner: tuple[Select[Any], Select[Any]], owner_id: int
) -> tuple[Any, list[Slot]]:
    """The account's row, locked (None if there is none), and its grants with credits left."""
    lock, read = owner
    if connection.dialect.name != "sqlite":  # SQLite: the transaction holds the write lock already
        await connection.execute(lock, {"owner": owner_id})
    rows = (await connection.execute(read, {"owner": owner_id})).all()
    if not rows:
        return None, []
    grants = [r for r in rows if r.grant_id is not None]  # an account with none is one row of NULLs
    return rows[0], [
        Slot(r.grant_id, r.category, r.remaining, r.priority, r.effective_at, r.expires_at) for r in grants
    ]


def _unsettled(head: Any, slots: list[Slot], now: datetime) -> bool:
    """Whether the account needs its reset or an expiry before it can be charged."""
    if head.current_period_end <= now and not provider_renews(head):
        return True
    return any(is_due(s, now) and not waits_for_provider(head, s) for s in slots)


async def _charge(
    session: AsyncSession,
    user_id: int,
    amount: int,
    action_type: str,
    now: datetime,
    tool_name: str | None,
    conversation_id: int | None,
    key: str,
    org_id: int | None = None,
) -> ChargeResult:
    # Lock the row (PostgreSQL; SQLite writers are serialised already) and read it with
    # the grants the charge draws from. On the session's connection: the session's own
    # execute() adds work these Core statements do not need (ORM execution hooks,
    # autoflush; nothing is pending here).
    connection = await session.connection()
    statements, owner = (_POOL, org_id) if org_id is not None else (_USERS, user_id)
    head, slots = await _locked(connection, statements, owner)
    if head is None:
        raise no_account(user_id, org_id)
    if _unsettled(head, slots, now) and await settle(session, user_id=user_id, now=now, org_id=org_id):
        head, slots = await _locked(connection, statements, owner)
    before = Balance.of(head)
    if org_id is not None:
        # The pool's row lock (taken above) serialises every charge of the organization,
        # so the member's counter is read and written by one charge at a time.
        await _spend_member_cap(
            session, org_id=org_id, user_id=user_id, amount=amount, period_start=head.current_period_start
        )
    draws = plan_draw(slots, amount)
    if sum(take for _, take in draws) < amount:
        raise InsufficientCredits(balance=before.total, required=amount, tier_id=int(head.tier_id))
    taken = {c.value: 0 for c in GrantCategory}
    for slot, take in draws:
        taken[slot.category] += take
    takes = [{"grant": slot.id, "take": take} for slot, take in draws]
    await connection.execute(_TAKE, takes[0] if len(takes) == 1 else takes)
    spend = {
        "account_id": head.id,
        "from_plan": taken[GrantCategory.PLAN],
        "from_paid": taken[GrantCategory.PAID],
        "from_promotional": taken[GrantCategory.PROMOTIONAL],
        "spent": amount,
        "at": now,
    }
    after = (await connection.execute(_SPEND, spend)).first()
    if after is None:  # pragma: no cover - only reachable if the row lock is bypassed
        raise InsufficientCredits(balance=before.total, required=amount, tier_id=int(head.tier_id))
    usage = {
        "user_id": user_id,
        "organization_id": org_id,
        "conversation_id": conversation_id,
        "action_type": action_type,
        "tool_name": tool_name,
        "credits_used": amount,
        "success": True,
        "created_at": now,
    }
    usage_id = int((await connection.execute(_LOG_USAGE, usage)).scalar_one())
    balance, first_id = before, 0
    for n, (slot, take) in enumerate(draws, start=1):
        balance = moved(balance, slot.category, -take)
        row_id = await append_ledger(
            session,
            subscription_id=int(head.id),
            user_id=user_id,
            kind=LedgerKind.CHARGE,
            **deltas(slot.category, -take),
            balance_after=balance,
            key=key if n == 1 else split_key(first_id, n),
            operation_id=first_id or None,
            now=now,
            grant_id=slot.id,
            usage_log_id=usage_id,
        )
        first_id = first_id or row_id
    assert balance == Balance(int(after[0]), int(after[1]), int(after[2]))
    return ChargeResult(usage_log_id=usage_id, ledger_id=first_id, credits_used=amount, balance=balance)


async def refund(
    session: AsyncSession, *, usage_log_id: int, now: datetime, error_message: str | None = None
) -> LedgerResult:
    """Give back the credits of a charge whose action failed on our side, once.

    The credits go back to the grants they came from (``grants.give_back``), and the
    usage log is marked ``success = false`` with the error.
    """
    key = f"refund:usage:{usage_log_id}"
    if (replay := await replay_ledger(session, key)) is not None:
        return replay
    charge_rows = (
        (
            await session.execute(
                select(CreditLedger)
                .where(CreditLedger.usage_log_id == usage_log_id, CreditLedger.kind == LedgerKind.CHARGE.value)
                .order_by(CreditLedger.id)
            )
        )
        .scalars()
        .all()
    )
    if not charge_rows:
        raise ChargeNotFound(f"no charge for usage log {usage_log_id}")
    usage = await session.get(UsageLog, usage_log_id)
    assert usage is not None
    owner = {"user_id": usage.user_id, "org_id": usage.organization_id}
    await settle(session, now=now, **owner)  # grants past their expiry give up their credits first
    sub = await lock_account(session, **owner)
    amount = -sum(r.delta for r in charge_rows)
    if usage.organization_id is not None:
        await _return_member_cap(
            session,
            org_id=usage.organization_id,
            user_id=usage.user_id,
            amount=amount,
            period_start=sub.current_period_start,
        )
    taken = [
        (row.grant_id, category.value, -delta)
        for row in charge_rows
        for category, delta in (
            (GrantCategory.PLAN, row.monthly_delta),
            (GrantCategory.PAID, row.purchased_delta),
            (GrantCategory.PROMOTIONAL, row.promotional_delta),
        )
        if delta
    ]
    sub.credits_used_this_month = max(sub.credits_used_this_month - amount, 0)
    sub.total_credits_used = max(sub.total_credits_used - amount, 0)
    usage.success = False
    usage.error_message = error_message
    ledger_id, balance = await give_back(
        session,
        sub,
        taken,
        kind=LedgerKind.REFUND,
        key=key,
        now=now,
        user_id=usage.user_id,
        usage_log_id=usage_log_id,
        reason=error_message or "action failed",
        taken_at=charge_rows[0].created_at,
    )
    return LedgerResult(ledger_id, balance)


async def mark_failed(session: AsyncSession, *, usage_log_id: int, error_message: str) -> None:
    """Record that a charged action failed without giving the credits back."""
    await session.execute(
        update(_usage).where(_usage.c.id == usage_log_id).values(success=False, error_message=error_message)
    )


async def _spend_member_cap(
    session: AsyncSession, *, org_id: int, user_id: int, amount: int, period_start: datetime
) -> None:
    """Count ``amount`` against the member's cap for the pool's period, or refuse the charge.

    The caller holds the pool's row lock. A counter from an earlier period counts as
    zero: caps reset with the organization's period.
    """
    row = (
        await session.execute(
            select(
                _members.c.id,
                _members.c.monthly_cap,
                _members.c.credits_used,
                _members.c.usage_period_start,
                _orgs.c.default_member_cap,
            )
            .join(_orgs, _orgs.c.id == _members.c.organization_id)
            .where(_members.c.organization_id == org_id, _members.c.user_id == user_id)
        )
    ).first()
    if row is None:
        raise OrganizationNotFound(f"organization {org_id} not found")
    used = int(row.credits_used) if row.usage_period_start == period_start else 0
    cap = row.monthly_cap if row.monthly_cap is not None else row.default_member_cap
    if cap is not None and used + amount > cap:
        raise MemberCapReached(cap=int(cap), used=used, required=amount)
    await session.execute(
        update(_members)
        .where(_members.c.id == row.id)
        .values(credits_used=used + amount, usage_period_start=period_start)
    )


async def _return_member_cap(
    session: AsyncSession, *, org_id: int, user_id: int, amount: int, period_start: datetime
) -> None:
    """Give a refunded charge back to the member's cap, if it was counted in this period."""
    await session.execute(
        update(_members)
        .where(
            _members.c.organization_id == org_id,
            _members.c.user_id == user_id,
            _members.c.usage_period_start == period_start,
        )
        .values(credits_used=case((_members.c.credits_used >= amount, _members.c.credits_used - amount), else_=0))
    )
