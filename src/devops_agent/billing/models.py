"""Tables of the credits system: tiers, accounts, purchases, usage, users, conversations, the ledger.

Rules the database enforces (CHECK constraints), not just the code:

* no balance is ever negative: ``credits_remaining`` (the monthly allowance) and
  ``purchased_credits_remaining`` (pack credits, never expiring) are both >= 0;
* the ledger is append-only and has one row per change of a balance, with the
  deltas and the balances after; the stored balances equal the sums of the deltas;
* every ledger row carries a unique idempotency key, so a retried operation can
  never be applied twice.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from devops_agent.db import Base

from .types import Money, UTCDateTime

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class PaymentStatus(StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"
    PAST_DUE = "past_due"
    UNPAID = "unpaid"


class PurchaseStatus(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    REFUNDED = "refunded"


class LedgerKind(StrEnum):
    MONTHLY_GRANT = "monthly_grant"
    GRANT = "grant"  # a promotional grant (an admin's, the sign-up bonus)
    EXPIRY = "expiry"
    PURCHASE = "purchase"
    CHARGE = "charge"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"
    TIER_CHANGE = "tier_change"
    CLAWBACK = "clawback"


class GrantCategory(StrEnum):
    """Where a grant's credits come from, and which balance of the account they count in."""

    PLAN = "plan"  # the plan's monthly credits: ``credits_remaining``
    PAID = "paid"  # packs (and admins' adjustments): ``purchased_credits_remaining``
    PROMOTIONAL = "promotional"  # given away: ``promotional_credits_remaining``


class ActionType(StrEnum):
    AGENT_MESSAGE = "agent_message"
    TOOL_USE = "tool_use"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        # "Alice" and "alice" are one name, to people and to login: the database refuses
        # the second even when two sign-ups race past the registration's own check.
        Index("uq_users_username_lower", func.lower(text("username")), unique=True),
        Index("uq_users_email_lower", func.lower(text("email")), unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_suspended: Mapped[bool] = mapped_column(Boolean, default=False)
    email_opt_out: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SubscriptionTier(Base):
    __tablename__ = "subscription_tiers"
    __table_args__ = (
        CheckConstraint("monthly_credits >= 0", name="monthly_credits_non_negative"),
        CheckConstraint("monthly_price >= 0", name="monthly_price_non_negative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    monthly_price: Mapped[Decimal] = mapped_column(Money)
    monthly_credits: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
    features: Mapped[list[str]] = mapped_column(JSON, default=list)
    entitlements: Mapped[list[str]] = mapped_column(JSON, default=list)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    stripe_price_id: Mapped[str | None] = mapped_column(String(255))
    # Seats of an organization on this tier: members included in the price (NULL: no limit)
    # and the monthly price of each member beyond them (NULL: no extra seats are sold).
    included_members: Mapped[int | None] = mapped_column(Integer)
    extra_seat_price: Mapped[Decimal | None] = mapped_column(Money)

    def has(self, entitlement: str) -> bool:
        return entitlement in (self.entitlements or [])


class UserSubscription(Base):
    """An account's credits: a user's own, or an organization's pool that its members spend from.

    Despite its name (class and table) it is neither only a subscription nor one per user:
    each row has exactly one owner (``user_id`` or ``organization_id``, the ``one_owner``
    constraint), each owner one row, holding the owner's plan (``tier``), its Stripe ids and
    both balances.

    Two balances, and one name that means two things (this is where the mapping is written):

    * the column ``credits_remaining`` is the **monthly** balance (the plan's allowance,
      spent first, reset at each period's end);
    * ``purchased_credits_remaining`` holds paid credits (packs);
    * ``promotional_credits_remaining`` holds credits given away (admins' grants, the sign-up bonus);
    * each is the sum of the account's grants of that category (``CreditGrant``), kept
      here for the hot path; ``balance`` is their sum, and that total is what the API calls ``credits_remaining``
      (``GET /api/subscription``, the chat reply, the 402 body); the API names the column's
      figure ``monthly_credits_remaining``. Read the column as "monthly credits remaining".
    """

    __tablename__ = "user_subscriptions"
    __table_args__ = (
        CheckConstraint("credits_remaining >= 0", name="credits_remaining_non_negative"),
        CheckConstraint("purchased_credits_remaining >= 0", name="purchased_credits_non_negative"),
        CheckConstraint("promotional_credits_remaining >= 0", name="promotional_credits_non_negative"),
        CheckConstraint("credits_used_this_month >= 0", name="used_this_month_non_negative"),
        CheckConstraint("total_credits_used >= 0", name="total_used_non_negative"),
        CheckConstraint("current_period_end > current_period_start", name="period_forward"),
        # An account belongs to exactly one owner: a user or an organization (teams).
        CheckConstraint(
            "(user_id IS NOT NULL AND organization_id IS NULL) OR (user_id IS NULL AND organization_id IS NOT NULL)",
            name="one_owner",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), unique=True)
    tier_id: Mapped[int] = mapped_column(ForeignKey("subscription_tiers.id"))
    credits_remaining: Mapped[int] = mapped_column(Integer, default=0)
    purchased_credits_remaining: Mapped[int] = mapped_column(Integer, default=0)
    promotional_credits_remaining: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    credits_used_this_month: Mapped[int] = mapped_column(Integer, default=0)
    total_credits_used: Mapped[int] = mapped_column(BigInteger, default=0)
    billing_anchor: Mapped[datetime] = mapped_column(UTCDateTime)
    current_period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    current_period_end: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    payment_status: Mapped[str] = mapped_column(String(16), default=PaymentStatus.ACTIVE)
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    scheduled_tier_id: Mapped[int | None] = mapped_column(ForeignKey("subscription_tiers.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    tier: Mapped[SubscriptionTier] = relationship(foreign_keys=[tier_id], lazy="raise")
    scheduled_tier: Mapped[SubscriptionTier | None] = relationship(foreign_keys=[scheduled_tier_id], lazy="raise")

    @property
    def balance(self) -> int:
        """Monthly, purchased and promotional credits: what the API calls ``credits_remaining``."""
        return self.credits_remaining + self.purchased_credits_remaining + self.promotional_credits_remaining


class CreditPurchase(Base):
    __tablename__ = "credit_purchases"
    __table_args__ = (
        CheckConstraint("credits_amount > 0", name="credits_amount_positive"),
        CheckConstraint("price_paid >= 0", name="price_paid_non_negative"),
        CheckConstraint("clawback_shortfall >= 0", name="shortfall_non_negative"),
        Index("uq_credit_purchases_request_key", "request_key", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Set when the pack is bought for an organization's pool (``user_id`` is then the buyer).
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    credits_amount: Mapped[int] = mapped_column(Integer)
    price_paid: Mapped[Decimal] = mapped_column(Money)
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    stripe_checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    payment_status: Mapped[str] = mapped_column(String(16), default=PurchaseStatus.PENDING)
    clawback_shortfall: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The buyer's Idempotency-Key (scoped to the buyer), so a retry after a crash finds this purchase.
    request_key: Mapped[str | None] = mapped_column(String(300))


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(200), default="New conversation")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UsageLog(Base):
    __tablename__ = "usage_logs"
    __table_args__ = (
        CheckConstraint("credits_used >= 0", name="credits_used_non_negative"),
        Index("ix_usage_logs_user_created", "user_id", "created_at"),
        # A tool's charge finds its message's in the same conversation (billing.activity).
        Index("ix_usage_logs_conversation_id_id", "conversation_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Set when the action was paid from an organization's pool (``user_id`` is the member who acted).
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    conversation_id: Mapped[int | None] = mapped_column(ForeignKey("conversations.id", ondelete="SET NULL"))
    action_type: Mapped[str] = mapped_column(String(32))
    tool_name: Mapped[str | None] = mapped_column(String(64))
    credits_used: Mapped[int] = mapped_column(Integer, default=1)
    success: Mapped[bool] = mapped_column(Boolean, default=True)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CreditLedger(Base):
    """One row per change of a balance; append-only."""

    __tablename__ = "credit_ledger"
    __table_args__ = (
        CheckConstraint("monthly_balance_after >= 0", name="monthly_after_non_negative"),
        CheckConstraint("purchased_balance_after >= 0", name="purchased_after_non_negative"),
        CheckConstraint("promotional_balance_after >= 0", name="promotional_after_non_negative"),
        Index("ix_credit_ledger_subscription_id_id", "subscription_id", "id"),
        Index("ix_credit_ledger_grant_id", "grant_id"),
        Index("ix_credit_ledger_operation_id", "operation_id"),
        # The ledger row of a usage log: a refund's lookup, and the activity's grouping.
        Index("ix_credit_ledger_usage_log_id", "usage_log_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("user_subscriptions.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16))
    monthly_delta: Mapped[int] = mapped_column(Integer)
    purchased_delta: Mapped[int] = mapped_column(Integer)
    monthly_balance_after: Mapped[int] = mapped_column(Integer)
    purchased_balance_after: Mapped[int] = mapped_column(Integer)
    promotional_delta: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    promotional_balance_after: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The grant whose credits moved (NULL on rows written before grants existed).
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("credit_grants.id", ondelete="SET NULL"))
    # The first row of the operation this row belongs to, when one operation moved several
    # grants (NULL on an operation's first or only row): what the customer's ledger groups by.
    operation_id: Mapped[int | None] = mapped_column(BigId)
    usage_log_id: Mapped[int | None] = mapped_column(ForeignKey("usage_logs.id", ondelete="SET NULL"))
    purchase_id: Mapped[int | None] = mapped_column(ForeignKey("credit_purchases.id", ondelete="SET NULL"))
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def delta(self) -> int:
        return self.monthly_delta + self.purchased_delta + self.promotional_delta


class CreditGrant(Base):
    """Credits given to an account at once, consumed in the draw-down order (``billing.grants``).

    Every credit on an account comes from a grant: the plan's monthly credits (expiring
    at the period's end), a pack (``paid``; never expiring unless the catalog says so),
    or a promotional grant (cost basis 0). ``price`` is what the customer paid for the
    grant's credits, so ``price / credits`` is their cost basis, the revenue each
    consumed credit recognizes. ``remaining`` never goes below zero nor above
    ``credits``: a refund gives back only what was taken.
    """

    __tablename__ = "credit_grants"
    __table_args__ = (
        CheckConstraint("category IN ('plan', 'paid', 'promotional')", name="grant_category_known"),
        CheckConstraint("credits >= 0", name="grant_credits_non_negative"),
        CheckConstraint("remaining >= 0 AND remaining <= credits", name="grant_remaining_in_range"),
        CheckConstraint("price >= 0", name="grant_price_non_negative"),
        CheckConstraint("expires_at IS NULL OR expires_at > effective_at", name="grant_expires_after_start"),
        Index("ix_credit_grants_subscription_id_remaining", "subscription_id", "remaining"),
        Index("ix_credit_grants_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("user_subscriptions.id", ondelete="CASCADE"))
    category: Mapped[str] = mapped_column(String(16))
    credits: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer)
    priority: Mapped[int] = mapped_column(Integer, default=50)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    price: Mapped[Decimal] = mapped_column(Money, default=Decimal("0"))
    # What the grant is, for people: "plan:professional", "purchase:12", "admin:3", "signup_bonus", ...
    source: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    tier_id: Mapped[int | None] = mapped_column(ForeignKey("subscription_tiers.id"))
    purchase_id: Mapped[int | None] = mapped_column(ForeignKey("credit_purchases.id", ondelete="SET NULL"))
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    @property
    def cost_basis_per_credit(self) -> Decimal:
        """The revenue one of its credits recognizes when consumed (0 for promotional credits)."""
        return self.price / self.credits if self.credits else Decimal(0)
