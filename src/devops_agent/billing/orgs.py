"""Organizations (teams): membership, roles, invitations, caps and what each member may see.

The pool itself is an ordinary credit account owned by the organization, moved only by
the package's verbs (``billing.charge`` and the rest, called with ``org_id``); this module
manages who belongs to the organization and what they may do:

* roles: the **owner** (one, always) handles billing and may delete the organization;
  **admins** manage members, invitations and members' caps; **members** use the pool.
  Only the owner demotes or removes an admin, sets an admin's (or their own) cap and
  the default cap (which applies to admins and the owner too): an admin cannot turn
  on another admin or on the owner.
* a user who is not a member gets ``OrganizationNotFound`` for everything, the same
  answer as for an organization that does not exist, so ids leak nothing.
* invitations go to an email address with a random token that is stored only as its
  SHA-256 hash, expires, and works once (a conditional UPDATE claims it, so two
  concurrent accepts cannot both succeed).
* the organization is never left without an owner: the owner cannot leave or be
  removed, only hand the role over (``transfer_ownership``), and a partial unique
  index keeps a second owner out.

Like the rest of the engine, every function takes an open session, flushes and never
commits.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from . import seats
from .accounts import get_account, open_org_account
from .errors import (
    AlreadyMember,
    InvalidAmount,
    InvitationExpired,
    InvitationNotFound,
    InvitationUsed,
    InvitationWrongUser,
    MemberNotFound,
    OrganizationLimit,
    OrganizationNotFound,
    OrgForbidden,
    OwnerRequired,
)
from .models import User, UserSubscription
from .org_models import ROLE_RANK, MemberRole, Organization, OrganizationInvitation, OrganizationMember

INVITATION_TTL = timedelta(days=7)
# Each organization's pool opens on the Free tier with its monthly credits: a cap on how
# many one user owns keeps teams from being a way to multiply free credits.
MAX_OWNED_ORGANIZATIONS = 5
TEAM_FEATURE = "team_collaboration"


def hash_token(token: str) -> str:
    """The stored form of an invitation token (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _require(member: OrganizationMember, role: MemberRole, action: str) -> None:
    """Refuse (403) unless the member's role is at least ``role``."""
    if ROLE_RANK[MemberRole(member.role)] < ROLE_RANK[role]:
        who = "the owner" if role is MemberRole.OWNER else "admins and the owner"
        raise OrgForbidden(f"Only {who} of the organization {action}.")


def _require_owner_over(
    actor: OrganizationMember, target: OrganizationMember, action: str, *, allow_self: bool = True
) -> None:
    """Refuse (403) unless the actor is the owner, or (``allow_self``) acts on themself."""
    if actor.role == MemberRole.OWNER or (allow_self and actor.id == target.id):
        return
    raise OrgForbidden(f"Only the owner of the organization can {action}.")


# --- organizations --------------------------------------------------------------------


async def create_organization(session: AsyncSession, *, user_id: int, name: str, now: datetime) -> Organization:
    """Create an organization owned by ``user_id``, with a pool of its own on the Free tier.

    Whether the user's plan allows teams is the caller's check (the web layer answers
    the contract's ``feature_not_in_plan``).
    """
    name = name.strip()
    if not name:
        raise InvalidAmount("An organization needs a name.")
    owned = await session.scalar(
        select(func.count())
        .select_from(OrganizationMember)
        .where(OrganizationMember.user_id == user_id, OrganizationMember.role == MemberRole.OWNER.value)
    )
    if (owned or 0) >= MAX_OWNED_ORGANIZATIONS:
        raise OrganizationLimit(
            f"You own {owned} organizations, the most one person may; delete one or transfer its ownership first."
        )
    org = Organization(name=name, created_by=user_id, default_member_cap=None, created_at=now, updated_at=now)
    session.add(org)
    await session.flush()
    session.add(
        OrganizationMember(
            organization_id=org.id,
            user_id=user_id,
            role=MemberRole.OWNER,
            monthly_cap=None,
            credits_used=0,
            created_at=now,
        )
    )
    await session.flush()
    await open_org_account(session, org_id=org.id, now=now)
    return org


async def membership(session: AsyncSession, *, org_id: int, user_id: int) -> OrganizationMember:
    """The user's membership of the organization; ``OrganizationNotFound`` for a non-member."""
    member = (
        await session.execute(
            select(OrganizationMember).where(
                OrganizationMember.organization_id == org_id, OrganizationMember.user_id == user_id
            )
        )
    ).scalar_one_or_none()
    if member is None:
        raise OrganizationNotFound(f"Organization {org_id} not found.")
    return member


async def get_organization(
    session: AsyncSession, *, org_id: int, user_id: int
) -> tuple[Organization, OrganizationMember]:
    """The organization and the asking user's membership (404 for a non-member)."""
    member = await membership(session, org_id=org_id, user_id=user_id)
    org = await session.get(Organization, org_id)
    if org is None:  # pragma: no cover - the membership's foreign key guarantees it
        raise OrganizationNotFound(f"Organization {org_id} not found.")
    return org, member


async def organizations_of(session: AsyncSession, *, user_id: int) -> list[tuple[Organization, OrganizationMember]]:
    """The organizations the user belongs to, oldest first, with their role in each."""
    rows = await session.execute(
        select(Organization, OrganizationMember)
        .join(OrganizationMember, OrganizationMember.organization_id == Organization.id)
        .where(OrganizationMember.user_id == user_id)
        .order_by(Organization.created_at, Organization.id)
    )
    return [(org, member) for org, member in rows.all()]


async def rename(session: AsyncSession, *, org_id: int, actor_id: int, name: str, now: datetime) -> Organization:
    org, actor = await get_organization(session, org_id=org_id, user_id=actor_id)
    _require(actor, MemberRole.ADMIN, "can rename it")
    if not name.strip():
        raise InvalidAmount("An organization needs a name.")
    org.name = name.strip()
    org.updated_at = now
    await session.flush()
    return org


async def delete_organization(session: AsyncSession, *, org_id: int, actor_id: int) -> None:
    """Delete the organization with its pool, ledger, members and invitations (owner only)."""
    _, actor = await get_organization(session, org_id=org_id, user_id=actor_id)
    _require(actor, MemberRole.OWNER, "can delete it")
    await session.execute(delete(Organization).where(Organization.id == org_id))
    await session.flush()


# --- members --------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberView:
    """A member as the organization's pages show it: who, role, cap and use this period."""

    user_id: int
    username: str
    email: str
    role: str
    monthly_cap: int | None
    effective_cap: int | None
    credits_used: int
    joined_at: datetime


def used_in_period(member: OrganizationMember, period_start: datetime) -> int:
    """Credits the member spent from the pool in the period starting at ``period_start``."""
    return member.credits_used if member.usage_period_start == period_start else 0


async def members(session: AsyncSession, *, org_id: int, now: datetime) -> list[MemberView]:
    """Every member with role, cap and this period's use; owner first, then admins, then members."""
    org = await session.get(Organization, org_id)
    if org is None:
        raise OrganizationNotFound(f"Organization {org_id} not found.")
    pool = await get_account(session, user_id=None, org_id=org_id, now=now)
    rows = await session.execute(
        select(OrganizationMember, User)
        .join(User, User.id == OrganizationMember.user_id)
        .where(OrganizationMember.organization_id == org_id)
        .order_by(OrganizationMember.created_at, OrganizationMember.id)
    )
    views = [
        MemberView(
            user_id=user.id,
            username=user.username,
            email=user.email,
            role=member.role,
            monthly_cap=member.monthly_cap,
            effective_cap=member.monthly_cap if member.monthly_cap is not None else org.default_member_cap,
            credits_used=used_in_period(member, pool.current_period_start),
            joined_at=member.created_at,
        )
        for member, user in rows.all()
    ]
    return sorted(views, key=lambda v: -ROLE_RANK[MemberRole(v.role)])


@dataclass(frozen=True)
class OrganizationView:
    """An organization as one member sees it: its pool, its size, and the member's own use and cap."""

    organization: Organization
    member: OrganizationMember
    pool: UserSubscription
    member_count: int
    my_credits_used: int
    my_cap: int | None  # the member's own cap, else the default; None: no cap


async def view(session: AsyncSession, *, org_id: int, user_id: int, now: datetime) -> OrganizationView:
    """The organization as the member ``user_id`` sees it (404 for a non-member); a due reset of the pool first."""
    org, member = await get_organization(session, org_id=org_id, user_id=user_id)
    pool = await get_account(session, user_id=None, org_id=org.id, now=now)
    count = await session.scalar(
        select(func.count()).select_from(OrganizationMember).where(OrganizationMember.organization_id == org.id)
    )
    return OrganizationView(
        organization=org,
        member=member,
        pool=pool,
        member_count=int(count or 0),
        my_credits_used=used_in_period(member, pool.current_period_start),
        my_cap=member.monthly_cap if member.monthly_cap is not None else org.default_member_cap,
    )


async def _target(session: AsyncSession, *, org_id: int, user_id: int) -> OrganizationMember:
    member = (
        await session.execute(
            select(OrganizationMember)
            .where(OrganizationMember.organization_id == org_id, OrganizationMember.user_id == user_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if member is None:
        raise MemberNotFound(f"User {user_id} is not a member of this organization.")
    return member


async def set_role(session: AsyncSession, *, org_id: int, actor_id: int, user_id: int, role: MemberRole) -> None:
    """Make a member an admin or back a member (admins and owner); the owner's role moves only by transfer."""
    _, actor = await get_organization(session, org_id=org_id, user_id=actor_id)
    _require(actor, MemberRole.ADMIN, "can change roles")
    if role is MemberRole.OWNER:
        raise InvalidAmount("Use the ownership transfer to make someone the owner.")
    target = await _target(session, org_id=org_id, user_id=user_id)
    if target.role == MemberRole.OWNER:
        raise OwnerRequired("The owner's role changes only by transferring ownership.")
    if target.role == MemberRole.ADMIN and role is not MemberRole.ADMIN:
        _require_owner_over(actor, target, "demote an admin")
    target.role = role
    await session.flush()


async def set_member_cap(session: AsyncSession, *, org_id: int, actor_id: int, user_id: int, cap: int | None) -> None:
    """Set one member's monthly cap (``None``: the organization's default applies).

    Admins cap members; only the owner caps an admin or themself.
    """
    _, actor = await get_organization(session, org_id=org_id, user_id=actor_id)
    _require(actor, MemberRole.ADMIN, "can change caps")
    if cap is not None and cap < 0:
        raise InvalidAmount("A cap is a number of credits, 0 or more.")
    target = await _target(session, org_id=org_id, user_id=user_id)
    if target.role != MemberRole.MEMBER:
        _require_owner_over(actor, target, "cap an admin or the owner", allow_self=False)
    target.monthly_cap = cap
    await session.flush()


async def set_default_cap(
    session: AsyncSession, *, org_id: int, actor_id: int, cap: int | None, now: datetime
) -> Organization:
    """Set the cap of members without one of their own (``None``: no cap). Owner only.

    The default applies to admins and the owner as well, so an admin setting it would cap them.
    """
    org, actor = await get_organization(session, org_id=org_id, user_id=actor_id)
    _require(actor, MemberRole.OWNER, "can change the default cap")
    if cap is not None and cap < 0:
        raise InvalidAmount("A cap is a number of credits, 0 or more.")
    org.default_member_cap = cap
    org.updated_at = now
    await session.flush()
    return org


async def remove_member(session: AsyncSession, *, org_id: int, actor_id: int, user_id: int, now: datetime) -> bool:
    """Remove a member, or leave (``user_id == actor_id``); return whether a bought seat was given back.

    Admins remove members, the owner removes anyone but themself; the owner never
    leaves or is removed (transfer ownership first), so an owner always remains.
    """
    _, actor = await get_organization(session, org_id=org_id, user_id=actor_id)
    target = await _target(session, org_id=org_id, user_id=user_id)
    if target.role == MemberRole.OWNER:
        raise OwnerRequired("The owner cannot leave or be removed; transfer ownership first.")
    if user_id != actor_id:
        _require(actor, MemberRole.ADMIN, "can remove members")
        if target.role != MemberRole.MEMBER:
            _require_owner_over(actor, target, "remove an admin")
    await seats.lock_seats(session, org_id)  # before the membership row: the order take_seat locks in
    await session.delete(target)
    await session.flush()
    return await seats.release_seats(session, org_id=org_id, now=now)


async def transfer_ownership(session: AsyncSession, *, org_id: int, actor_id: int, user_id: int) -> None:
    """Hand the owner role to another member; the old owner stays on as an admin. Owner only."""
    _, actor = await get_organization(session, org_id=org_id, user_id=actor_id)
    _require(actor, MemberRole.OWNER, "can transfer ownership")
    if user_id == actor_id:
        raise InvalidAmount("You own this organization already.")
    target = await _target(session, org_id=org_id, user_id=user_id)
    # Demote first: the partial unique index admits one owner at a time.
    await session.execute(
        update(OrganizationMember).where(OrganizationMember.id == actor.id).values(role=MemberRole.ADMIN.value)
    )
    await session.execute(
        update(OrganizationMember).where(OrganizationMember.id == target.id).values(role=MemberRole.OWNER.value)
    )
    await session.flush()
    await session.refresh(actor)
    await session.refresh(target)


# --- invitations ----------------------------------------------------------------------


@dataclass(frozen=True)
class NewInvitation:
    invitation: OrganizationInvitation
    token: str  # shown once, to be sent by email; only its hash is stored


def _normal_email(email: str) -> str:
    return email.strip().casefold()


async def invite(
    session: AsyncSession,
    *,
    org_id: int,
    actor_id: int,
    email: str,
    role: MemberRole,
    now: datetime,
    ttl: timedelta = INVITATION_TTL,
) -> NewInvitation:
    """Invite an email address as a member or admin (admins and owner); returns the token once."""
    _, actor = await get_organization(session, org_id=org_id, user_id=actor_id)
    _require(actor, MemberRole.ADMIN, "can invite")
    if role is MemberRole.OWNER:
        raise InvalidAmount("Invite as member or admin; ownership is transferred, not invited.")
    address = _normal_email(email)
    already = (
        await session.execute(
            select(OrganizationMember.id)
            .join(User, User.id == OrganizationMember.user_id)
            .where(OrganizationMember.organization_id == org_id, func.lower(User.email) == address)
        )
    ).first()
    if already is not None:
        raise AlreadyMember(f"{email.strip()} is a member already.")
    await seats.check_invitation(session, org_id=org_id, now=now)
    token = secrets.token_urlsafe(32)
    invitation = OrganizationInvitation(
        organization_id=org_id,
        email=address,
        role=role,
        token_hash=hash_token(token),
        invited_by=actor_id,
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(invitation)
    await session.flush()
    return NewInvitation(invitation, token)


async def resend_invitation(
    session: AsyncSession,
    *,
    org_id: int,
    actor_id: int,
    invitation_id: int,
    now: datetime,
    ttl: timedelta = INVITATION_TTL,
) -> NewInvitation:
    """A new token for a pending invitation (admins and owner): the old one stops working.

    The new link is valid for ``ttl`` from now. An accepted or revoked invitation
    (``InvitationUsed``) or an expired one (``InvitationExpired``) cannot be resent:
    invite the address again instead.
    """
    _, actor = await get_organization(session, org_id=org_id, user_id=actor_id)
    _require(actor, MemberRole.ADMIN, "can resend invitations")
    invitation = (
        await session.execute(
            select(OrganizationInvitation)
            .where(OrganizationInvitation.id == invitation_id, OrganizationInvitation.organization_id == org_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if invitation is None:
        raise InvitationNotFound(f"Invitation {invitation_id} not found.")
    if invitation.accepted_at is not None or invitation.revoked_at is not None:
        raise InvitationUsed("This invitation was accepted or revoked already; it cannot be resent.")
    if invitation.expires_at <= now:
        raise InvitationExpired("This invitation has expired; invite the address again.")
    token = secrets.token_urlsafe(32)
    invitation.token_hash = hash_token(token)
    invitation.expires_at = now + ttl
    await session.flush()
    return NewInvitation(invitation, token)


async def pending_invitations(session: AsyncSession, *, org_id: int, now: datetime) -> list[OrganizationInvitation]:
    """Invitations neither accepted, revoked nor expired, newest first."""
    rows = await session.execute(
        select(OrganizationInvitation)
        .where(
            OrganizationInvitation.organization_id == org_id,
            OrganizationInvitation.accepted_at.is_(None),
            OrganizationInvitation.revoked_at.is_(None),
            OrganizationInvitation.expires_at > now,
        )
        .order_by(OrganizationInvitation.created_at.desc(), OrganizationInvitation.id.desc())
    )
    return list(rows.scalars())


async def invitation_by_token(session: AsyncSession, *, token: str) -> OrganizationInvitation:
    invitation = (
        await session.execute(
            select(OrganizationInvitation).where(OrganizationInvitation.token_hash == hash_token(token))
        )
    ).scalar_one_or_none()
    if invitation is None:
        raise InvitationNotFound("This invitation does not exist.")
    return invitation


async def accept_invitation(session: AsyncSession, *, token: str, user_id: int, now: datetime) -> OrganizationMember:
    """Join the organization with the invitation's role: once, before it expires, as the invited email."""
    invitation = await invitation_by_token(session, token=token)
    if invitation.revoked_at is not None:
        raise InvitationUsed("This invitation was revoked.")
    if invitation.accepted_at is not None:
        raise InvitationUsed("This invitation has been used already.")
    if invitation.expires_at <= now:
        raise InvitationExpired("This invitation has expired; ask for a new one.")
    user = await session.get(User, user_id)
    if user is None or _normal_email(user.email) != invitation.email:
        raise InvitationWrongUser("This invitation was sent to another email address.")
    existing = (
        await session.execute(
            select(OrganizationMember.id).where(
                OrganizationMember.organization_id == invitation.organization_id, OrganizationMember.user_id == user_id
            )
        )
    ).first()
    if existing is not None:
        raise AlreadyMember("You are a member of this organization already.")
    # Claim the token with a conditional UPDATE: of two concurrent accepts one wins.
    claimed = await session.execute(
        update(OrganizationInvitation)
        .where(
            OrganizationInvitation.id == invitation.id,
            OrganizationInvitation.accepted_at.is_(None),
            OrganizationInvitation.revoked_at.is_(None),
        )
        .values(accepted_at=now, accepted_by=user_id)
        .returning(OrganizationInvitation.id)
    )
    if claimed.first() is None:
        raise InvitationUsed("This invitation has been used already.")
    # Beyond the plan's seats: a paid extra seat, or 402 (the claim above rolls back with it).
    await seats.take_seat(session, org_id=invitation.organization_id, now=now)
    member = OrganizationMember(
        organization_id=invitation.organization_id,
        user_id=user_id,
        role=invitation.role,
        monthly_cap=None,
        credits_used=0,
        created_at=now,
    )
    session.add(member)
    await session.flush()
    return member


async def revoke_invitation(
    session: AsyncSession, *, org_id: int, actor_id: int, invitation_id: int, now: datetime
) -> OrganizationInvitation:
    """Withdraw a pending invitation (admins and owner); its token stops working."""
    _, actor = await get_organization(session, org_id=org_id, user_id=actor_id)
    _require(actor, MemberRole.ADMIN, "can revoke invitations")
    invitation = await session.get(OrganizationInvitation, invitation_id)
    if invitation is None or invitation.organization_id != org_id:
        raise InvitationNotFound(f"Invitation {invitation_id} not found.")
    if invitation.accepted_at is not None or invitation.revoked_at is not None:
        raise InvitationUsed("This invitation was accepted or revoked already.")
    invitation.revoked_at = now
    await session.flush()
    return invitation


# --- what a member may see ------------------------------------------------------------


def can_see_everyone(member: OrganizationMember) -> bool:
    """Admins and the owner see every member's usage; members see their own."""
    return ROLE_RANK[MemberRole(member.role)] >= ROLE_RANK[MemberRole.ADMIN]
