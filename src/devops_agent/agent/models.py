"""Tables of the agent: the messages of a conversation, and users' saved templates.

Conversations themselves live in ``billing.models.Conversation`` (usage logs point at
them). A user message that came with an ``Idempotency-Key`` carries the key and, once
the run is over, the reply it produced (``reply_status`` + ``reply``): a retry with the
same key finds the row and returns that reply instead of running (and charging) again.
The unique ``(user_id, idempotency_key)`` index is what makes two racing retries
collapse into one run.

While its turn runs, a user message holds a lease (``lease_expires_at``), renewed as long
as the process lives and cleared when the outcome is recorded. A lease that ran out means
the turn was interrupted (a killed process): ``agent.turns`` refunds it. ``usage_log_id``
is the charge of the message in the current ``attempt`` (a turn started afresh after an
interruption counts one more attempt; its tool charges are keyed by both).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from devops_agent.billing.models import BigId
from devops_agent.billing.types import UTCDateTime
from devops_agent.db import Base


class Role(StrEnum):
    """Who wrote a chat message (``messages.role``): the user or the assistant.

    Not a member's role in an organization: that is ``billing.org_models.MemberRole``.
    """

    USER = "user"
    ASSISTANT = "assistant"


class Message(Base):
    """One turn of a conversation, as the user sees it (tool traffic is in ``tool_calls``)."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        Index("ix_messages_lease_expires_at", "lease_expires_at"),
        UniqueConstraint("user_id", "idempotency_key", name="uq_messages_user_id_idempotency_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # An assistant reply's cost (its message and tools, refunds deducted), the balance
    # that paid right after it, and the backend that wrote it; null on user messages.
    credits_used: Mapped[int | None] = mapped_column(Integer)
    balance_after: Mapped[int | None] = mapped_column(Integer)
    agent: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    reply_status: Mapped[int | None] = mapped_column(Integer)
    reply: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The charge's usage log. Not a foreign key (SQLite adds one only by rebuilding the table);
    # a usage log is deleted only with its user, whose messages go with it.
    usage_log_id: Mapped[int | None] = mapped_column(BigId)
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class SavedTemplate(Base):
    """A named, parameterised request ("staging environment for {name}") a user runs from the chat."""

    __tablename__ = "saved_templates"
    __table_args__ = (UniqueConstraint("user_id", "name", name="uq_saved_templates_user_id_name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prompt: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
