"""Tables of the agent on a customer's cloud: the AWS connections, and the creates awaiting approval.

``aws_connections``: one row per user or per team (never both on a row), made when the
external id is first shown (it must exist before the customer writes their role's trust
policy); ``role_arn``, ``account_id`` and ``connected_at`` are set once AssumeRole worked.

``pending_actions``: a billable create the agent proposed; nothing is charged until its
owner approves it. ``status`` moves ``pending`` -> ``running`` -> ``approved`` (the
answer kept in ``reply`` for repeated approvals), or ``pending`` -> ``declined`` or
``expired``, each at most once.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from devops_agent.billing.models import BigId
from devops_agent.billing.types import UTCDateTime
from devops_agent.db import Base


class AwsConnection(Base):
    """The IAM role in a customer's own AWS account that the agent acts through."""

    __tablename__ = "aws_connections"
    __table_args__ = (
        CheckConstraint(
            "(user_id IS NOT NULL AND organization_id IS NULL) OR (user_id IS NULL AND organization_id IS NOT NULL)",
            name="one_owner",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), unique=True)
    external_id: Mapped[str] = mapped_column(String(64), unique=True)
    role_arn: Mapped[str | None] = mapped_column(String(2048))
    account_id: Mapped[str | None] = mapped_column(String(12))
    region: Mapped[str | None] = mapped_column(String(32))
    connected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ActionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    APPROVED = "approved"
    DECLINED = "declined"
    EXPIRED = "expired"


class PendingAction(Base):
    """A create the agent proposed in a conversation, charged and run only once its owner approves."""

    __tablename__ = "pending_actions"
    __table_args__ = (
        CheckConstraint("credits > 0", name="credits_positive"),
        CheckConstraint("status IN ('pending', 'running', 'approved', 'declined', 'expired')", name="status_known"),
        Index("ix_pending_actions_user_id_status", "user_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    tool: Mapped[str] = mapped_column(String(64))
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    credits: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=ActionStatus.PENDING.value)
    usage_log_id: Mapped[int | None] = mapped_column(ForeignKey("usage_logs.id", ondelete="SET NULL"))
    reply: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
