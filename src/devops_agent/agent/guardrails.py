"""Guardrails: what the agent may create on a customer's cloud, per plan, from the catalog.

The agent acts on a bill that is not ours to judge, so the plan bounds each create
before anything is charged: the instance type or DB class, the storage, the region
it would run in, and how many creates the account made this calendar month. A
refusal names the allowed values, so the user (or the model) can ask again within them.

The price of a create follows its size (``Catalog.cost_of(tool, size)``): a
``t3.micro`` costs less than an ``m7i.2xlarge``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent.billing.catalog import Catalog, TierLimits
from devops_agent.billing.models import ActionType, SubscriptionTier, UsageLog, UserSubscription
from devops_agent.db import Database

# The tools that create billable resources, and the argument that sizes each one.
CREATE_TOOLS: dict[str, str | None] = {
    "create_ec2_instance": "instance_type",
    "create_rds_instance": "instance_class",
    "create_s3_bucket": None,
}


@dataclass(frozen=True)
class AccountLimits:
    """The guardrails of the account that pays (a user's own, or a team's pool)."""

    tier_name: str
    limits: TierLimits | None


def size_of(tool: str, arguments: BaseModel) -> str | None:
    """The size a create asks for (its instance type or DB class), which sets its price."""
    field = CREATE_TOOLS.get(tool)
    return str(getattr(arguments, field)) if field else None


def cost_of(catalog: Catalog, tool: str, arguments: BaseModel) -> int:
    """The credits a call costs: by its size for the creates that have one."""
    return catalog.cost_of(tool, size_of(tool, arguments))


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def account_limits(session: AsyncSession, catalog: Catalog, *, user_id: int, org_id: int | None) -> AccountLimits:
    """The tier of the paying account and its limits from the catalog."""
    owner = UserSubscription.organization_id == org_id if org_id is not None else UserSubscription.user_id == user_id
    name = (
        await session.execute(
            select(SubscriptionTier.name)
            .join(UserSubscription, UserSubscription.tier_id == SubscriptionTier.id)
            .where(owner)
        )
    ).scalar_one()
    spec = catalog.tier(name)
    return AccountLimits(name, spec.limits if spec is not None else None)


async def creates_this_month(session: AsyncSession, *, user_id: int, org_id: int | None, now: datetime) -> int:
    """Creates paid and not failed this calendar month, by the account (a team counts as one)."""
    owner = (
        UsageLog.organization_id == org_id
        if org_id is not None
        else (UsageLog.user_id == user_id) & UsageLog.organization_id.is_(None)
    )
    count = await session.execute(
        select(func.count())
        .select_from(UsageLog)
        .where(
            owner,
            UsageLog.action_type == ActionType.TOOL_USE.value,
            UsageLog.tool_name.in_(list(CREATE_TOOLS)),
            UsageLog.success.is_(True),
            UsageLog.created_at >= month_start(now),
        )
    )
    return int(count.scalar_one())


def _allowed(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def refusal(
    limits: TierLimits | None, *, tier_name: str, tool: str, arguments: BaseModel, region: str, created: int
) -> str | None:
    """Why the plan does not allow this create (naming what it allows), or None when it does."""
    if limits is None or tool not in CREATE_TOOLS:
        return None
    plan = f"the {tier_name} plan"
    if tool == "create_ec2_instance":
        itype = str(getattr(arguments, "instance_type", ""))
        if itype not in limits.instance_types:
            return f"refused: {plan} does not allow instance type {itype}; allowed: {_allowed(limits.instance_types)}"
    if tool == "create_rds_instance":
        klass = str(getattr(arguments, "instance_class", ""))
        if klass not in limits.rds_classes:
            return f"refused: {plan} does not allow DB class {klass}; allowed: {_allowed(limits.rds_classes)}"
        storage = int(getattr(arguments, "allocated_storage_gb", 0))
        if storage > limits.rds_max_storage_gb:
            return f"refused: {plan} allows at most {limits.rds_max_storage_gb} GB of RDS storage, not {storage} GB"
    if region not in limits.regions:
        return f"refused: {plan} does not allow region {region}; allowed: {_allowed(limits.regions)}"
    if created >= limits.creates_per_month:
        return (
            f"refused: {plan} allows {limits.creates_per_month} creates a month and this account has made "
            f"{created}; upgrade the plan for more"
        )
    return None


@dataclass
class Guard:
    """The guardrails of one run: reads the paying account's plan and month once a create asks."""

    db: Database
    catalog: Catalog
    clock: Callable[[], datetime]
    user_id: int
    org_id: int | None
    region: str

    async def check(self, tool: str, arguments: BaseModel) -> str | None:
        """The refusal of a create outside the plan, or None (always None for other tools)."""
        if tool not in CREATE_TOOLS:
            return None
        async with self.db.transaction() as session:
            account = await account_limits(session, self.catalog, user_id=self.user_id, org_id=self.org_id)
            if account.limits is None:
                return None
            created = await creates_this_month(session, user_id=self.user_id, org_id=self.org_id, now=self.clock())
        return refusal(
            account.limits,
            tier_name=account.tier_name,
            tool=tool,
            arguments=arguments,
            region=self.region,
            created=created,
        )
