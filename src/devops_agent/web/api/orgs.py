"""Organizations (teams) over HTTP: the organization, its members, caps and invitations.

The pool's endpoints (subscription, packs, usage) are the personal ones for the pool
(``web.api.org_pool``); its billing page, portal and auto-recharge are in
``web.api.org_billing``; the administrators' list of organizations in ``web.api.admin``.
Every route under ``/api/orgs/{id}`` answers 404 ``organization_not_found`` to a user
who is not a member, whatever the route, so ids reveal nothing. Roles: members use
the pool and see its balance and their own usage; admins manage members, invitations
and caps and see everyone's usage; the owner also pays and deletes.

Invitations are emailed to the invitee (the token travels in memory from this request
to the outbox, where it is kept only encrypted until sent) and answered to the inviter
once; the database holds only the token's hash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import notifications
from devops_agent.billing import orgs
from devops_agent.billing.models import User
from devops_agent.billing.org_models import MemberRole, Organization, OrganizationInvitation, OrganizationMember
from devops_agent.db import Database
from devops_agent.payments.stripe_gateway import bill_seats
from devops_agent.web.api import AUTHED, SEATS, errors
from devops_agent.web.deps import (
    CurrentUser,
    DatabaseDep,
    GatewayDep,
    NowDep,
    SessionDep,
    SettingsDep,
    require_feature,
)
from devops_agent.web.errors import ApiError
from devops_agent.web.schemas import Strict, TierOut, Timestamp

router = APIRouter(prefix="/api/orgs", tags=["organizations"])

OrgId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The organization's id.")]
UserId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The member's user id.")]
Cap = Annotated[int | None, Field(ge=0, le=2**31 - 1, description="Credits per period; null: no cap of its own.")]
MEMBER_ROUTE = (*AUTHED, 404)


# --- schemas --------------------------------------------------------------------------


class OrgCreateIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=100)]


class OrgOut(BaseModel):
    id: int
    name: str
    role: str = Field(description="Your role: owner, admin or member.")
    default_member_cap: int | None
    created_at: Timestamp


class OrgDetailOut(OrgOut):
    credits_remaining: int = Field(description="The pool's balance (monthly + purchased).")
    tier: TierOut
    current_period_end: Timestamp
    member_count: int
    my_credits_used: int = Field(description="What you spent from the pool this period.")
    my_cap: int | None = Field(description="Your cap this period (yours, else the default); null: none.")


class OrgEnvelope(BaseModel):
    organization: OrgDetailOut


class OrgsOut(BaseModel):
    organizations: list[OrgOut]


class MemberOut(BaseModel):
    user_id: int
    username: str
    email: str | None = Field(description="Shown to admins and the owner.")
    role: str
    monthly_cap: int | None
    effective_cap: int | None
    credits_used: int | None = Field(description="This period; shown to admins, and to each member for themself.")
    joined_at: Timestamp


class MembersOut(BaseModel):
    members: list[MemberOut]


class CapIn(Strict):
    monthly_cap: Cap


class RoleIn(Strict):
    role: Annotated[str, Field(pattern="^(admin|member)$")]


class TransferIn(Strict):
    user_id: Annotated[int, Field(ge=1, le=2**63 - 1)]


class InvitationIn(Strict):
    email: Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
    role: Annotated[str, Field(pattern="^(admin|member)$")] = "member"


class InvitationOut(BaseModel):
    id: int
    email: str
    role: str
    created_at: Timestamp
    expires_at: Timestamp
    status: str = Field(description="pending, accepted, revoked or expired")


class InvitationCreatedOut(BaseModel):
    invitation: InvitationOut
    token: str = Field(description="Shown once: only its hash is stored.")
    accept_url: str


class InvitationsOut(BaseModel):
    invitations: list[InvitationOut]


class AcceptIn(Strict):
    token: Annotated[str, Field(min_length=1, max_length=200)]


class InvitationPreviewOut(BaseModel):
    organization_name: str
    email: str
    role: str
    expires_at: Timestamp
    status: str


# --- helpers --------------------------------------------------------------------------


def _invitation_status(invitation: OrganizationInvitation, now: datetime) -> str:
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.revoked_at is not None:
        return "revoked"
    return "expired" if invitation.expires_at <= now else "pending"


def _invitation_out(invitation: OrganizationInvitation, now: datetime) -> InvitationOut:
    return InvitationOut(
        id=invitation.id,
        email=invitation.email,
        role=invitation.role,
        created_at=invitation.created_at,
        expires_at=invitation.expires_at,
        status=_invitation_status(invitation, now),
    )


def _org_out(org: Organization, member: OrganizationMember) -> OrgOut:
    return OrgOut(
        id=org.id,
        name=org.name,
        role=member.role,
        default_member_cap=org.default_member_cap,
        created_at=org.created_at,
    )


async def _detail(session: AsyncSession, org_id: int, user_id: int, now: datetime) -> OrgDetailOut:
    found = await orgs.view(session, org_id=org_id, user_id=user_id, now=now)
    return OrgDetailOut(
        **_org_out(found.organization, found.member).model_dump(),
        credits_remaining=found.pool.balance,
        tier=TierOut.model_validate(found.pool.tier),
        current_period_end=found.pool.current_period_end,
        member_count=found.member_count,
        my_credits_used=found.my_credits_used,
        my_cap=found.my_cap,
    )


async def _as_admin(session: AsyncSession, org_id: int, user: User) -> OrganizationMember:
    _, member = await orgs.get_organization(session, org_id=org_id, user_id=user.id)
    if not orgs.can_see_everyone(member):
        raise ApiError(403, "forbidden", "Only admins and the owner of the organization can do this.")
    return member


async def as_owner(db: Database, org_id: int, user: User) -> None:
    """Billing is the owner's: refuse anyone else (404 for non-members, 403 for others)."""
    async with db.transaction() as session:
        _, member = await orgs.get_organization(session, org_id=org_id, user_id=user.id)
    if member.role != MemberRole.OWNER:
        raise ApiError(403, "forbidden", "Only the owner of the organization handles its billing.")


# --- organizations --------------------------------------------------------------------


@router.post(
    "",
    status_code=201,
    response_model=OrgEnvelope,
    summary="Create an organization you own, with its own credit pool (plans with team collaboration)",
    responses=errors(*AUTHED),
    dependencies=[require_feature(orgs.TEAM_FEATURE)],
)
async def create_org(body: OrgCreateIn, user: CurrentUser, session: SessionDep, now: NowDep) -> OrgEnvelope:
    org = await orgs.create_organization(session, user_id=user.id, name=body.name, now=now)
    return OrgEnvelope(organization=await _detail(session, org.id, user.id, now))


@router.get("", response_model=OrgsOut, summary="The organizations you belong to", responses=errors(*AUTHED))
async def list_orgs(user: CurrentUser, session: SessionDep) -> OrgsOut:
    rows = await orgs.organizations_of(session, user_id=user.id)
    return OrgsOut(organizations=[_org_out(org, member) for org, member in rows])


@router.get(
    "/invitations/{token}",
    response_model=InvitationPreviewOut,
    summary="What an invitation is for (whoever holds its token)",
    responses=errors(*MEMBER_ROUTE),
)
async def preview_invitation(token: str, user: CurrentUser, session: SessionDep, now: NowDep) -> InvitationPreviewOut:
    invitation = await orgs.invitation_by_token(session, token=token)
    org = await session.get(Organization, invitation.organization_id)
    assert org is not None
    return InvitationPreviewOut(
        organization_name=org.name,
        email=invitation.email,
        role=invitation.role,
        expires_at=invitation.expires_at,
        status=_invitation_status(invitation, now),
    )


@router.post(
    "/invitations/accept",
    response_model=OrgEnvelope,
    summary="Join an organization with an invitation's token: once, before it expires, as the invited email",
    responses=errors(*MEMBER_ROUTE, 409, 410, payment=SEATS),
)
async def accept_invitation(
    body: AcceptIn, user: CurrentUser, db: DatabaseDep, now: NowDep, gateway: GatewayDep
) -> OrgEnvelope:
    async with db.transaction() as session:
        joined = await orgs.accept_invitation(session, token=body.token, user_id=user.id, now=now)
        org_id = joined.organization_id
        out = OrgEnvelope(organization=await _detail(session, org_id, user.id, now))
    await bill_seats(gateway, db, org_id=org_id, now=now)  # committed: a seat bought goes on the bill
    return out


@router.get(
    "/{org_id}", response_model=OrgEnvelope, summary="An organization you belong to", responses=errors(*MEMBER_ROUTE)
)
async def get_org(org_id: OrgId, user: CurrentUser, session: SessionDep, now: NowDep) -> OrgEnvelope:
    return OrgEnvelope(organization=await _detail(session, org_id, user.id, now))


@router.delete(
    "/{org_id}",
    status_code=204,
    summary="Delete the organization with its pool and history (owner)",
    responses=errors(*MEMBER_ROUTE),
)
async def delete_org(org_id: OrgId, user: CurrentUser, session: SessionDep) -> Response:
    await orgs.delete_organization(session, org_id=org_id, actor_id=user.id)
    return Response(status_code=204)


# --- members and caps -----------------------------------------------------------------


async def _members_out(session: AsyncSession, org_id: int, user_id: int, now: datetime) -> MembersOut:
    """The members as ``user_id`` may see them: emails and use to admins and the owner, else their own."""
    viewer = await orgs.membership(session, org_id=org_id, user_id=user_id)
    everyone = orgs.can_see_everyone(viewer)
    views = await orgs.members(session, org_id=org_id, now=now)
    return MembersOut(
        members=[
            MemberOut(
                user_id=v.user_id,
                username=v.username,
                email=v.email if everyone or v.user_id == viewer.user_id else None,
                role=v.role,
                monthly_cap=v.monthly_cap,
                effective_cap=v.effective_cap,
                credits_used=v.credits_used if everyone or v.user_id == viewer.user_id else None,
                joined_at=v.joined_at,
            )
            for v in views
        ]
    )


@router.get(
    "/{org_id}/members",
    response_model=MembersOut,
    summary="Members with role and cap; use per member for admins, your own for members",
    responses=errors(*MEMBER_ROUTE),
)
async def list_members(org_id: OrgId, user: CurrentUser, session: SessionDep, now: NowDep) -> MembersOut:
    return await _members_out(session, org_id, user.id, now)


@router.put(
    "/{org_id}/members/{user_id}/cap",
    response_model=MembersOut,
    summary="Set a member's monthly cap; null falls back to the default (admins cap members, the owner anyone)",
    responses=errors(*MEMBER_ROUTE),
)
async def set_member_cap(
    org_id: OrgId, user_id: UserId, body: CapIn, user: CurrentUser, session: SessionDep, now: NowDep
) -> MembersOut:
    await orgs.set_member_cap(session, org_id=org_id, actor_id=user.id, user_id=user_id, cap=body.monthly_cap)
    return await _members_out(session, org_id, user.id, now)


@router.put(
    "/{org_id}/default-cap",
    response_model=OrgEnvelope,
    summary="Set the cap of members without one of their own; null: no cap (owner)",
    responses=errors(*MEMBER_ROUTE),
)
async def set_default_cap(
    org_id: OrgId, body: CapIn, user: CurrentUser, session: SessionDep, now: NowDep
) -> OrgEnvelope:
    await orgs.set_default_cap(session, org_id=org_id, actor_id=user.id, cap=body.monthly_cap, now=now)
    return OrgEnvelope(organization=await _detail(session, org_id, user.id, now))


@router.put(
    "/{org_id}/members/{user_id}/role",
    response_model=MembersOut,
    summary="Make a member an admin, or an admin a member (admins)",
    responses=errors(*MEMBER_ROUTE, 409),
)
async def set_role(
    org_id: OrgId, user_id: UserId, body: RoleIn, user: CurrentUser, session: SessionDep, now: NowDep
) -> MembersOut:
    await orgs.set_role(session, org_id=org_id, actor_id=user.id, user_id=user_id, role=MemberRole(body.role))
    return await _members_out(session, org_id, user.id, now)


@router.delete(
    "/{org_id}/members/{user_id}",
    status_code=204,
    summary="Remove a member (admins), or leave (yourself); the owner transfers ownership first",
    responses=errors(*MEMBER_ROUTE, 409),
)
async def remove_member(
    org_id: OrgId, user_id: UserId, user: CurrentUser, db: DatabaseDep, now: NowDep, gateway: GatewayDep
) -> Response:
    async with db.transaction() as session:
        released = await orgs.remove_member(session, org_id=org_id, actor_id=user.id, user_id=user_id, now=now)
    if released:
        await bill_seats(gateway, db, org_id=org_id, now=now)
    return Response(status_code=204)


@router.post(
    "/{org_id}/transfer",
    response_model=MembersOut,
    summary="Hand ownership to another member; you stay on as an admin (owner)",
    responses=errors(*MEMBER_ROUTE),
)
async def transfer(org_id: OrgId, body: TransferIn, user: CurrentUser, session: SessionDep, now: NowDep) -> MembersOut:
    await orgs.transfer_ownership(session, org_id=org_id, actor_id=user.id, user_id=body.user_id)
    return await _members_out(session, org_id, user.id, now)


# --- invitations ----------------------------------------------------------------------


@router.get(
    "/{org_id}/invitations",
    response_model=InvitationsOut,
    summary="Pending invitations (admins)",
    responses=errors(*MEMBER_ROUTE),
)
async def list_invitations(org_id: OrgId, user: CurrentUser, session: SessionDep, now: NowDep) -> InvitationsOut:
    await _as_admin(session, org_id, user)
    pending = await orgs.pending_invitations(session, org_id=org_id, now=now)
    return InvitationsOut(invitations=[_invitation_out(i, now) for i in pending])


@router.post(
    "/{org_id}/invitations",
    status_code=201,
    response_model=InvitationCreatedOut,
    summary="Invite an email address as member or admin: emailed to them, and answered once (admins)",
    responses=errors(*MEMBER_ROUTE, 409, payment=SEATS),
)
async def create_invitation(
    org_id: OrgId, body: InvitationIn, user: CurrentUser, db: DatabaseDep, now: NowDep, settings: SettingsDep
) -> InvitationCreatedOut:
    async with db.transaction() as session:
        new = await orgs.invite(
            session, org_id=org_id, actor_id=user.id, email=body.email, role=MemberRole(body.role), now=now
        )
        out = _invitation_created(new, now, settings.public_base_url)
    # Committed: the email goes out with the token this request still holds in memory.
    await notifications.after_invitation(db, invitation_id=new.invitation.id, token=new.token, now=now)
    return out


def _invitation_created(new: orgs.NewInvitation, now: datetime, base_url: str) -> InvitationCreatedOut:
    return InvitationCreatedOut(
        invitation=_invitation_out(new.invitation, now),
        token=new.token,
        accept_url=f"{base_url.rstrip('/')}/orgs/join/{new.token}",
    )


@router.post(
    "/{org_id}/invitations/{invitation_id}/resend",
    response_model=InvitationCreatedOut,
    summary="Email a pending invitation again with a new token; the old link stops working (admins)",
    responses=errors(*MEMBER_ROUTE, 409, 410),
)
async def resend_invitation(
    org_id: OrgId,
    invitation_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    user: CurrentUser,
    db: DatabaseDep,
    now: NowDep,
    settings: SettingsDep,
) -> InvitationCreatedOut:
    async with db.transaction() as session:
        new = await orgs.resend_invitation(
            session, org_id=org_id, actor_id=user.id, invitation_id=invitation_id, now=now
        )
        out = _invitation_created(new, now, settings.public_base_url)
    await notifications.after_invitation(db, invitation_id=new.invitation.id, token=new.token, now=now)
    return out


@router.delete(
    "/{org_id}/invitations/{invitation_id}",
    status_code=204,
    summary="Revoke a pending invitation (admins)",
    responses=errors(*MEMBER_ROUTE, 409),
)
async def revoke_invitation(
    org_id: OrgId,
    invitation_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    user: CurrentUser,
    db: DatabaseDep,
    now: NowDep,
) -> Response:
    async with db.transaction() as session:
        await orgs.revoke_invitation(session, org_id=org_id, actor_id=user.id, invitation_id=invitation_id, now=now)
    await notifications.after_invitation_revoked(db, invitation_id=invitation_id)  # committed: a waiting email stays
    return Response(status_code=204)
