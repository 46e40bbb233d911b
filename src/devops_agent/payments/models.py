"""Tables of the Stripe integration: processed events, subscription event order, prices, auto-recharge.

* ``stripe_events``: one row per webhook event that took effect. The event id is
  unique, and the row is inserted in the same transaction as the event's effect, so
  a redelivered event (or two deliveries racing) changes nothing the second time.
* ``stripe_subscriptions``: the newest subscription event applied per subscription,
  so that events arriving out of order never move an account backwards.
* ``stripe_prices``: the Product and Price ids ``devops-agent stripe sync`` made for
  each tier and pack, with the amount they charge (a changed price gets a new Price).
* ``auto_recharge_settings``: "when my balance falls below N, buy pack P", with the
  in-flight flag, cooldown and monthly cap that keep it from charging twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from devops_agent.billing.models import BigId
from devops_agent.billing.types import UTCDateTime
from devops_agent.db import Base


class StripeEvent(Base):
    """A webhook event that has been applied; its unique id makes redelivery a no-op.

    ``effect`` keeps what the event did to money (``webhooks.outcomes.Effect`` as JSON),
    so that a redelivery reports it again to what reacts after the commit.
    """

    __tablename__ = "stripe_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(Text)
    effect: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    stripe_created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StripeSubscription(Base):
    """The last subscription state we applied, with the creation time of its event."""

    __tablename__ = "stripe_subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(255), unique=True)
    # The account it pays for: a user's, or an organization's pool.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(32))
    last_event_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StripePrice(Base):
    """The Stripe Product and Price selling one tier (``kind='tier'``) or pack (``kind='pack'``)."""

    __tablename__ = "stripe_prices"
    __table_args__ = (UniqueConstraint("kind", "key", "unit_amount", name="uq_stripe_prices_kind_key_amount"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    key: Mapped[str] = mapped_column(String(64))
    unit_amount: Mapped[int] = mapped_column(Integer)
    product_id: Mapped[str] = mapped_column(String(255))
    price_id: Mapped[str] = mapped_column(String(255), unique=True)
    is_current: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AutoRecharge(Base):
    """A user's (or a team pool's) auto-recharge rule and the state that keeps it to one charge at a time."""

    __tablename__ = "auto_recharge_settings"
    __table_args__ = (
        CheckConstraint("threshold >= 0", name="threshold_non_negative"),
        CheckConstraint("pack_credits > 0", name="pack_credits_positive"),
        CheckConstraint("monthly_cap >= 1", name="monthly_cap_positive"),
        CheckConstraint("cooldown_minutes >= 0", name="cooldown_non_negative"),
        CheckConstraint("month_count >= 0", name="month_count_non_negative"),
        CheckConstraint("(user_id IS NULL) <> (organization_id IS NULL)", name="one_owner"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Whose balance it watches: a user's, or an organization's pool (paid with the pool's card).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    organization_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    threshold: Mapped[int] = mapped_column(Integer)
    pack_credits: Mapped[int] = mapped_column(Integer)
    monthly_cap: Mapped[int] = mapped_column(Integer, default=3)
    cooldown_minutes: Mapped[int] = mapped_column(Integer, default=60)
    payment_method_id: Mapped[str | None] = mapped_column(String(255))
    in_flight: Mapped[bool] = mapped_column(Boolean, default=False)
    in_flight_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    in_flight_purchase_id: Mapped[int | None] = mapped_column(ForeignKey("credit_purchases.id", ondelete="SET NULL"))
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    month_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    month_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
