"""Pydantic v2 schemas of the HTTP contract, and builders from ORM objects.

Other routers (chat, admin, pages, Stripe) import ``tier_out``/``subscription_out``
so that a Tier or a Subscription looks the same wherever it appears. Request bodies
forbid unknown fields; timestamps serialise as ISO 8601 with ``+00:00`` and money as
a JSON number of USD, as the contract says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from devops_agent.billing.catalog import PackSpec
from devops_agent.billing.models import CreditPurchase, SubscriptionTier, UsageLog, User, UserSubscription


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


Timestamp = Annotated[datetime, PlainSerializer(_iso, return_type=str)]
USD = Annotated[float, Field(description="An amount in USD.")]
PaymentsMode = Literal["demo", "stripe"]


class Strict(BaseModel):
    """Base of request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


# --- errors ---------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    field: str
    location: str
    message: str
    type: str


class ErrorOut(BaseModel):
    """Every error: a machine code, a sentence for people, and extra fields where stated."""

    model_config = ConfigDict(extra="allow")

    error: str
    message: str
    details: list[ErrorDetail] | None = None


class InsufficientCreditsOut(BaseModel):
    error: Literal["insufficient_credits"]
    message: str
    credits_remaining: int
    tier: TierOut | None


class FeatureNotInPlanOut(BaseModel):
    error: Literal["feature_not_in_plan"]
    message: str
    feature: str
    tiers: list[str]


# --- catalog and accounts -------------------------------------------------------------


class TierOut(BaseModel):
    id: int
    name: str
    display_name: str
    monthly_price: USD
    monthly_credits: int
    description: str
    features: list[str]
    is_active: bool


class SubscriptionOut(BaseModel):
    credits_remaining: int
    monthly_credits_remaining: int
    purchased_credits_remaining: int
    credits_used_this_month: int
    total_credits_used: int
    tier: TierOut
    current_period_start: Timestamp
    current_period_end: Timestamp
    payment_status: str
    cancel_at_period_end: bool
    scheduled_tier: TierOut | None


class PackOut(BaseModel):
    credits: int
    price: USD
    price_per_credit: USD
    popular: bool


class PurchaseOut(BaseModel):
    id: int
    credits_amount: int
    price_paid: USD
    payment_status: str
    created_at: Timestamp
    completed_at: Timestamp | None


class UsageLogOut(BaseModel):
    id: int
    action_type: str
    tool_name: str | None
    credits_used: int
    success: bool
    error_message: str | None
    conversation_id: int | None
    created_at: Timestamp


class UserOut(BaseModel):
    id: int
    username: str
    email: str


def _money(value: Decimal) -> float:
    return float(value)


def tier_out(tier: SubscriptionTier) -> TierOut:
    """A Tier as the contract shows it."""
    return TierOut(
        id=tier.id,
        name=tier.name,
        display_name=tier.display_name,
        monthly_price=_money(tier.monthly_price),
        monthly_credits=tier.monthly_credits,
        description=tier.description or "",
        features=list(tier.features or []),
        is_active=tier.is_active,
    )


def subscription_out(sub: UserSubscription) -> SubscriptionOut:
    """A Subscription as the contract shows it; ``sub`` needs ``tier`` and ``scheduled_tier`` loaded

    (``billing.get_account`` loads both, after applying a due reset).
    """
    return SubscriptionOut(
        credits_remaining=sub.balance,
        monthly_credits_remaining=sub.credits_remaining,
        purchased_credits_remaining=sub.purchased_credits_remaining,
        credits_used_this_month=sub.credits_used_this_month,
        total_credits_used=sub.total_credits_used,
        tier=tier_out(sub.tier),
        current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end,
        payment_status=sub.payment_status,
        cancel_at_period_end=sub.cancel_at_period_end,
        scheduled_tier=tier_out(sub.scheduled_tier) if sub.scheduled_tier is not None else None,
    )


def pack_out(pack: PackSpec) -> PackOut:
    return PackOut(
        credits=pack.credits,
        price=_money(pack.price),
        price_per_credit=float(pack.price_per_credit),
        popular=pack.popular,
    )


def purchase_out(purchase: CreditPurchase) -> PurchaseOut:
    return PurchaseOut(
        id=purchase.id,
        credits_amount=purchase.credits_amount,
        price_paid=_money(purchase.price_paid),
        payment_status=purchase.payment_status,
        created_at=purchase.created_at,
        completed_at=purchase.completed_at,
    )


def usage_log_out(log: UsageLog) -> UsageLogOut:
    return UsageLogOut(
        id=log.id,
        action_type=log.action_type,
        tool_name=log.tool_name,
        credits_used=log.credits_used,
        success=log.success,
        error_message=log.error_message,
        conversation_id=log.conversation_id,
        created_at=log.created_at,
    )


def user_out(user: User) -> UserOut:
    return UserOut(id=user.id, username=user.username, email=user.email)


# --- accounts -------------------------------------------------------------------------

USERNAME_PATTERN = r"^[A-Za-z0-9_.\-]{3,32}$"


class RegisterIn(Strict):
    username: Annotated[str, Field(pattern=USERNAME_PATTERN, description="3–32 letters, digits, _ . -")]
    email: Annotated[str, Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
    password: Annotated[str, Field(min_length=8, max_length=1024)]


class LoginIn(Strict):
    username: Annotated[str, Field(min_length=1, max_length=254, description="Username or email.")]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class PasswordChangeIn(Strict):
    current_password: Annotated[str, Field(min_length=1, max_length=1024)]
    new_password: Annotated[str, Field(min_length=8, max_length=1024, description="At least 8 characters.")]


class UserEnvelope(BaseModel):
    user: UserOut


# --- subscription and credits ---------------------------------------------------------


class TierLimitsOut(BaseModel):
    """A tier's guardrails: what the agent may create on the customer's cloud."""

    model_config = ConfigDict(from_attributes=True)

    instance_types: list[str]
    rds_classes: list[str]
    rds_max_storage_gb: int
    regions: list[str]
    creates_per_month: int
    auto_approve: bool


class TierWithLimitsOut(TierOut):
    limits: TierLimitsOut | None


class TiersOut(BaseModel):
    tiers: list[TierWithLimitsOut]
    payments_mode: PaymentsMode


class SubscriptionEnvelope(BaseModel):
    subscription: SubscriptionOut
    available_tiers: list[TierOut]
    payments_mode: PaymentsMode


class UpgradeIn(Strict):
    tier_id: Annotated[int, Field(ge=1, le=2**31 - 1)]


class CheckoutOut(BaseModel):
    """Stripe mode: where to send the user to pay; the change happens when Stripe confirms."""

    checkout_url: str


class PlanChangedOut(BaseModel):
    """Demo mode: the change took effect (or is scheduled), with a sentence that says which."""

    subscription: SubscriptionOut
    message: str


class CancelOut(BaseModel):
    subscription: SubscriptionOut
    message: str


class PacksOut(BaseModel):
    packs: list[PackOut]
    payments_mode: PaymentsMode


class PurchaseIn(Strict):
    pack_size: Annotated[int, Field(ge=1, le=2**31 - 1)]


class PurchaseCompletedOut(BaseModel):
    """Demo mode: the completed purchase and the new balance."""

    purchase: PurchaseOut
    credits_remaining: int


# --- usage ----------------------------------------------------------------------------


class ToolCount(BaseModel):
    tool: str
    count: int


class UsageStatsOut(BaseModel):
    credits_remaining: int
    credits_used_this_month: int
    total_credits_used: int
    tier: TierOut
    tool_usage_breakdown: list[ToolCount]


class UsageHistoryOut(BaseModel):
    logs: list[UsageLogOut]
    total: int
    limit: int
    offset: int


# --- API keys -------------------------------------------------------------------------


class ApiKeyIn(Strict):
    name: Annotated[str, Field(min_length=1, max_length=64)] = "default"


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: Timestamp
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None


class ApiKeyCreatedOut(BaseModel):
    key: ApiKeyOut
    secret: str = Field(description="The API key itself. Shown once: only its hash is stored.")


class ApiKeysOut(BaseModel):
    keys: list[ApiKeyOut]


# --- health ---------------------------------------------------------------------------


class HealthOut(BaseModel):
    status: str
    checks: dict[str, Any] | None = None


InsufficientCreditsOut.model_rebuild()
