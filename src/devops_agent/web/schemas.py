"""The schemas several routers share: building blocks, the error bodies, and the contract's objects.

Where a schema lives (one rule, kept everywhere):

* a request or response body used by ONE router module lives in that module, above
  its endpoints (``web/api/chat.py`` has ``ConversationOut``; ``web/api/orgs.py`` has
  ``MemberOut``);
* a schema used by two or more modules lives here: the building blocks (``Strict``,
  ``Timestamp``, ``USD``), every error body (``web.errors`` builds them,
  ``web.api.errors()`` documents them), and the objects that appear in several places
  (Tier, Subscription, Purchase, UsageLog, a plan change, a pack purchase, ...);
* the chat reply (``ChatReply``, ``ToolCallOut``, ``PendingActionOut``) is the agent's
  own: the agent builds it and stores it for replays, so it lives in ``agent``.

Response models read attributes (``from_attributes``): ``TierOut.model_validate(tier)``
instead of copying fields one by one. A builder function remains only where the
contract's names differ from the row's (``subscription_out``, ``auto_recharge_out``).
Request bodies forbid unknown fields; timestamps serialise as ISO 8601 with ``+00:00``
and money as a JSON number of USD, as the contract says.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, PlainSerializer

from devops_agent.billing.models import UserSubscription
from devops_agent.payments import auto_recharge
from devops_agent.payments.models import AutoRecharge
from devops_agent.users.registration import Email, Password, Username


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


Timestamp = Annotated[datetime, PlainSerializer(_iso, return_type=str)]
USD = Annotated[float, Field(description="An amount in USD.")]
PaymentsMode = Literal["demo", "stripe"]


class Strict(BaseModel):
    """Base of request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class FromAttributes(BaseModel):
    """Base of response bodies read from a row or a dataclass: ``Model.model_validate(obj)`` reads its attributes."""

    model_config = ConfigDict(from_attributes=True)


# --- errors ---------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    """One field that failed its schema."""

    field: str
    location: str
    message: str
    type: str
    ctx: dict[str, Any] | None = Field(default=None, description="The constraint, e.g. {'min_length': 8}.")


class ErrorOut(BaseModel):
    """Every error: a machine code, a sentence for people, and extra fields where stated."""

    model_config = ConfigDict(extra="allow")

    error: str
    message: str
    details: list[ErrorDetail] | None = None


FREE_TIER_EXAMPLE: dict[str, JsonValue] = {
    "id": 1,
    "name": "free",
    "display_name": "Free",
    "monthly_price": 0.0,
    "monthly_credits": 20,
    "description": "Try DevOps Agent on your own cloud chores.",
    "features": ["20 agent actions per month", "Access to all cloud providers", "Basic support", "Community access"],
    "is_active": True,
}


# The example each 402 body shows in the API docs (``web.api.errors()``), by its ``error`` code.
_PAYMENT_REQUIRED_EXAMPLES: dict[str, dict[str, JsonValue]] = {
    "insufficient_credits": {
        "message": "You have run out of credits. Please upgrade your plan or purchase more credits.",
        "credits_remaining": 0,
        "tier": FREE_TIER_EXAMPLE,
    },
    "member_cap_reached": {
        "message": "You have used 30 of your 30 monthly credits in this organization. "
        "Ask an owner or admin of the organization to raise your cap.",
        "cap": 30,
        "used": 30,
    },
    "seat_limit_reached": {
        "message": "The Free plan of this organization includes 5 members and all 5 seats are taken "
        "(pending invitations hold one each). The owner can move the organization to a bigger plan.",
        "included": 5,
        "used": 5,
    },
}


def _example(code: str) -> ConfigDict:
    """The config of the 402 body for ``code``: its one example, ``error`` first."""
    return ConfigDict(json_schema_extra={"examples": [{"error": code, **_PAYMENT_REQUIRED_EXAMPLES[code]}]})


class InsufficientCreditsOut(BaseModel):
    """Not enough credits: the balance cannot pay for the action."""

    model_config = _example("insufficient_credits")

    error: Literal["insufficient_credits"]
    message: str
    credits_remaining: int
    tier: TierOut | None


class MemberCapReachedOut(BaseModel):
    """The charge would pass the member's monthly cap in the organization, however full the pool."""

    model_config = _example("member_cap_reached")

    error: Literal["member_cap_reached"]
    message: str
    cap: int = Field(description="The member's monthly cap in the organization.")
    used: int = Field(description="What the member spent from the pool this period.")


class SeatLimitReachedOut(BaseModel):
    """The organization's plan includes no more members and sells no extra seat."""

    model_config = _example("seat_limit_reached")

    error: Literal["seat_limit_reached"]
    message: str
    included: int = Field(description="Seats the organization has: its plan's members, plus any extra seats bought.")
    used: int = Field(description="Seats taken: members and pending invitations.")


# Every 402 body, by its ``error`` code: ``web.errors`` builds them, ``web.api.errors()`` documents them.
PAYMENT_REQUIRED: dict[str, type[BaseModel]] = {
    "insufficient_credits": InsufficientCreditsOut,
    "member_cap_reached": MemberCapReachedOut,
    "seat_limit_reached": SeatLimitReachedOut,
}


# --- the contract's objects -----------------------------------------------------------


class TierOut(FromAttributes):
    id: int
    name: str
    display_name: str
    monthly_price: USD
    monthly_credits: int
    description: str
    features: list[str]
    is_active: bool


class SubscriptionOut(BaseModel):
    credits_remaining: int = Field(
        description="Every credit the account can spend: monthly, purchased and promotional."
    )
    monthly_credits_remaining: int
    purchased_credits_remaining: int
    promotional_credits_remaining: int = Field(description="Credits given away (admins' grants, a sign-up bonus).")
    credits_used_this_month: int
    total_credits_used: int
    tier: TierOut
    current_period_start: Timestamp
    current_period_end: Timestamp
    payment_status: str
    cancel_at_period_end: bool
    scheduled_tier: TierOut | None


class GrantOut(FromAttributes):
    """A credit grant: where some of an account's credits come from, and when what is left of them expires."""

    id: int
    category: Literal["plan", "paid", "promotional"]
    credits: int = Field(description="Credits granted.")
    remaining: int = Field(description="Credits of the grant not yet spent.")
    priority: int = Field(description="Lower is spent first (then the soonest expiry).")
    effective_at: Timestamp
    expires_at: Timestamp | None = Field(description="When what is left expires; null: never.")
    source: str = Field(description='What the grant is: "plan:starter", "purchase:12", "admin:3", "signup_bonus", ...')


class PurchaseOut(FromAttributes):
    id: int
    credits_amount: int
    price_paid: USD
    payment_status: str
    created_at: Timestamp
    completed_at: Timestamp | None


class UsageLogOut(FromAttributes):
    id: int
    action_type: str
    tool_name: str | None
    credits_used: int
    success: bool
    error_message: str | None
    conversation_id: int | None
    created_at: Timestamp


def subscription_out(sub: UserSubscription) -> SubscriptionOut:
    """A Subscription as the contract shows it; ``sub`` needs ``tier`` and ``scheduled_tier`` loaded

    (``billing.get_account`` loads both, after applying a due reset). Built field
    by field because the contract's names are not the row's: the contract's
    ``credits_remaining`` is the whole balance, the row's is the monthly part.
    """
    return SubscriptionOut(
        credits_remaining=sub.balance,
        monthly_credits_remaining=sub.credits_remaining,
        purchased_credits_remaining=sub.purchased_credits_remaining,
        promotional_credits_remaining=sub.promotional_credits_remaining,
        credits_used_this_month=sub.credits_used_this_month,
        total_credits_used=sub.total_credits_used,
        tier=TierOut.model_validate(sub.tier),
        current_period_start=sub.current_period_start,
        current_period_end=sub.current_period_end,
        payment_status=sub.payment_status,
        cancel_at_period_end=sub.cancel_at_period_end,
        scheduled_tier=TierOut.model_validate(sub.scheduled_tier) if sub.scheduled_tier is not None else None,
    )


# --- accounts -------------------------------------------------------------------------


class RegisterIn(Strict):
    """The registration form: the rules of ``users.registration`` (the CLI's ``create-admin`` checks the same)."""

    username: Username
    email: Email
    password: Password


# --- plans and packs, personal and a team's (web/api/subscription.py, billing.py, orgs.py) ---


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


class PurchaseIn(Strict):
    pack_size: Annotated[int, Field(ge=1, le=2**31 - 1)]


class PurchaseCompletedOut(BaseModel):
    """Demo mode: the completed purchase and the new balance."""

    purchase: PurchaseOut
    credits_remaining: int


# --- usage (web/api/usage.py, orgs.py, admin.py, analytics.py) --------------------------


class ToolCount(FromAttributes):
    tool: str
    count: int


class UsageStatsOut(BaseModel):
    """An account's balance and use (``/api/usage/stats``, and a team pool's with its members)."""

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


class DayOut(BaseModel):
    day: str
    credits: int


# --- Stripe: portal and auto-recharge, personal and a team's (web/api/stripe.py, org_billing.py) ---


class PortalOut(BaseModel):
    url: str


class AutoRechargeIn(Strict):
    """'When my balance falls below ``threshold``, buy the ``pack_size`` pack' (at most ``monthly_cap``

    times a calendar month, at least ``cooldown_minutes`` apart).
    """

    enabled: bool
    threshold: int = Field(ge=0, le=1_000_000)
    pack_size: int = Field(gt=0)
    monthly_cap: int = Field(default=3, ge=1, le=31)
    cooldown_minutes: int = Field(default=60, ge=0, le=7 * 24 * 60)


class AutoRechargeOut(BaseModel):
    enabled: bool
    threshold: int | None
    pack_size: int | None
    monthly_cap: int | None
    cooldown_minutes: int | None
    has_saved_card: bool
    in_flight: bool
    recharges_this_month: int
    last_attempt_at: datetime | None
    last_error: str | None


def auto_recharge_out(row: AutoRecharge | None, now: datetime) -> AutoRechargeOut:
    """The rule and its state; built by hand: the row says ``pack_credits`` and counts by month."""
    if row is None:
        return AutoRechargeOut(
            enabled=False,
            threshold=None,
            pack_size=None,
            monthly_cap=None,
            cooldown_minutes=None,
            has_saved_card=False,
            in_flight=False,
            recharges_this_month=0,
            last_attempt_at=None,
            last_error=None,
        )
    return AutoRechargeOut(
        enabled=row.enabled,
        threshold=row.threshold,
        pack_size=row.pack_credits,
        monthly_cap=row.monthly_cap,
        cooldown_minutes=row.cooldown_minutes,
        has_saved_card=row.payment_method_id is not None,
        in_flight=row.in_flight,
        recharges_this_month=row.month_count if row.month_start == auto_recharge.month_start(now) else 0,
        last_attempt_at=row.last_attempt_at,
        last_error=row.last_error,
    )


InsufficientCreditsOut.model_rebuild()
