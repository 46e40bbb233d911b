"""Bring the database in line with the pricing catalog, and give every user an account.

This is what ``devops-agent init`` (and its alias ``python init_subscription_system.py``)
runs after the migrations. It is idempotent: a second run changes nothing and the
summary says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .accounts import open_account
from .catalog import Catalog
from .models import SubscriptionTier, User, UserSubscription


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deactivated: list[str] = field(default_factory=list)
    accounts_opened: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deactivated or self.accounts_opened)


async def sync_catalog(session: AsyncSession, catalog: Catalog) -> SyncReport:
    """Upsert tiers by name; deactivate (never delete) tiers the file no longer has."""
    report = SyncReport()
    existing = {t.name: t for t in (await session.execute(select(SubscriptionTier))).scalars()}
    for order, spec in enumerate(catalog.tiers):
        values = {
            "display_name": spec.display_name,
            "monthly_price": spec.monthly_price,
            "monthly_credits": spec.monthly_credits,
            "description": spec.description,
            "features": list(spec.features),
            "entitlements": sorted(spec.entitlements),
            "included_members": spec.included_members,
            "extra_seat_price": spec.extra_seat_price,
            "sort_order": order,
            "is_active": True,
        }
        tier = existing.pop(spec.name, None)
        if tier is None:
            session.add(SubscriptionTier(name=spec.name, **values))
            report.created.append(spec.name)
            continue
        if any(getattr(tier, k) != v for k, v in values.items()):
            for k, v in values.items():
                setattr(tier, k, v)
            report.updated.append(spec.name)
    for tier in existing.values():
        if tier.is_active:
            tier.is_active = False
            report.deactivated.append(tier.name)
    await session.flush()
    return report


async def open_missing_accounts(session: AsyncSession, *, now: datetime, limit: int | None = None) -> int:
    """Put every user without a credit account (at most ``limit`` of them) on the Free tier; return how many."""
    users = (
        (
            await session.execute(
                select(User.id)
                .outerjoin(UserSubscription, UserSubscription.user_id == User.id)
                .where(UserSubscription.id.is_(None))
                .order_by(User.id)
                .limit(limit)
            )
        )
        .scalars()
        .all()
    )
    for user_id in users:
        await open_account(session, user_id=user_id, now=now)
    return len(users)


@dataclass(frozen=True)
class TierSummary:
    name: str
    display_name: str
    monthly_price: str
    monthly_credits: int
    is_active: bool
    users: int


@dataclass(frozen=True)
class SystemSummary:
    tiers: list[TierSummary]
    monthly_outstanding: int
    purchased_outstanding: int
    promotional_outstanding: int


async def summarize(session: AsyncSession) -> SystemSummary:
    """Tiers with prices, users per tier and credits outstanding, for the init printout."""
    rows = await session.execute(select(UserSubscription.tier_id, func.count()).group_by(UserSubscription.tier_id))
    counts: dict[int, int] = {int(tier_id): int(n) for tier_id, n in rows.all()}
    tiers = (await session.execute(select(SubscriptionTier).order_by(SubscriptionTier.sort_order))).scalars()
    totals = (
        await session.execute(
            select(
                func.coalesce(func.sum(UserSubscription.credits_remaining), 0),
                func.coalesce(func.sum(UserSubscription.purchased_credits_remaining), 0),
                func.coalesce(func.sum(UserSubscription.promotional_credits_remaining), 0),
            )
        )
    ).one()
    return SystemSummary(
        tiers=[
            TierSummary(
                t.name, t.display_name, f"{t.monthly_price:.2f}", t.monthly_credits, t.is_active, counts.get(t.id, 0)
            )
            for t in tiers
        ],
        monthly_outstanding=int(totals[0]),
        purchased_outstanding=int(totals[1]),
        promotional_outstanding=int(totals[2]),
    )
