"""What the administrators read about customers: users found by name, one user's books, every team.

Read-only queries for the admin dashboard (``/api/admin/users``,
``/api/admin/organizations``); the changes an administrator makes (adjustments,
suspensions) are in ``billing.audit``, each with its audit row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from . import audit
from .accounts import active_grants, get_account
from .models import CreditGrant, CreditLedger, CreditPurchase, SubscriptionTier, UsageLog, User, UserSubscription
from .org_models import MemberRole, Organization, OrganizationMember


def _escape_like(term: str) -> str:
    """``term`` as a literal inside a LIKE pattern (``%`` and ``_`` are not wildcards here)."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def find_users(session: AsyncSession, *, q: str, limit: int) -> list[User]:
    """Users whose username or email contains ``q`` (any case), or whose id it is; by id. All for an empty ``q``."""
    query = select(User).order_by(User.id).limit(limit)
    term = q.strip().lower()
    if term:
        pattern = "%" + _escape_like(term) + "%"
        match = or_(
            func.lower(User.username).like(pattern, escape="\\"), func.lower(User.email).like(pattern, escape="\\")
        )
        query = query.where(or_(match, User.id == int(term)) if term.isdigit() else match)
    return list((await session.execute(query)).scalars())


@dataclass(frozen=True)
class CustomerDetail:
    """One user with their own account (None before it is opened), its active grants in draw-down order,

    and the newest rows of its history.
    """

    user: User
    account: UserSubscription | None
    grants: list[CreditGrant]
    ledger: list[CreditLedger]
    usage: list[UsageLog]
    purchases: list[CreditPurchase]
    audit: list[audit.AdminAudit]


async def customer_detail(session: AsyncSession, *, user_id: int, now: datetime, limit: int) -> CustomerDetail | None:
    """The user, their account (after a due reset) and the newest ``limit`` rows of each history; None: no user."""
    user = await session.get(User, user_id)
    if user is None:
        return None
    has_account = await session.scalar(select(UserSubscription.id).where(UserSubscription.user_id == user_id))
    account = await get_account(session, user_id=user_id, now=now) if has_account else None
    ledger: list[CreditLedger] = []
    grants: list[CreditGrant] = []
    if account is not None:
        grants = await active_grants(session, user_id=user_id, now=now)
        ledger = list(
            (
                await session.execute(
                    select(CreditLedger)
                    .where(CreditLedger.subscription_id == account.id)
                    .order_by(CreditLedger.id.desc())
                    .limit(limit)
                )
            ).scalars()
        )
    usage = (
        await session.execute(
            select(UsageLog).where(UsageLog.user_id == user_id).order_by(UsageLog.id.desc()).limit(limit)
        )
    ).scalars()
    purchases = (
        await session.execute(
            select(CreditPurchase)
            .where(CreditPurchase.user_id == user_id)
            .order_by(CreditPurchase.id.desc())
            .limit(limit)
        )
    ).scalars()
    return CustomerDetail(
        user=user,
        account=account,
        grants=grants,
        ledger=ledger,
        usage=list(usage),
        purchases=list(purchases),
        audit=await audit.entries(session, target_user_id=user_id, limit=limit),
    )


@dataclass(frozen=True)
class OrganizationSummary:
    """An organization as the admin dashboard lists it: its owner, size, plan and pool."""

    organization: Organization
    owner_id: int
    owner_username: str
    member_count: int
    tier: str  # the tier's display name
    pool: UserSubscription


async def organizations(session: AsyncSession, *, limit: int, offset: int) -> tuple[list[OrganizationSummary], int]:
    """One page of every organization, newest first, and how many there are."""
    owner = OrganizationMember.__table__.alias("owner_membership")
    sizes = (
        select(OrganizationMember.organization_id, func.count().label("n"))
        .group_by(OrganizationMember.organization_id)
        .subquery()
    )
    rows = await session.execute(
        select(Organization, User.id, User.username, sizes.c.n, SubscriptionTier.display_name, UserSubscription)
        .join(owner, (owner.c.organization_id == Organization.id) & (owner.c.role == MemberRole.OWNER.value))
        .join(User, User.id == owner.c.user_id)
        .join(sizes, sizes.c.organization_id == Organization.id)
        .join(UserSubscription, UserSubscription.organization_id == Organization.id)
        .join(SubscriptionTier, SubscriptionTier.id == UserSubscription.tier_id)
        .order_by(Organization.created_at.desc(), Organization.id.desc())
        .limit(limit)
        .offset(offset)
    )
    total = await session.scalar(select(func.count()).select_from(Organization))
    page = [
        OrganizationSummary(org, owner_id, username, int(n), tier, pool)
        for org, owner_id, username, n, tier, pool in rows.all()
    ]
    return page, int(total or 0)
