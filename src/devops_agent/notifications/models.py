"""The email outbox: one row per email we decided to send, and the record that we did.

The row is the deduplication too: ``(user_id, cause, period_key)`` is unique, so
"the low-credit email of this billing period" can be inserted only once, however
many charges cross the threshold at the same moment and however many workers run.
A row is inserted in its own short transaction AFTER the change that caused it
committed; a dispatcher then delivers it outside any transaction.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from devops_agent.billing.models import BigId
from devops_agent.billing.types import UTCDateTime
from devops_agent.db import Base


class Cause(StrEnum):
    """Why an email is sent. Low balance and exhaustion are optional; the others are not."""

    LOW_BALANCE = "low_balance"
    CREDITS_EXHAUSTED = "credits_exhausted"
    PURCHASE_RECEIPT = "purchase_receipt"
    PAYMENT_FAILED = "payment_failed"
    POOL_LOW = "pool_low"  # a team's pool, to its owner
    POOL_EXHAUSTED = "pool_exhausted"
    ORG_INVITATION = "org_invitation"  # to an invited address, which may have no account yet

    @property
    def essential(self) -> bool:
        """Receipts and payment failures concern money, an invitation was asked for by a person:
        they are sent even to users who opted out of alerts."""
        return self in (Cause.PURCHASE_RECEIPT, Cause.PAYMENT_FAILED, Cause.ORG_INVITATION)


class OutboxStatus(StrEnum):
    PENDING = "pending"  # waiting for (another) delivery attempt
    SENDING = "sending"  # claimed by a dispatcher
    SENT = "sent"  # accepted by the SMTP server
    LOGGED = "logged"  # no SMTP_URL: written to the log instead
    FAILED = "failed"  # gave up after the last attempt
    SKIPPED = "skipped"  # recorded for deduplication only (e.g. "low" when the balance hit 0 at once)


class EmailOutbox(Base):
    __tablename__ = "email_outbox"
    __table_args__ = (
        UniqueConstraint("user_id", "cause", "period_key", name="uq_email_outbox_user_cause_period"),
        CheckConstraint("status IN ('pending', 'sending', 'sent', 'logged', 'failed', 'skipped')", name="status_known"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index("ix_email_outbox_status_next_attempt_at", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # The user the email concerns; NULL for an invitation to an address that may have no account.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # An invitation's email: its link's token is kept only sealed (encrypted with a key from
    # the settings) until the email is delivered, then dropped.
    invitation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organization_invitations.id", ondelete="CASCADE"), index=True
    )
    sealed_token: Mapped[str | None] = mapped_column(Text)
    cause: Mapped[str] = mapped_column(String(32))
    period_key: Mapped[str] = mapped_column(String(128))
    to_address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    essential: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
