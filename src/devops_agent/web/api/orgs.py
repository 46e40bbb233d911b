"""Organizations (teams) over HTTP: the organization, members, invitations, caps, and its pool.

The pool's endpoints (``/api/orgs/{id}/subscription``, ``/credits/purchase``,
``/usage/stats``, ``/usage/history``) answer the same shapes as the personal ones.
Every route under ``/api/orgs/{id}`` answers 404 ``organization_not_found`` to a user
who is not a member, whatever the route, so ids reveal nothing. Roles: members use
the pool and see its balance and their own usage; admins manage members, invitations
and caps and see everyone's usage; the owner also pays and deletes.

Invitations are emailed to the invitee (the token travels in memory from this request
to the outbox, where it is kept only encrypted until sent) and answered to the inviter
once; the database holds only the token's hash.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing, notifications
from devops_agent.billing import orgs
from devops_agent.billing.catalog import Catalog
from devops_agent.billing.models import SubscriptionTier, UsageLog, User, UserSubscription
from devops_agent.billing.org_models import Organization, OrganizationInvitation, OrganizationMember, Role
from devops_agent.db import Database
from devops_agent.payments.stripe_client import PaymentProviderError
from devops_agent.payments.stripe_gateway import StripeGateway
from devops_agent.web.api import AUTHED, PageLimit, PageOffset, errors
from devops_agent.web.api.subscription import active_tiers, plan_body
from devops_agent.web.deps import (
    AdminUser,
    ClockDep,
    CurrentUser,
    DatabaseDep,
    GatewayDep,
    IdempotencyKeyDep,
    SessionDep,
    SettingsDep,
    require_feature,
)
from devops_agent.web.errors import ApiError
from devops_agent.web.idempotency import run_idempotent_post
from devops_agent.web.schemas import (
    CancelOut,
    CheckoutOut,
    PlanChangedOut,
    PurchaseCompletedOut,
    PurchaseIn,
    Strict,
    SubscriptionEnvelope,
    TierOut,
    Timestamp,
    ToolCount,
    UpgradeIn,
    UsageLogOut,
    purchase_out,
    subscription_out,
    tier_out,
    usage_log_out,
)

logger = logging.getLogger("devops_agent.orgs")
router = APIRouter(prefix="/api/orgs", tags=["organizations"])
admin_router = APIRouter(prefix="/api/admin/organizations", tags=["admin"])

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


class OrgUsageLogOut(UsageLogOut):
    user_id: int
    username: str


class OrgUsageHistoryOut(BaseModel):
    logs: list[OrgUsageLogOut]
    total: int
    limit: int
    offset: int


class MemberUsageOut(BaseModel):
    user_id: int
    username: str
    credits_used: int
    cap: int | None
    tool_usage_breakdown: list[ToolCount]


class OrgUsageStatsOut(BaseModel):
    credits_remaining: int
    credits_used_this_month: int
    total_credits_used: int
    tier: TierOut
    tool_usage_breakdown: list[ToolCount] = Field(description="Admins: the whole pool's; members: their own.")
    members: list[MemberUsageOut] = Field(description="Admins: every member; members: themself.")


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


async def _detail(session: AsyncSession, org: Organization, member: OrganizationMember, now: datetime) -> OrgDetailOut:
    pool = await billing.get_account(session, user_id=None, org_id=org.id, now=now)
    count = await session.scalar(
        select(func.count()).select_from(OrganizationMember).where(OrganizationMember.organization_id == org.id)
    )
    return OrgDetailOut(
        **_org_out(org, member).model_dump(),
        credits_remaining=pool.balance,
        tier=tier_out(pool.tier),
        current_period_end=pool.current_period_end,
        member_count=int(count or 0),
        my_credits_used=orgs.used_in_period(member, pool.current_period_start),
        my_cap=member.monthly_cap if member.monthly_cap is not None else org.default_member_cap,
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
    if member.role != Role.OWNER:
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
async def create_org(body: OrgCreateIn, user: CurrentUser, session: SessionDep, now: ClockDep) -> OrgEnvelope:
    org = await orgs.create_organization(session, user_id=user.id, name=body.name, now=now)
    _, member = await orgs.get_organization(session, org_id=org.id, user_id=user.id)
    return OrgEnvelope(organization=await _detail(session, org, member, now))


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
async def preview_invitation(token: str, user: CurrentUser, session: SessionDep, now: ClockDep) -> InvitationPreviewOut:
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
    responses=errors(*MEMBER_ROUTE, 409, 410),
)
async def accept_invitation(
    body: AcceptIn, user: CurrentUser, db: DatabaseDep, now: ClockDep, gateway: GatewayDep
) -> OrgEnvelope:
    async with db.transaction() as session:
        joined = await orgs.accept_invitation(session, token=body.token, user_id=user.id, now=now)
        org, member = await orgs.get_organization(session, org_id=joined.organization_id, user_id=user.id)
        out = OrgEnvelope(organization=await _detail(session, org, member, now))
    if isinstance(gateway, StripeGateway):
        # Committed: a seat bought beyond the plan's goes on the bill (Stripe, outside the transaction).
        try:
            await gateway.sync_seats(db, org_id=org.id, now=now)
        except PaymentProviderError:
            logger.exception("the extra seats of organization %s could not be billed; the next join retries", org.id)
    return out


@router.get(
    "/{org_id}", response_model=OrgEnvelope, summary="An organization you belong to", responses=errors(*MEMBER_ROUTE)
)
async def get_org(org_id: OrgId, user: CurrentUser, session: SessionDep, now: ClockDep) -> OrgEnvelope:
    org, member = await orgs.get_organization(session, org_id=org_id, user_id=user.id)
    return OrgEnvelope(organization=await _detail(session, org, member, now))


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


async def _members_out(session: AsyncSession, org_id: int, viewer: OrganizationMember, now: datetime) -> MembersOut:
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
async def list_members(org_id: OrgId, user: CurrentUser, session: SessionDep, now: ClockDep) -> MembersOut:
    _, viewer = await orgs.get_organization(session, org_id=org_id, user_id=user.id)
    return await _members_out(session, org_id, viewer, now)


@router.put(
    "/{org_id}/members/{user_id}/cap",
    response_model=MembersOut,
    summary="Set a member's monthly cap; null falls back to the default (admins cap members, the owner anyone)",
    responses=errors(*MEMBER_ROUTE),
)
async def set_member_cap(
    org_id: OrgId, user_id: UserId, body: CapIn, user: CurrentUser, session: SessionDep, now: ClockDep
) -> MembersOut:
    await orgs.set_member_cap(session, org_id=org_id, actor_id=user.id, user_id=user_id, cap=body.monthly_cap)
    _, viewer = await orgs.get_organization(session, org_id=org_id, user_id=user.id)
    return await _members_out(session, org_id, viewer, now)


@router.put(
    "/{org_id}/default-cap",
    response_model=OrgEnvelope,
    summary="Set the cap of members without one of their own; null: no cap (owner)",
    responses=errors(*MEMBER_ROUTE),
)
async def set_default_cap(
    org_id: OrgId, body: CapIn, user: CurrentUser, session: SessionDep, now: ClockDep
) -> OrgEnvelope:
    await orgs.set_default_cap(session, org_id=org_id, actor_id=user.id, cap=body.monthly_cap, now=now)
    org, member = await orgs.get_organization(session, org_id=org_id, user_id=user.id)
    return OrgEnvelope(organization=await _detail(session, org, member, now))


@router.put(
    "/{org_id}/members/{user_id}/role",
    response_model=MembersOut,
    summary="Make a member an admin, or an admin a member (admins)",
    responses=errors(*MEMBER_ROUTE, 409),
)
async def set_role(
    org_id: OrgId, user_id: UserId, body: RoleIn, user: CurrentUser, session: SessionDep, now: ClockDep
) -> MembersOut:
    await orgs.set_role(session, org_id=org_id, actor_id=user.id, user_id=user_id, role=Role(body.role))
    _, viewer = await orgs.get_organization(session, org_id=org_id, user_id=user.id)
    return await _members_out(session, org_id, viewer, now)


@router.delete(
    "/{org_id}/members/{user_id}",
    status_code=204,
    summary="Remove a member (admins), or leave (yourself); the owner transfers ownership first",
    responses=errors(*MEMBER_ROUTE, 409),
)
async def remove_member(org_id: OrgId, user_id: UserId, user: CurrentUser, session: SessionDep) -> Response:
    await orgs.remove_member(session, org_id=org_id, actor_id=user.id, user_id=user_id)
    return Response(status_code=204)


@router.post(
    "/{org_id}/transfer",
    response_model=MembersOut,
    summary="Hand ownership to another member; you stay on as an admin (owner)",
    responses=errors(*MEMBER_ROUTE),
)
async def transfer(
    org_id: OrgId, body: TransferIn, user: CurrentUser, session: SessionDep, now: ClockDep
) -> MembersOut:
    await orgs.transfer_ownership(session, org_id=org_id, actor_id=user.id, user_id=body.user_id)
    _, viewer = await orgs.get_organization(session, org_id=org_id, user_id=user.id)
    return await _members_out(session, org_id, viewer, now)


# --- invitations ----------------------------------------------------------------------


@router.get(
    "/{org_id}/invitations",
    response_model=InvitationsOut,
    summary="Pending invitations (admins)",
    responses=errors(*MEMBER_ROUTE),
)
async def list_invitations(org_id: OrgId, user: CurrentUser, session: SessionDep, now: ClockDep) -> InvitationsOut:
    await _as_admin(session, org_id, user)
    pending = await orgs.pending_invitations(session, org_id=org_id, now=now)
    return InvitationsOut(invitations=[_invitation_out(i, now) for i in pending])


@router.post(
    "/{org_id}/invitations",
    status_code=201,
    response_model=InvitationCreatedOut,
    summary="Invite an email address as member or admin: emailed to them, and answered once (admins)",
    responses=errors(*MEMBER_ROUTE, 409),
)
async def create_invitation(
    org_id: OrgId, body: InvitationIn, user: CurrentUser, db: DatabaseDep, now: ClockDep, settings: SettingsDep
) -> InvitationCreatedOut:
    async with db.transaction() as session:
        new = await orgs.invite(
            session, org_id=org_id, actor_id=user.id, email=body.email, role=Role(body.role), now=now
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
    now: ClockDep,
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
    now: ClockDep,
) -> Response:
    async with db.transaction() as session:
        await orgs.revoke_invitation(session, org_id=org_id, actor_id=user.id, invitation_id=invitation_id, now=now)
    await notifications.after_invitation_revoked(db, invitation_id=invitation_id)  # committed: a waiting email stays
    return Response(status_code=204)


# --- the pool: subscription, packs, usage ---------------------------------------------


@router.get(
    "/{org_id}/subscription",
    response_model=SubscriptionEnvelope,
    summary="The organization's plan and pool, with the tiers it can move to",
    responses=errors(*MEMBER_ROUTE),
)
async def get_subscription(
    org_id: OrgId, user: CurrentUser, session: SessionDep, now: ClockDep, gateway: GatewayDep
) -> SubscriptionEnvelope:
    await orgs.get_organization(session, org_id=org_id, user_id=user.id)
    pool = await billing.get_account(session, user_id=None, org_id=org_id, now=now)
    return SubscriptionEnvelope(
        subscription=subscription_out(pool), available_tiers=await active_tiers(session), payments_mode=gateway.mode
    )


@router.post(
    "/{org_id}/subscription/upgrade",
    response_model=PlanChangedOut | CheckoutOut,
    summary="Move the organization to another tier: at once (demo) or through Stripe Checkout (owner)",
    responses=errors(*MEMBER_ROUTE, 409, 502),
)
async def upgrade(
    org_id: OrgId,
    body: UpgradeIn,
    request: Request,
    user: CurrentUser,
    db: DatabaseDep,
    now: ClockDep,
    gateway: GatewayDep,
    idempotency_key: IdempotencyKeyDep,
) -> JSONResponse:
    await as_owner(db, org_id, user)

    async def work() -> tuple[int, dict[str, Any]]:
        async with db.transaction() as session:
            tier = await billing.tier_by_id(session, body.tier_id, active_only=True)
        result = await gateway.change_plan(
            db, user=user, tier=tier, idempotency_key=idempotency_key, now=now, org_id=org_id
        )
        return 200, plan_body(result)

    return await run_idempotent_post(db, request, body, user_id=user.id, key=idempotency_key, now=now, work=work)


@router.post(
    "/{org_id}/subscription/cancel",
    response_model=CancelOut,
    summary="Move the organization back to Free when the period ends (owner)",
    responses=errors(*MEMBER_ROUTE, 502),
)
async def cancel(org_id: OrgId, user: CurrentUser, db: DatabaseDep, now: ClockDep, gateway: GatewayDep) -> CancelOut:
    await as_owner(db, org_id, user)
    result = await gateway.cancel_plan(db, user=user, now=now, org_id=org_id)
    assert result.subscription is not None
    return CancelOut(subscription=subscription_out(result.subscription), message=result.message or "")


@router.post(
    "/{org_id}/credits/purchase",
    response_model=PurchaseCompletedOut | CheckoutOut,
    summary="Buy a credit pack for the organization's pool: at once (demo) or a checkout URL (Stripe) (owner)",
    responses=errors(*MEMBER_ROUTE, 409, 502),
)
async def purchase(
    org_id: OrgId,
    body: PurchaseIn,
    request: Request,
    user: CurrentUser,
    db: DatabaseDep,
    now: ClockDep,
    gateway: GatewayDep,
    idempotency_key: IdempotencyKeyDep,
) -> JSONResponse:
    await as_owner(db, org_id, user)
    catalog: Catalog = request.app.state.catalog
    pack = catalog.require_pack(body.pack_size)

    async def work() -> tuple[int, dict[str, Any]]:
        result = await gateway.purchase_pack(
            db, user=user, pack=pack, idempotency_key=idempotency_key, now=now, org_id=org_id
        )
        if result.checkout_url is not None:
            return 200, CheckoutOut(checkout_url=result.checkout_url).model_dump(mode="json")
        assert result.purchase is not None
        assert result.credits_remaining is not None
        await notifications.after_purchase(db, purchase_id=result.purchase.id, now=now)  # committed: the receipt
        out = PurchaseCompletedOut(purchase=purchase_out(result.purchase), credits_remaining=result.credits_remaining)
        return 200, out.model_dump(mode="json")

    return await run_idempotent_post(db, request, body, user_id=user.id, key=idempotency_key, now=now, work=work)


@router.get(
    "/{org_id}/usage/stats",
    response_model=OrgUsageStatsOut,
    summary="The pool's balance and usage; per member and per tool for admins, your own for members",
    responses=errors(*MEMBER_ROUTE),
)
async def usage_stats(org_id: OrgId, user: CurrentUser, session: SessionDep, now: ClockDep) -> OrgUsageStatsOut:
    _, viewer = await orgs.get_organization(session, org_id=org_id, user_id=user.id)
    pool = await billing.get_account(session, user_id=None, org_id=org_id, now=now)
    everyone = orgs.can_see_everyone(viewer)
    tools = await orgs.tool_breakdown(session, org_id=org_id, user_id=None if everyone else user.id)
    by_member = await orgs.tool_breakdown_by_member(session, org_id=org_id)
    views = [v for v in await orgs.members(session, org_id=org_id, now=now) if everyone or v.user_id == user.id]
    return OrgUsageStatsOut(
        credits_remaining=pool.balance,
        credits_used_this_month=pool.credits_used_this_month,
        total_credits_used=pool.total_credits_used,
        tier=tier_out(pool.tier),
        tool_usage_breakdown=[ToolCount(tool=t.tool, count=t.count) for t in tools],
        members=[
            MemberUsageOut(
                user_id=v.user_id,
                username=v.username,
                credits_used=v.credits_used,
                cap=v.effective_cap,
                tool_usage_breakdown=[ToolCount(tool=t.tool, count=t.count) for t in by_member.get(v.user_id, [])],
            )
            for v in views
        ],
    )


@router.get(
    "/{org_id}/usage/history",
    response_model=OrgUsageHistoryOut,
    summary="Actions paid from the pool, newest first: everyone's for admins, your own for members",
    responses=errors(*MEMBER_ROUTE),
)
async def usage_history(
    org_id: OrgId,
    user: CurrentUser,
    session: SessionDep,
    now: ClockDep,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> OrgUsageHistoryOut:
    _, viewer = await orgs.get_organization(session, org_id=org_id, user_id=user.id)
    await billing.apply_due_reset(session, user_id=None, org_id=org_id, now=now)
    where = [UsageLog.organization_id == org_id]
    if not orgs.can_see_everyone(viewer):
        where.append(UsageLog.user_id == user.id)
    total = await session.scalar(select(func.count()).select_from(UsageLog).where(*where))
    rows = await session.execute(
        select(UsageLog, User.username)
        .join(User, User.id == UsageLog.user_id)
        .where(*where)
        .order_by(UsageLog.created_at.desc(), UsageLog.id.desc())
        .limit(limit)
        .offset(offset)
    )
    logs = [
        OrgUsageLogOut(**usage_log_out(log).model_dump(), user_id=log.user_id, username=username)
        for log, username in rows.all()
    ]
    return OrgUsageHistoryOut(logs=logs, total=int(total or 0), limit=limit, offset=offset)


# --- the admin dashboard --------------------------------------------------------------


class AdminOrgOut(BaseModel):
    id: int
    name: str
    owner_id: int
    owner_username: str
    member_count: int
    tier: str
    credits_remaining: int
    credits_used_this_month: int
    created_at: Timestamp


class AdminOrgsOut(BaseModel):
    organizations: list[AdminOrgOut]
    total: int


@admin_router.get(
    "",
    response_model=AdminOrgsOut,
    summary="Every organization with its owner, size, plan and pool (administrators)",
    responses=errors(*AUTHED),
)
async def admin_list_orgs(
    _admin: AdminUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: PageOffset = 0,
) -> AdminOrgsOut:
    owner = OrganizationMember.__table__.alias("owner_membership")
    sizes = (
        select(OrganizationMember.organization_id, func.count().label("n"))
        .group_by(OrganizationMember.organization_id)
        .subquery()
    )
    rows = await session.execute(
        select(Organization, User.id, User.username, sizes.c.n, SubscriptionTier.display_name, UserSubscription)
        .join(owner, (owner.c.organization_id == Organization.id) & (owner.c.role == Role.OWNER.value))
        .join(User, User.id == owner.c.user_id)
        .join(sizes, sizes.c.organization_id == Organization.id)
        .join(UserSubscription, UserSubscription.organization_id == Organization.id)
        .join(SubscriptionTier, SubscriptionTier.id == UserSubscription.tier_id)
        .order_by(Organization.created_at.desc(), Organization.id.desc())
        .limit(limit)
        .offset(offset)
    )
    total = await session.scalar(select(func.count()).select_from(Organization))
    return AdminOrgsOut(
        organizations=[
            AdminOrgOut(
                id=org.id,
                name=org.name,
                owner_id=owner_id,
                owner_username=username,
                member_count=int(n),
                tier=tier,
                credits_remaining=pool.balance,
                credits_used_this_month=pool.credits_used_this_month,
                created_at=org.created_at,
            )
            for org, owner_id, username, n, tier, pool in rows.all()
        ],
        total=int(total or 0),
    )
