"""Roles, invitations, ownership: who may do what in an organization, and that an owner always remains."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from devops_agent.billing import orgs
from devops_agent.billing.errors import (
    AlreadyMember,
    InvitationExpired,
    InvitationNotFound,
    InvitationUsed,
    InvitationWrongUser,
    OrganizationLimit,
    OrganizationNotFound,
    OrgForbidden,
    OwnerRequired,
)
from devops_agent.billing.org_models import MemberRole, OrganizationInvitation, OrganizationMember
from devops_agent.db import Database
from tests.factories import T0, make_user
from tests.orgs.factories import add_member, make_org


async def test_the_token_is_stored_hashed_and_works_once(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        guest = await make_user(s)
        org = await make_org(s, owner=owner)
        new = await orgs.invite(
            s, org_id=org.id, actor_id=owner.id, email=guest.email.upper(), role=MemberRole.ADMIN, now=T0
        )
        stored = (await s.execute(select(OrganizationInvitation))).scalar_one()
    assert stored.token_hash == orgs.hash_token(new.token)
    assert new.token not in stored.token_hash
    async with db.transaction() as s:
        member = await orgs.accept_invitation(s, token=new.token, user_id=guest.id, now=T0)
    assert member.role == MemberRole.ADMIN
    async with db.transaction() as s:
        with pytest.raises(InvitationUsed):
            await orgs.accept_invitation(s, token=new.token, user_id=guest.id, now=T0)


async def test_two_concurrent_accepts_of_one_token_let_one_user_in(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        guest = await make_user(s)
        org = await make_org(s, owner=owner)
        new = await orgs.invite(s, org_id=org.id, actor_id=owner.id, email=guest.email, role=MemberRole.MEMBER, now=T0)

    async def accept() -> str:
        try:
            async with db.transaction() as s:
                await orgs.accept_invitation(s, token=new.token, user_id=guest.id, now=T0)
        except (InvitationUsed, AlreadyMember):
            return "refused"
        except Exception as exc:  # PostgreSQL: the loser may hit the unique (org, user) index
            return type(exc).__name__
        return "joined"

    outcomes = await asyncio.gather(*(accept() for _ in range(5)), return_exceptions=True)
    assert outcomes.count("joined") == 1
    async with db.transaction() as s:
        rows = (await s.execute(select(OrganizationMember).where(OrganizationMember.user_id == guest.id))).all()
    assert len(rows) == 1


async def test_expired_wrong_user_unknown_and_revoked_invitations_are_refused(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        guest = await make_user(s)
        other = await make_user(s)
        org = await make_org(s, owner=owner)
        expiring = await orgs.invite(
            s,
            org_id=org.id,
            actor_id=owner.id,
            email=guest.email,
            role=MemberRole.MEMBER,
            now=T0,
            ttl=timedelta(hours=1),
        )
        revoked = await orgs.invite(
            s, org_id=org.id, actor_id=owner.id, email=guest.email, role=MemberRole.MEMBER, now=T0
        )
        await orgs.revoke_invitation(s, org_id=org.id, actor_id=owner.id, invitation_id=revoked.invitation.id, now=T0)
    async with db.transaction() as s:
        with pytest.raises(InvitationExpired):
            await orgs.accept_invitation(s, token=expiring.token, user_id=guest.id, now=T0 + timedelta(hours=2))
        with pytest.raises(InvitationWrongUser):
            await orgs.accept_invitation(s, token=expiring.token, user_id=other.id, now=T0)
        with pytest.raises(InvitationNotFound):
            await orgs.accept_invitation(s, token="not-a-token", user_id=guest.id, now=T0)
        with pytest.raises(InvitationUsed):
            await orgs.accept_invitation(s, token=revoked.token, user_id=guest.id, now=T0)
        pending = await orgs.pending_invitations(s, org_id=org.id, now=T0)
    assert [i.id for i in pending] == [expiring.invitation.id]


async def test_members_cannot_manage_and_strangers_see_nothing(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        stranger = await make_user(s)
        org = await make_org(s, owner=owner)
        member = await add_member(s, org, owner=owner)
        admin = await add_member(s, org, owner=owner, role=MemberRole.ADMIN)
    async with db.transaction() as s:
        with pytest.raises(OrgForbidden):
            await orgs.set_member_cap(s, org_id=org.id, actor_id=member.id, user_id=member.id, cap=1000)
        with pytest.raises(OrgForbidden):
            await orgs.set_default_cap(s, org_id=org.id, actor_id=member.id, cap=5, now=T0)
        with pytest.raises(OrgForbidden):
            await orgs.invite(
                s, org_id=org.id, actor_id=member.id, email="x@example.com", role=MemberRole.MEMBER, now=T0
            )
        with pytest.raises(OrgForbidden):
            await orgs.delete_organization(s, org_id=org.id, actor_id=admin.id)
        with pytest.raises(OrgForbidden):
            await orgs.transfer_ownership(s, org_id=org.id, actor_id=admin.id, user_id=admin.id)
        with pytest.raises(OrganizationNotFound):
            await orgs.get_organization(s, org_id=org.id, user_id=stranger.id)
        with pytest.raises(OrganizationNotFound):
            await orgs.set_member_cap(s, org_id=org.id, actor_id=stranger.id, user_id=member.id, cap=1)
        # An admin does manage caps.
        await orgs.set_member_cap(s, org_id=org.id, actor_id=admin.id, user_id=member.id, cap=7)
        views = {v.user_id: v for v in await orgs.members(s, org_id=org.id, now=T0)}
    assert views[member.id].effective_cap == 7


async def test_an_owner_always_remains(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        org = await make_org(s, owner=owner)
        admin = await add_member(s, org, owner=owner, role=MemberRole.ADMIN)
        member = await add_member(s, org, owner=owner)
    async with db.transaction() as s:
        with pytest.raises(OwnerRequired):
            await orgs.remove_member(s, org_id=org.id, actor_id=owner.id, user_id=owner.id, now=T0)
        with pytest.raises(OwnerRequired):
            await orgs.remove_member(s, org_id=org.id, actor_id=admin.id, user_id=owner.id, now=T0)
        with pytest.raises(OwnerRequired):
            await orgs.set_role(s, org_id=org.id, actor_id=admin.id, user_id=owner.id, role=MemberRole.MEMBER)
        with pytest.raises(OrgForbidden):
            await orgs.remove_member(s, org_id=org.id, actor_id=member.id, user_id=admin.id, now=T0)
    async with db.transaction() as s:
        await orgs.transfer_ownership(s, org_id=org.id, actor_id=owner.id, user_id=member.id)
    async with db.transaction() as s:
        roles = {v.user_id: v.role for v in await orgs.members(s, org_id=org.id, now=T0)}
        # The old owner, now an admin, may leave; the new owner may not.
        await orgs.remove_member(s, org_id=org.id, actor_id=owner.id, user_id=owner.id, now=T0)
        with pytest.raises(OwnerRequired):
            await orgs.remove_member(s, org_id=org.id, actor_id=member.id, user_id=member.id, now=T0)
    assert roles == {owner.id: "admin", admin.id: "admin", member.id: "owner"}


async def test_inviting_a_member_again_is_a_conflict(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        org = await make_org(s, owner=owner)
        member = await add_member(s, org, owner=owner)
        with pytest.raises(AlreadyMember):
            await orgs.invite(s, org_id=org.id, actor_id=owner.id, email=member.email, role=MemberRole.MEMBER, now=T0)


async def test_deleting_the_organization_removes_its_pool(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        org = await make_org(s, owner=owner)
        await add_member(s, org, owner=owner)
    async with db.transaction() as s:
        await orgs.delete_organization(s, org_id=org.id, actor_id=owner.id)
    async with db.transaction() as s:
        assert await orgs.organizations_of(s, user_id=owner.id) == []


async def test_one_user_owns_a_limited_number_of_organizations(db: Database) -> None:
    async with db.transaction() as s:
        owner = await make_user(s)
        for n in range(orgs.MAX_OWNED_ORGANIZATIONS):
            await make_org(s, owner=owner, name=f"Team {n}")
        with pytest.raises(OrganizationLimit):
            await make_org(s, owner=owner, name="One too many")
