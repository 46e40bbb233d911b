"""Adjustments: an admin's manual change of a balance.

Rules:

* An adjustment changes the balance (never by zero) and says why: the reason is
  recorded on its ledger row with the admin who made it.
* Credits given are a paid grant with no cost basis that never expires (they count in
  the purchased balance, as before grants); credits taken come from the grants in
  draw-down order, one ledger row per grant, and never below zero
  (``InsufficientCredits``). Promotional credits are ``grant_promotional``'s.
* With an ``idempotency_key`` (scoped to the user) a retry returns the first result.
* A due reset runs first, then the account's row is locked.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from .accounts import lock_account, settle
from .errors import InsufficientCredits, InvalidAmount
from .grants import add_grant, grants_of, move, plan_draw
from .ledger import Balance, LedgerResult, ledger_by_key, new_key, replay_ledger, scoped_key
from .models import CreditGrant, GrantCategory, LedgerKind, UserSubscription


async def _settled(
    session: AsyncSession, *, user_id: int | None, org_id: int | None, now: datetime
) -> UserSubscription:
    """The account brought up to ``now`` (reset, expiries), then locked."""
    await settle(session, user_id=user_id, now=now, org_id=org_id)
    return await lock_account(session, user_id=user_id, org_id=org_id)


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
    """An admin's manual change: credits given are a paid grant that never expires;

    credits taken come from the grants in draw-down order; never below zero. With
    ``org_id`` the organization's pool changes (``user_id`` is recorded on the row).
    """
    if amount == 0:
        raise InvalidAmount("an adjustment must change the balance")
    if not reason.strip():
        raise InvalidAmount("an adjustment needs a reason")
    key = scoped_key(user_id, "adjust", idempotency_key)
    if (replay := await replay_ledger(session, key)) is not None:
        return replay
    sub = await _settled(session, user_id=user_id, org_id=org_id, now=now)
    if amount > 0:
        _, grant_row = await add_grant(
            session,
            sub,
            category=GrantCategory.PAID,
            credits=amount,
            now=now,
            kind=LedgerKind.ADJUSTMENT,
            key=key,
            source=f"adjustment:{admin_id}" if admin_id is not None else "adjustment",
            user_id=user_id,
            reason=reason.strip(),
            admin_id=admin_id,
        )
        return LedgerResult(grant_row, Balance.of(sub))
    grants = await grants_of(session, sub.id)
    draws = plan_draw(grants, -amount)
    if sum(take for _, take in draws) < -amount:
        raise InsufficientCredits(balance=sub.balance, required=-amount, tier_id=sub.tier_id)
    ledger_id, balance = await move(
        session,
        sub,
        [(grant, -take) for grant, take in draws],
        kind=LedgerKind.ADJUSTMENT,
        key=key,
        now=now,
        user_id=user_id,
        admin_id=admin_id,
        reason=reason.strip(),
    )
    return LedgerResult(ledger_id, balance)


MAX_PROMOTIONAL_GRANT = 1_000_000


async def grant_promotional(
    session: AsyncSession,
    *,
    user_id: int | None,
    credits: int,
    reason: str,
    admin_id: int | None,
    now: datetime,
    expires_at: datetime | None = None,
    org_id: int | None = None,
    idempotency_key: str | None = None,
) -> CreditGrant:
    """Give an account promotional credits (cost basis 0), optionally expiring, with a reason.

    With ``org_id`` the organization's pool gets them. ``InvalidAmount`` for no credits,
    too many, no reason, or an expiry that is not in the future. With an
    ``idempotency_key`` (scoped to the account) a retry returns the first grant.
    """
    if not 0 < credits <= MAX_PROMOTIONAL_GRANT:
        raise InvalidAmount(f"a promotional grant is 1 to {MAX_PROMOTIONAL_GRANT:,} credits")
    if not reason.strip():
        raise InvalidAmount("a promotional grant needs a reason")
    if expires_at is not None and expires_at <= now:
        raise InvalidAmount("a promotional grant must expire in the future")
    owner = f"o{org_id}" if org_id is not None else f"u{user_id}"
    key = f"{owner}:grant:{idempotency_key}" if idempotency_key else new_key()
    if idempotency_key and (first := await ledger_by_key(session, key)) is not None and first.grant_id is not None:
        replayed = await session.get(CreditGrant, first.grant_id, populate_existing=True)
        if replayed is not None:
            return replayed
    sub = await _settled(session, user_id=user_id, org_id=org_id, now=now)
    grant, _ = await add_grant(
        session,
        sub,
        category=GrantCategory.PROMOTIONAL,
        credits=credits,
        now=now,
        kind=LedgerKind.GRANT,
        key=key,
        source=f"admin:{admin_id}" if admin_id is not None else "admin",
        user_id=sub.user_id,
        reason=reason.strip(),
        expires_at=expires_at,
        admin_id=admin_id,
    )
    return grant
