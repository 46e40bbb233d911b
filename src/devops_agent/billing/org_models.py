"""Tables of organizations (teams): the organization, its members and its invitations.

An organization owns a credit account like a user does (a ``user_subscriptions`` row
whose ``organization_id`` is set instead of ``user_id``), so the same engine, ledger,
resets and packs serve it. What is particular to teams lives here:

* ``organization_members``: one row per (organization, user) with a role
  (owner, admin, member), an optional monthly credit cap and the credits the member
  spent from the pool in the current period. The counter belongs to one period
  (``usage_period_start`` is the organization's period it counts); a charge in a
  newer period starts it from zero again, so caps reset with the organization's
  period without a job touching every row.
* a partial unique index lets at most one member be the owner; the service keeps
  at least one (an organization is never left without an owner).
* ``organization_invitations``: an invitation by email with a single-use token that
  is stored only as its SHA-256 hash, an expiry, and its acceptance or revocation.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from devops_agent.db import Base

from .models import BigId
from .types import UTCDateTime


class MemberRole(StrEnum):
    """A member's role in an organization (``organization_members.role``, invitations).

    Not a chat message's author: that is ``agent.models.Role``.
    """

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"


ROLE_RANK = {MemberRole.MEMBER: 0, MemberRole.ADMIN: 1, MemberRole.OWNER: 2}


class Organization(Base):
    __tablename__ = "organizations"
    __table_args__ = (
        CheckConstraint("default_member_cap >= 0", name="default_cap_non_negative"),
        CheckConstraint("extra_seats >= 0", name="extra_seats_non_negative"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Cap for members without a cap of their own; NULL means no cap.
    default_member_cap: Mapped[int | None] = mapped_column(Integer)
    # Seats bought beyond the tier's included members (each billed at the tier's seat price).
    extra_seats: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OrganizationMember(Base):
    __tablename__ = "organization_members"
    __table_args__ = (
        UniqueConstraint("organization_id", "user_id", name="uq_organization_members_org_user"),
        CheckConstraint("role IN ('owner', 'admin', 'member')", name="role_known"),
        CheckConstraint("monthly_cap >= 0", name="cap_non_negative"),
        CheckConstraint("credits_used >= 0", name="credits_used_non_negative"),
        # At most one owner per organization, enforced by the database.
        Index(
            "uq_organization_members_one_owner",
            "organization_id",
            unique=True,
            sqlite_where=text("role = 'owner'"),
            postgresql_where=text("role = 'owner'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16), default=MemberRole.MEMBER)
    # The member's own monthly cap; NULL means the organization's default applies.
    monthly_cap: Mapped[int | None] = mapped_column(Integer)
    credits_used: Mapped[int] = mapped_column(Integer, default=0)
    usage_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OrganizationInvitation(Base):
    __tablename__ = "organization_invitations"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'member')", name="role_invitable"),
        CheckConstraint("expires_at > created_at", name="expires_after_creation"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[str] = mapped_column(String(16), default=MemberRole.MEMBER)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
