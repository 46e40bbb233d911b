"""Accounts and their periods: opening an account, reading it, and the monthly reset.

An account (``user_subscriptions``) belongs to a user or to an organization (its
pool); ``owned_by`` names one or the other, and every operation on an organization's
pool is the personal one called with ``org_id``.

Rules:

* Every function takes an open ``AsyncSession`` inside a transaction, flushes and
  never commits: the caller's ``Database.transaction()`` block decides.
* A change that is not a charge takes the account's row lock first (``lock_account``:
  ``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite writers are already serialised by
  ``BEGIN IMMEDIATE``), re-reading the row rather than trusting the identity map.
* A period is the anniversary period of the account's anchor (``billing.periods``). At
  its end what is left of the plan's grant expires and the tier's credits are granted
  as a new plan grant lasting the period: ledger rows whose keys name the period, so a
  period is never reset twice. Other grants are not touched by a reset; they expire at
  their own dates (``grants.expire_due``), checked at the same moments (``settle``).
* A new user's account also gets the catalog's sign-up bonus, a promotional grant.
* Accounts paid through a payment provider and not cancelled are not reset here: the
  provider's paid invoice starts their next period (``plans.start_paid_period``).
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import ColumnElement, Select, Table, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from .catalog import current_catalog
from .errors import AccountNotFound, TierNotFound
from .grants import add_grant, expire_due, expiry_after, grants_of, move, provider_renews
from .ledger import new_key
from .models import CreditGrant, GrantCategory, LedgerKind, PaymentStatus, SubscriptionTier, UserSubscription
from .periods import add_months, period_containing
from .seats import release_seats

FREE_TIER = "free"

_sub = cast(Table, UserSubscription.__table__)

# Accounts whose periods we start ourselves at the period end: everyone but those whose
# plan is paid through a payment provider and not cancelled (their paid invoice does it).
_lazily_reset = or_(UserSubscription.stripe_subscription_id.is_(None), UserSubscription.cancel_at_period_end.is_(True))
# Grants past their expiry that ``expire_due`` expires: all but the plan's grant of an
# account whose provider's paid invoice ends it (``grants.waits_for_provider``).
_expires_here = or_(CreditGrant.category != GrantCategory.PLAN.value, _lazily_reset)


def owned_by(user_id: int | None, org_id: int | None) -> ColumnElement[bool]:
    """The account an operation acts on: the organization's pool when ``org_id`` is given, else the user's."""
    if org_id is not None:
        return _sub.c.organization_id == org_id
    if user_id is None:  # ``user_id == None`` would be ``IS NULL``: every organization's pool
        raise ValueError("an account is named by user_id or org_id")
    return _sub.c.user_id == user_id


def no_account(user_id: int | None, org_id: int | None) -> AccountNotFound:
    """The error for an account that ``owned_by(user_id, org_id)`` does not find."""
    if org_id is not None:
        return AccountNotFound(f"organization {org_id} has no credit account")
    return AccountNotFound(f"user {user_id} has no credit account")


async def lock_account(session: AsyncSession, *, user_id: int | None, org_id: int | None = None) -> UserSubscription:
    """The account, row-locked and re-read from the database (not from the session's identity map)."""
    sub = (
        await session.execute(
            select(UserSubscription)
            .where(owned_by(user_id, org_id))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if sub is None:
        raise no_account(user_id, org_id)
    return sub


async def tier_by_name(session: AsyncSession, name: str) -> SubscriptionTier:
    tier = (await session.execute(select(SubscriptionTier).where(SubscriptionTier.name == name))).scalar_one_or_none()
    if tier is None:
        raise TierNotFound(f"tier {name!r} is not in the catalog")
    return tier


async def tier_by_id(session: AsyncSession, tier_id: int, *, active_only: bool = False) -> SubscriptionTier:
    tier = await session.get(SubscriptionTier, tier_id)
    if tier is None or (active_only and not tier.is_active):
        raise TierNotFound(f"tier {tier_id} does not exist")
    return tier


async def open_account(session: AsyncSession, *, user_id: int, now: datetime) -> UserSubscription:
    """Put a new user on the Free tier with its monthly credits, and the catalog's sign-up bonus if any."""
    sub = await _open(session, user_id=user_id, org_id=None, now=now)
    bonus = current_catalog().signup_bonus
    if bonus is not None:
        await add_grant(
            session,
            sub,
            category=GrantCategory.PROMOTIONAL,
            credits=bonus.credits,
            now=now,
            kind=LedgerKind.GRANT,
            key=f"s{sub.id}:signup_bonus",
            source="signup_bonus",
            user_id=user_id,
            reason="sign-up bonus",
            expires_at=expiry_after(bonus.expires_after_days, now),
        )
    return sub


async def _open(session: AsyncSession, *, user_id: int | None, org_id: int | None, now: datetime) -> UserSubscription:
    """Open a Free account for a user or an organization, with its opening grant."""
    tier = await tier_by_name(session, FREE_TIER)
    sub = UserSubscription(
        user_id=user_id,
        organization_id=org_id,
        tier_id=tier.id,
        credits_remaining=0,
        purchased_credits_remaining=0,
        promotional_credits_remaining=0,
        credits_used_this_month=0,
        total_credits_used=0,
        billing_anchor=now,
        current_period_start=now,
        current_period_end=add_months(now, 1),
        payment_status=PaymentStatus.ACTIVE,
        cancel_at_period_end=False,
        created_at=now,
        updated_at=now,
    )
    session.add(sub)
    await session.flush()
    await _grant_plan(
        session,
        sub,
        tier=tier,
        start=now,
        end=sub.current_period_end,
        now=now,
        key=f"s{sub.id}:grant:{now.isoformat()}",
        reason=f"{tier.display_name} tier: opening grant",
    )
    return sub


async def _grant_plan(
    session: AsyncSession,
    sub: UserSubscription,
    *,
    tier: SubscriptionTier,
    start: datetime,
    end: datetime,
    now: datetime,
    key: str,
    reason: str,
) -> CreditGrant:
    """The plan's grant for the period ``[start, end)``: the tier's credits at its price (its cost basis)."""
    grant, _ = await add_grant(
        session,
        sub,
        category=GrantCategory.PLAN,
        credits=tier.monthly_credits,
        now=now,
        kind=LedgerKind.MONTHLY_GRANT,
        key=key,
        source=f"plan:{tier.name}",
        user_id=sub.user_id,
        reason=reason,
        effective_at=start,
        expires_at=end,
        price=tier.monthly_price,
        tier_id=tier.id,
        details={"tier_id": tier.id},  # what analytics reads: names may change, ids do not
    )
    return grant


async def open_org_account(session: AsyncSession, *, org_id: int, now: datetime) -> UserSubscription:
    """Open an organization's pool on the Free tier with its monthly credits (one grant row).

    The organization then upgrades, buys packs and resets like a user's account,
    through the same functions called with ``org_id``.
    """
    return await _open(session, user_id=None, org_id=org_id, now=now)


async def start_period(
    session: AsyncSession,
    sub: UserSubscription,
    *,
    tier: SubscriptionTier,
    start: datetime,
    end: datetime,
    anchor: datetime,
    now: datetime,
    expiry_kind: LedgerKind,
    reason: str,
    grant_key: str | None = None,
) -> None:
    """Expire what is left of the plan's grant and grant ``tier``'s credits for a new period.

    ``sub`` must be locked by the caller. Other grants are never touched.
    ``grant_key``: the grant's ledger key, when the caller must find the grant again.
    """
    # A reset's keys name its period, so a second reset of the same period is refused;
    # a tier change is an event of its own (two may happen in one instant).
    unique = f":{new_key()}" if expiry_kind == LedgerKind.TIER_CHANGE else ""
    plans = [g for g in await grants_of(session, sub.id, with_credits=False) if g.category == GrantCategory.PLAN]
    plan_left = [(g, -g.remaining) for g in plans if g.remaining]
    for grant in plans:  # the old plan ends now (a refund must not bring its credits back)
        if grant.expires_at is not None and grant.effective_at < now < grant.expires_at:
            grant.expires_at = now
    await move(
        session,
        sub,
        plan_left,
        kind=expiry_kind,
        key=f"s{sub.id}:{expiry_kind.value}:{sub.current_period_end.isoformat()}:{start.isoformat()}{unique}",
        now=now,
        user_id=sub.user_id,
        reason=reason,
    )
    await _grant_plan(
        session,
        sub,
        tier=tier,
        start=start,
        end=end,
        now=now,
        key=grant_key or f"s{sub.id}:grant:{start.isoformat()}:{tier.id}{unique}",
        reason=f"{tier.display_name} tier: monthly credits",
    )
    changed = sub.tier_id != tier.id
    sub.tier_id = tier.id
    if changed and sub.organization_id is not None:  # a plan that includes more members covers bought seats
        await release_seats(session, org_id=sub.organization_id, now=now)
    if expiry_kind != LedgerKind.TIER_CHANGE:
        # A plan change is not a new month: what was used this month stays counted.
        sub.credits_used_this_month = 0
    sub.billing_anchor = anchor
    sub.current_period_start = start
    sub.current_period_end = end
    sub.updated_at = now
    await session.flush()


async def apply_due_reset(
    session: AsyncSession, *, user_id: int | None, now: datetime, org_id: int | None = None
) -> bool:
    """Run the monthly reset if the period has ended; return whether one ran.

    Catches up over any number of missed months at once: the new period is the
    anniversary period that contains ``now``. A scheduled downgrade or a
    cancellation takes effect here. Accounts paid through a payment provider
    (``stripe_subscription_id`` set) are skipped: the provider's paid invoice
    starts their next period (``plans.start_paid_period``), unless they cancelled.
    """
    due = (
        await session.execute(
            select(UserSubscription.id).where(
                owned_by(user_id, org_id), UserSubscription.current_period_end <= now, _lazily_reset
            )
        )
    ).first()
    if due is None:
        return False
    sub = await lock_account(session, user_id=user_id, org_id=org_id)
    if sub.current_period_end > now:  # another transaction reset it while we waited for the lock
        return False
    if provider_renews(sub):
        return False  # became provider-paid while we waited for the lock
    next_tier_id = sub.scheduled_tier_id or sub.tier_id
    if sub.cancel_at_period_end:
        next_tier_id = (await tier_by_name(session, FREE_TIER)).id
    tier = await tier_by_id(session, next_tier_id)
    start, end = period_containing(sub.billing_anchor, now)
    await start_period(
        session,
        sub,
        tier=tier,
        start=start,
        end=end,
        anchor=sub.billing_anchor,
        now=now,
        expiry_kind=LedgerKind.EXPIRY,
        reason="unused monthly credits expire at the end of the period",
    )
    if sub.cancel_at_period_end:
        sub.cancel_at_period_end = False
        sub.stripe_subscription_id = None
    sub.scheduled_tier_id = None
    await session.flush()
    return True


async def settle(session: AsyncSession, *, user_id: int | None, now: datetime, org_id: int | None = None) -> bool:
    """Bring the account up to ``now``: the monthly reset if due, then grants past their expiry.

    Returns whether anything changed.
    """
    found = (await session.execute(_what_is_due(now).where(owned_by(user_id, org_id)))).first()
    if found is None or not (found.reset or found.lapsed):
        return False
    reset = bool(found.reset) and await apply_due_reset(session, user_id=user_id, now=now, org_id=org_id)
    if not found.lapsed:
        return reset
    sub = await lock_account(session, user_id=user_id, org_id=org_id)
    return await expire_due(session, sub, now=now) > 0 or reset


def _what_is_due(now: datetime) -> Select[bool, bool]:
    """Whether an account's period has ended (and we reset it) and whether a grant of it has
    credits left past its expiry: one read, no lock, on every read of an account."""
    lapsed = (
        select(CreditGrant.id)
        .where(
            CreditGrant.subscription_id == _sub.c.id,
            CreditGrant.remaining > 0,
            CreditGrant.expires_at <= now,
            _expires_here,
        )
        .exists()
    )
    return select(and_(_sub.c.current_period_end <= now, _lazily_reset).label("reset"), lapsed.label("lapsed"))


async def due_grant_accounts(
    session: AsyncSession, *, now: datetime, limit: int = 500
) -> list[tuple[int | None, int | None]]:
    """Accounts with a grant past its expiry, as ``(user_id, org_id)`` (for the ``reset-due`` job).

    Not a provider-paid plan's grant waiting for its paid invoice: ``settle`` leaves it,
    and the job would find the account again and again (and, 500 of them, no other).
    """
    rows = await session.execute(
        select(_sub.c.user_id, _sub.c.organization_id)
        .join(CreditGrant, CreditGrant.subscription_id == _sub.c.id)
        .where(CreditGrant.remaining > 0, CreditGrant.expires_at <= now, _expires_here)
        .distinct()
        .limit(limit)
    )
    return [(r[0], r[1]) for r in rows]


async def active_grants(
    session: AsyncSession, *, user_id: int | None, now: datetime, org_id: int | None = None
) -> list[CreditGrant]:
    """The account's grants with credits left, settled first, in the order they will be spent."""
    await settle(session, user_id=user_id, now=now, org_id=org_id)
    sub_id = (await session.execute(select(_sub.c.id).where(owned_by(user_id, org_id)))).scalar_one_or_none()
    if sub_id is None:
        raise no_account(user_id, org_id)
    return await grants_of(session, int(sub_id))


async def due_account_user_ids(session: AsyncSession, *, now: datetime, limit: int = 500) -> list[int]:
    """Users whose period has ended (for the ``reset-due`` cron job)."""
    rows = await session.execute(
        select(_sub.c.user_id)
        .where(_sub.c.user_id.is_not(None), UserSubscription.current_period_end <= now, _lazily_reset)
        .order_by(UserSubscription.current_period_end)
        .limit(limit)
    )
    return [int(r) for r in rows.scalars()]


async def due_account_org_ids(session: AsyncSession, *, now: datetime, limit: int = 500) -> list[int]:
    """Organizations whose period has ended (the ``reset-due`` job passes each as ``org_id``)."""
    rows = await session.execute(
        select(_sub.c.organization_id)
        .where(_sub.c.organization_id.is_not(None), UserSubscription.current_period_end <= now, _lazily_reset)
        .order_by(UserSubscription.current_period_end)
        .limit(limit)
    )
    return [int(r) for r in rows.scalars()]


async def get_account(
    session: AsyncSession, *, user_id: int | None, now: datetime, org_id: int | None = None
) -> UserSubscription:
    """The user's account (or the organization's pool with ``org_id``), settled first (reset, expiries)."""
    await settle(session, user_id=user_id, now=now, org_id=org_id)
    sub = (
        await session.execute(
            select(UserSubscription)
            .where(owned_by(user_id, org_id))
            .options(selectinload(UserSubscription.tier), selectinload(UserSubscription.scheduled_tier))
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if sub is None:
        raise no_account(user_id, org_id)
    return sub
