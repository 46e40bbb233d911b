"""Adjustments: an admin's manual change of a balance.

Rules:

* An adjustment changes the balance (never by zero) and says why: the reason is
  recorded on its ledger row with the admin who made it.
* Credits given go to the purchased balance, which never expires; credits taken come
  from the monthly allowance first, then from purchased credits, and never below
  zero (``InsufficientCredits``).
* With an ``idempotency_key`` (scoped to the user) a retry returns the first result.
* A due reset runs first, then the account's row is locked.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from .accounts import apply_due_reset, lock_account
from .errors import InsufficientCredits, InvalidAmount
from .ledger import Balance, LedgerResult, append_ledger, replay_ledger, scoped_key
from .models import LedgerKind


async def adjust(
    session: AsyncSession,
    *,
    user_id: int,
    amount: int,
    reason: str,
    admin_id: int | None,
    now: datetime,
    idempotency_key: str | None = None,
    org_id: int | None = None,
) -> LedgerResult:
    """An admin's manual change: credits given go to the purchased (never expiring) balance;

    credits taken come from the monthly allowance first; never below zero. With
    ``org_id`` the organization's pool changes (``user_id`` is recorded on the row).
    """
    if amount == 0:
        raise InvalidAmount("an adjustment must change the balance")
    if not reason.strip():
        raise InvalidAmount("an adjustment needs a reason")
    key = scoped_key(user_id, "adjust", idempotency_key)
    if (replay := await replay_ledger(session, key)) is not None:
        return replay
    await apply_due_reset(session, user_id=user_id, now=now, org_id=org_id)
    sub = await lock_account(session, user_id=user_id, org_id=org_id)
    if amount > 0:
        monthly_delta, purchased_delta = 0, amount
    else:
        take = -amount
        if take > sub.balance:
            raise InsufficientCredits(balance=sub.balance, required=take, tier_id=sub.tier_id)
        from_monthly = min(sub.credits_remaining, take)
        monthly_delta, purchased_delta = -from_monthly, -(take - from_monthly)
    sub.credits_remaining += monthly_delta
    sub.purchased_credits_remaining += purchased_delta
    sub.updated_at = now
    await session.flush()
    balance = Balance(sub.credits_remaining, sub.purchased_credits_remaining)
    ledger_id = await append_ledger(
        session,
        subscription_id=sub.id,
        user_id=user_id,
        kind=LedgerKind.ADJUSTMENT,
        monthly_delta=monthly_delta,
        purchased_delta=purchased_delta,
        balance_after=balance,
        key=key,
        now=now,
        admin_id=admin_id,
        reason=reason.strip(),
    )
    return LedgerResult(ledger_id, balance)
