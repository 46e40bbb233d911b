"""Seats: how many members an organization's plan includes, and what happens beyond them.

The pool's tier says it (``subscription_tiers.included_members`` and
``extra_seat_price``, from the catalog). Seats taken are the members plus the pending
invitations (each holds the seat its invitee will take). Beyond the included members
plus the seats bought (``organizations.extra_seats``):

* a tier that sells extra seats adds one when a member joins (the seat is billed at the
  tier's seat price with the plan); inviting is allowed;
* a tier that does not refuses the invitation and the joining with
  ``SeatLimitReached`` (402 ``seat_limit_reached``).

A seat bought is given back when a member leaves or is removed, or the pool moves to a
plan that includes more members, and the members fit in fewer (``release_seats``): the
bill follows the team down as well as up.

Joining locks the organization's row, so two invitees accepting for the last seat at
once cannot both take it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from .errors import SeatLimitReached
from .models import SubscriptionTier, UserSubscription
from .org_models import Organization, OrganizationInvitation, OrganizationMember


@dataclass(frozen=True)
class Seats:
    """An organization's seats: members, pending invitations, and what its plan includes."""

    tier: str
    members: int
    pending_invitations: int
    included: int | None  # None: no limit
    extra_seats: int
    extra_seat_price: Decimal | None  # None: extra seats are not sold

    @property
    def taken(self) -> int:
        return self.members + self.pending_invitations

    @property
    def limit(self) -> int | None:
        return None if self.included is None else self.included + self.extra_seats

    @property
    def extra_seats_cost(self) -> Decimal:
        """What the seats bought cost a month on top of the plan."""
        return (self.extra_seat_price or Decimal(0)) * self.extra_seats


async def seats_of(session: AsyncSession, *, org_id: int, now: datetime) -> Seats:
    org_tier = (
        await session.execute(
            select(Organization, SubscriptionTier)
            .join(UserSubscription, UserSubscription.organization_id == Organization.id)
            .join(SubscriptionTier, SubscriptionTier.id == UserSubscription.tier_id)
            .where(Organization.id == org_id)
        )
    ).one()
    org, tier = org_tier
    members = await session.scalar(
        select(func.count()).select_from(OrganizationMember).where(OrganizationMember.organization_id == org_id)
    )
    pending = await session.scalar(
        select(func.count())
        .select_from(OrganizationInvitation)
        .where(
            OrganizationInvitation.organization_id == org_id,
            OrganizationInvitation.accepted_at.is_(None),
            OrganizationInvitation.revoked_at.is_(None),
            OrganizationInvitation.expires_at > now,
        )
    )
    return Seats(
        tier=tier.display_name,
        members=int(members or 0),
        pending_invitations=int(pending or 0),
        included=tier.included_members,
        extra_seats=org.extra_seats,
        extra_seat_price=tier.extra_seat_price,
    )


async def lock_seats(session: AsyncSession, org_id: int) -> None:
    """Lock the organization's row: one change of its members or seats at a time.

    Whoever changes members and seats takes it before touching a membership row, so
    that two such changes (or a pool's plan change) always lock in the same order.
    """
    await session.execute(select(Organization.id).where(Organization.id == org_id).with_for_update())


def _refuse(seats: Seats) -> SeatLimitReached:
    return SeatLimitReached(included=seats.limit or 0, used=seats.taken, tier=seats.tier)


async def check_invitation(session: AsyncSession, *, org_id: int, now: datetime) -> None:
    """Refuse a new invitation when every seat is taken and the plan sells no extra seat."""
    seats = await seats_of(session, org_id=org_id, now=now)
    if seats.limit is not None and seats.taken >= seats.limit and seats.extra_seat_price is None:
        raise _refuse(seats)


async def take_seat(session: AsyncSession, *, org_id: int, now: datetime) -> bool:
    """Make room for one more member (before the membership row is added); return whether a seat was bought.

    The invitation being accepted still counts as pending, so it already holds a seat
    unless the plan shrank since it was sent.
    """
    await lock_seats(session, org_id)
    seats = await seats_of(session, org_id=org_id, now=now)
    if seats.limit is None or seats.members < seats.limit:
        return False
    if seats.extra_seat_price is None:
        raise _refuse(seats)
    org = await session.get(Organization, org_id, populate_existing=True)
    assert org is not None
    org.extra_seats += 1
    await session.flush()
    return True


async def release_seats(session: AsyncSession, *, org_id: int, now: datetime) -> bool:
    """Give back the seats bought beyond the members now in the team; return whether any was.

    Called once a member is gone (the membership row deleted) or the pool's tier changed.
    Pending invitations keep no bought seat: their invitee buys one on joining if the
    team is full then.
    """
    await lock_seats(session, org_id)
    seats = await seats_of(session, org_id=org_id, now=now)
    needed = 0 if seats.included is None else max(0, seats.members - seats.included)
    if seats.extra_seats <= needed:
        return False
    org = await session.get(Organization, org_id, populate_existing=True)
    assert org is not None
    org.extra_seats = needed
    await session.flush()
    return True
