"""Charges and refunds: spending credits for an action, and giving them back once.

Rules:

* A charge spends monthly credits first and purchased credits after, and never takes a
  balance below zero: the account's row is locked (PostgreSQL; SQLite writers are
  serialised already) to learn the split, and the spend is still one conditional
  UPDATE computed by the database (``... WHERE balance >= amount``) with the new
  balances RETURNed; no Python read-modify-write.
* Too few credits raise ``InsufficientCredits`` and change nothing.
* A charge writes its ``usage_logs`` row and exactly one ledger row. Its key is the
  caller's ``idempotency_key`` scoped to the user (``ledger.scoped_key``): a retry
  returns the first charge's result, and two racing retries are settled by the
  ledger's unique index (a savepoint, then the replay).
* A refund gives a charge's credits back to the balances they came from, once (its
  key is ``refund:usage:<id>``), and marks the usage log failed; ``mark_failed`` marks
  it without giving anything back.
* On an organization's pool (``org_id``) the acting member's monthly cap is counted
  under the pool's row lock, so one charge at a time reads and writes it; a refund
  returns what it counted, if still in the same period.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, case, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .accounts import apply_due_reset, lock_account, no_account
from .errors import ChargeNotFound, InsufficientCredits, InvalidAmount, MemberCapReached, OrganizationNotFound
from .ledger import Balance, ChargeResult, LedgerResult, append_ledger, replay_charge, replay_ledger, scoped_key
from .models import ActionType, CreditLedger, LedgerKind, UsageLog, UserSubscription
from .org_models import Organization, OrganizationMember

_sub = cast(Table, UserSubscription.__table__)
_usage = cast(Table, UsageLog.__table__)
_members = cast(Table, OrganizationMember.__table__)
_orgs = cast(Table, Organization.__table__)

# A charge's statements, built once and run with values: every chat and tool call pays
# SQLAlchemy a cache lookup for each, not the building of a new statement.
_ACCOUNT = select(
    _sub.c.id,
    _sub.c.credits_remaining,
    _sub.c.purchased_credits_remaining,
    _sub.c.current_period_end,
    _sub.c.current_period_start,
    _sub.c.tier_id,
)
_LOCK_USERS = _ACCOUNT.where(_sub.c.user_id == bindparam("owner")).with_for_update()
_LOCK_POOL = _ACCOUNT.where(_sub.c.organization_id == bindparam("owner")).with_for_update()
# Still one conditional UPDATE computed by the database: it can never take a balance
# below zero even if the lock were missing.
_SPEND = (
    update(_sub)
    .where(
        _sub.c.id == bindparam("account_id"),
        _sub.c.credits_remaining >= bindparam("from_monthly"),
        _sub.c.purchased_credits_remaining >= bindparam("from_purchased"),
    )
    .values(
        credits_remaining=_sub.c.credits_remaining - bindparam("from_monthly"),
        purchased_credits_remaining=_sub.c.purchased_credits_remaining - bindparam("from_purchased"),
        credits_used_this_month=_sub.c.credits_used_this_month + bindparam("spent"),
        total_credits_used=_sub.c.total_credits_used + bindparam("spent"),
        updated_at=bindparam("at"),
    )
    .returning(_sub.c.credits_remaining, _sub.c.purchased_credits_remaining)
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
    """Spend ``amount`` credits (monthly first, then purchased) and log the action.

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
    # Lock the row (PostgreSQL; SQLite writers are serialised already)
    # to learn how the charge splits between the monthly and purchased balances.
    # On the session's connection: the session's own execute() adds work these Core
    # statements do not need (ORM execution hooks, autoflush; nothing is pending here).
    connection = await session.connection()
    locked, owner = (_LOCK_POOL, org_id) if org_id is not None else (_LOCK_USERS, user_id)
    row = (await connection.execute(locked, {"owner": owner})).first()
    if row is None:
        raise no_account(user_id, org_id)
    if row.current_period_end <= now and await apply_due_reset(session, user_id=user_id, now=now, org_id=org_id):
        row = (await connection.execute(locked, {"owner": owner})).one()
    sub_id, monthly, purchased = int(row.id), int(row.credits_remaining), int(row.purchased_credits_remaining)
    if org_id is not None:
        # The pool's row lock (taken above) serialises every charge of the organization,
        # so the member's counter is read and written by one charge at a time.
        await _spend_member_cap(
            session, org_id=org_id, user_id=user_id, amount=amount, period_start=row.current_period_start
        )
    if monthly + purchased < amount:
        raise InsufficientCredits(balance=monthly + purchased, required=amount, tier_id=int(row.tier_id))
    from_monthly = min(monthly, amount)
    spend = {
        "account_id": sub_id,
        "from_monthly": from_monthly,
        "from_purchased": amount - from_monthly,
        "spent": amount,
        "at": now,
    }
    after = (await connection.execute(_SPEND, spend)).first()
    if after is None:  # pragma: no cover - only reachable if the row lock is bypassed
        raise InsufficientCredits(balance=monthly + purchased, required=amount, tier_id=int(row.tier_id))
    balance = Balance(int(after[0]), int(after[1]))
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
    usage_id = (await connection.execute(_LOG_USAGE, usage)).scalar_one()
    ledger_id = await append_ledger(
        session,
        subscription_id=sub_id,
        user_id=user_id,
        kind=LedgerKind.CHARGE,
        monthly_delta=-from_monthly,
        purchased_delta=-(amount - from_monthly),
        balance_after=balance,
        key=key,
        now=now,
        usage_log_id=int(usage_id),
    )
    return ChargeResult(usage_log_id=int(usage_id), ledger_id=ledger_id, credits_used=amount, balance=balance)


async def refund(
    session: AsyncSession, *, usage_log_id: int, now: datetime, error_message: str | None = None
) -> LedgerResult:
    """Give back the credits of a charge whose action failed on our side, once.

    The credits go back to the balances they came from, and the usage log is
    marked ``success = false`` with the error.
    """
    key = f"refund:usage:{usage_log_id}"
    if (replay := await replay_ledger(session, key)) is not None:
        return replay
    charge_row = (
        await session.execute(
            select(CreditLedger).where(
                CreditLedger.usage_log_id == usage_log_id, CreditLedger.kind == LedgerKind.CHARGE.value
            )
        )
    ).scalar_one_or_none()
    if charge_row is None:
        raise ChargeNotFound(f"no charge for usage log {usage_log_id}")
    usage = await session.get(UsageLog, usage_log_id)
    assert usage is not None
    sub = await lock_account(session, user_id=usage.user_id, org_id=usage.organization_id)
    if usage.organization_id is not None:
        await _return_member_cap(
            session,
            org_id=usage.organization_id,
            user_id=usage.user_id,
            amount=-charge_row.delta,
            period_start=sub.current_period_start,
        )
    back_monthly, back_purchased = -charge_row.monthly_delta, -charge_row.purchased_delta
    amount = back_monthly + back_purchased
    sub.credits_remaining += back_monthly
    sub.purchased_credits_remaining += back_purchased
    sub.credits_used_this_month = max(sub.credits_used_this_month - amount, 0)
    sub.total_credits_used = max(sub.total_credits_used - amount, 0)
    sub.updated_at = now
    usage.success = False
    usage.error_message = error_message
    await session.flush()
    balance = Balance(sub.credits_remaining, sub.purchased_credits_remaining)
    ledger_id = await append_ledger(
        session,
        subscription_id=sub.id,
        user_id=usage.user_id,
        kind=LedgerKind.REFUND,
        monthly_delta=back_monthly,
        purchased_delta=back_purchased,
        balance_after=balance,
        key=key,
        now=now,
        usage_log_id=usage_log_id,
        reason=error_message or "action failed",
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
