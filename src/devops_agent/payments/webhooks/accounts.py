"""Whose account a Stripe object pays for, and what we remember of Stripe on that account."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent.billing.models import CreditPurchase, UserSubscription

from ..models import StripeSubscription
from ..stripe_client import field, object_id
from .events import row_id


@dataclass(frozen=True)
class Owner:
    """The account a Stripe object pays for: a user's own (``user_id``) or an organization's pool (``org_id``)."""

    user_id: int | None = None
    org_id: int | None = None

    def __str__(self) -> str:
        return f"organization {self.org_id}" if self.org_id is not None else f"user {self.user_id}"

    @classmethod
    def of(cls, account: UserSubscription | CreditPurchase | StripeSubscription) -> Owner:
        """The owner of an account, of the account a purchase fills, or of a tracked subscription."""
        if account.organization_id is not None:
            return cls(org_id=account.organization_id)
        return cls(user_id=account.user_id)

    def where(self) -> ColumnElement[bool]:
        if self.org_id is not None:
            return UserSubscription.organization_id == self.org_id
        return UserSubscription.user_id == self.user_id


async def owner_for_customer(session: AsyncSession, customer: Any) -> Owner | None:
    """The account whose Stripe customer this is (an id, or an expanded customer)."""
    customer_id = object_id(customer)
    if not customer_id:
        return None
    account = (
        await session.execute(
            select(UserSubscription).where(UserSubscription.stripe_customer_id == customer_id).limit(1)
        )
    ).scalar_one_or_none()
    return Owner.of(account) if account is not None else None


async def owner_for(session: AsyncSession, obj: Any) -> Owner | None:
    """The account an object belongs to: our metadata first (an organization, else a user), then the customer."""
    for key, column in (("org_id", UserSubscription.organization_id), ("user_id", UserSubscription.user_id)):
        raw = field(obj, "metadata", key)
        if raw is None and key == "user_id":
            raw = field(obj, "client_reference_id")
        found_id = row_id(raw)
        if found_id is not None:
            found = await session.execute(select(UserSubscription).where(column == found_id))
            account = found.scalar_one_or_none()
            if account is not None:
                return Owner.of(account)
    return await owner_for_customer(session, field(obj, "customer"))


async def owner_for_subscription(session: AsyncSession, subscription: str, obj: Any) -> Owner | None:
    """The account a Stripe subscription pays for: as tracked, as recorded on the account, else as ``obj`` says."""
    tracked = (
        await session.execute(select(StripeSubscription).where(StripeSubscription.subscription_id == subscription))
    ).scalar_one_or_none()
    if tracked is not None:
        return Owner.of(tracked)
    account = (
        await session.execute(select(UserSubscription).where(UserSubscription.stripe_subscription_id == subscription))
    ).scalar_one_or_none()
    if account is not None:
        return Owner.of(account)
    return await owner_for(session, obj)


async def account_of(session: AsyncSession, owner: Owner) -> UserSubscription:
    """The owner's account as the database has it now (not as this session last saw it)."""
    row = await session.execute(select(UserSubscription).where(owner.where()).execution_options(populate_existing=True))
    return row.scalar_one()


async def set_stripe_ids(
    session: AsyncSession, owner: Owner, *, customer: str | None = None, subscription: str | None = None
) -> None:
    """Remember which Stripe customer and subscription pay for an account (no balance moves)."""
    values: dict[str, Any] = {}
    if customer:
        values["stripe_customer_id"] = customer
    if subscription:
        values["stripe_subscription_id"] = subscription
    if values:
        await session.execute(update(UserSubscription).where(owner.where()).values(**values))
