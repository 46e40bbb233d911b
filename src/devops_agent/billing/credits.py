"""The credits engine: the only code that moves a balance.

Every function takes an open ``AsyncSession`` inside a transaction, flushes and never
commits: the caller's ``Database.transaction()`` block decides. Every change of a
balance appends exactly one ``credit_ledger`` row carrying a unique idempotency key,
so a retried call finds the first row and returns its result instead of acting again.

How a charge stays correct under concurrency: it is one conditional UPDATE
(``... WHERE balance >= amount AND period not due``) that spends monthly credits
first and purchased credits after, with the new balances RETURNed; no Python
read-modify-write. Everything else (resets, purchases, tier changes, adjustments)
is rarer and takes the row lock (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite
writers are already serialised by ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from devops_agent.db import UNIQUE_VIOLATIONS

from .errors import (
    AccountNotFound,
    AlreadyOnTier,
    ChargeNotFound,
    InsufficientCredits,
    InvalidAmount,
    MemberCapReached,
    OrganizationNotFound,
    PurchaseNotFound,
    TierNotFound,
)
from .models import (
    ActionType,
    CreditLedger,
    CreditPurchase,
    LedgerKind,
    PaymentStatus,
    PurchaseStatus,
    SubscriptionTier,
    UsageLog,
    UserSubscription,
)
from .org_models import Organization, OrganizationMember
from .periods import add_months, period_containing

FREE_TIER = "free"
# How long a request's Idempotency-Key names that one request (the web layer keeps its records as long).
REQUEST_WINDOW = timedelta(days=30)

_sub = cast(Table, UserSubscription.__table__)
_ledger = cast(Table, CreditLedger.__table__)
_usage = cast(Table, UsageLog.__table__)
_members = cast(Table, OrganizationMember.__table__)
_orgs = cast(Table, Organization.__table__)

# Accounts whose periods we start ourselves at the period end: everyone but those whose
# plan is paid through a payment provider and not cancelled (their paid invoice does it).
_lazily_reset = or_(UserSubscription.stripe_subscription_id.is_(None), UserSubscription.cancel_at_period_end.is_(True))


@dataclass(frozen=True)
class Balance:
    monthly: int
    purchased: int

    @property
    def total(self) -> int:
        return self.monthly + self.purchased


@dataclass(frozen=True)
class ChargeResult:
    usage_log_id: int
    ledger_id: int
    credits_used: int
    balance: Balance
    replayed: bool = False


@dataclass(frozen=True)
class LedgerResult:
    ledger_id: int | None
    balance: Balance
    replayed: bool = False


def new_key() -> str:
    """A fresh idempotency key for operations the caller did not name."""
    return uuid.uuid4().hex


async def _append_ledger(
    session: AsyncSession,
    *,
    subscription_id: int,
    user_id: int | None,
    kind: LedgerKind,
    monthly_delta: int,
    purchased_delta: int,
    balance_after: Balance,
    key: str,
    now: datetime,
    usage_log_id: int | None = None,
    purchase_id: int | None = None,
    admin_id: int | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    result = await session.execute(
        insert(_ledger)
        .values(
            subscription_id=subscription_id,
            user_id=user_id,
            kind=kind.value,
            monthly_delta=monthly_delta,
            purchased_delta=purchased_delta,
            monthly_balance_after=balance_after.monthly,
            purchased_balance_after=balance_after.purchased,
            usage_log_id=usage_log_id,
            purchase_id=purchase_id,
            admin_id=admin_id,
            reason=reason,
            idempotency_key=key,
            details=details,
            created_at=now,
        )
        .returning(_ledger.c.id)
    )
    return int(result.scalar_one())


async def _ledger_by_key(session: AsyncSession, key: str) -> CreditLedger | None:
    return (await session.execute(select(CreditLedger).where(CreditLedger.idempotency_key == key))).scalar_one_or_none()


async def _replay_ledger(session: AsyncSession, key: str) -> LedgerResult | None:
    """The result of the operation already recorded under ``key``, if there is one."""
    row = await _ledger_by_key(session, key)
    if row is None:
        return None
    return LedgerResult(row.id, Balance(row.monthly_balance_after, row.purchased_balance_after), replayed=True)


def _owned_by(user_id: int | None, org_id: int | None) -> ColumnElement[bool]:
    """The account an operation acts on: the organization's pool when ``org_id`` is given, else the user's."""
    if org_id is not None:
        return _sub.c.organization_id == org_id
    if user_id is None:  # ``user_id == None`` would be ``IS NULL``: every organization's pool
        raise ValueError("an account is named by user_id or org_id")
    return _sub.c.user_id == user_id


def _no_account(user_id: int | None, org_id: int | None) -> AccountNotFound:
    if org_id is not None:
        return AccountNotFound(f"organization {org_id} has no credit account")
    return AccountNotFound(f"user {user_id} has no credit account")


async def _lock_account(session: AsyncSession, *, user_id: int | None, org_id: int | None = None) -> UserSubscription:
    sub = (
        await session.execute(
            select(UserSubscription)
            .where(_owned_by(user_id, org_id))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if sub is None:
        raise _no_account(user_id, org_id)
    return sub


async def tier_by_name(session: AsyncSession, name: str) -> SubscriptionTier:
    tier = (await session.execute(select(SubscriptionTier).where(SubscriptionTier.name == name))).scalar_one_or_none()
    if tier is None:
        raise TierNotFound(f"tier {name!r} is not in the catalog")
    return tier


async def tier_by_id(session: AsyncSession, tier_id: int, *, active_only: bool = False) -> SubscriptionTier:
    tier = await session.get(SubscriptionTier, tier_id)
    if tier is None or (active_only and not tier.is_active):
        raise TierNotFound(f"tier {tier_id} does not exist")
    return tier


# --- accounts and periods -------------------------------------------------------------


async def open_account(session: AsyncSession, *, user_id: int, now: datetime) -> UserSubscription:
    """Put a new user on the Free tier with its monthly credits (one grant row)."""
    return await _open(session, user_id=user_id, org_id=None, now=now)


async def _open(session: AsyncSession, *, user_id: int | None, org_id: int | None, now: datetime) -> UserSubscription:
    """Open a Free account for a user or an organization, with its opening grant."""
    tier = await tier_by_name(session, FREE_TIER)
    sub = UserSubscription(
        user_id=user_id,
        organization_id=org_id,
        tier_id=tier.id,
        credits_remaining=tier.monthly_credits,
        purchased_credits_remaining=0,
        credits_used_this_month=0,
        total_credits_used=0,
        billing_anchor=now,
        current_period_start=now,
        current_period_end=add_months(now, 1),
        payment_status=PaymentStatus.ACTIVE,
        cancel_at_period_end=False,
        created_at=now,
        updated_at=now,
    )
    session.add(sub)
    await session.flush()
    await _append_ledger(
        session,
        subscription_id=sub.id,
        user_id=user_id,
        kind=LedgerKind.MONTHLY_GRANT,
        monthly_delta=tier.monthly_credits,
        purchased_delta=0,
        balance_after=Balance(tier.monthly_credits, 0),
        key=f"s{sub.id}:grant:{now.isoformat()}",
        now=now,
        reason=f"{tier.display_name} tier: opening grant",
        details={"tier_id": tier.id},  # what analytics reads: names may change, ids do not
    )
    return sub


async def _start_period(
    session: AsyncSession,
    sub: UserSubscription,
    *,
    tier: SubscriptionTier,
    start: datetime,
    end: datetime,
    anchor: datetime,
    now: datetime,
    expiry_kind: LedgerKind,
    reason: str,
    grant_key: str | None = None,
) -> None:
    """Expire the monthly credits left and grant ``tier``'s credits for a new period.

    ``sub`` must be locked by the caller. Purchased credits are never touched.
    ``grant_key``: the grant's ledger key, when the caller must find the grant again.
    """
    # A reset's keys name its period, so a second reset of the same period is refused;
    # a tier change is an event of its own (two may happen in one instant).
    unique = f":{new_key()}" if expiry_kind == LedgerKind.TIER_CHANGE else ""
    expired = sub.credits_remaining
    purchased = sub.purchased_credits_remaining
    if expired:
        await _append_ledger(
            session,
            subscription_id=sub.id,
            user_id=sub.user_id,
            kind=expiry_kind,
            monthly_delta=-expired,
            purchased_delta=0,
            balance_after=Balance(0, purchased),
            key=f"s{sub.id}:{expiry_kind.value}:{sub.current_period_end.isoformat()}:{start.isoformat()}{unique}",
            now=now,
            reason=reason,
        )
    await _append_ledger(
        session,
        subscription_id=sub.id,
        user_id=sub.user_id,
        kind=LedgerKind.MONTHLY_GRANT,
        monthly_delta=tier.monthly_credits,
        purchased_delta=0,
        balance_after=Balance(tier.monthly_credits, purchased),
        key=grant_key or f"s{sub.id}:grant:{start.isoformat()}:{tier.id}{unique}",
        now=now,
        reason=f"{tier.display_name} tier: monthly credits",
        details={"tier_id": tier.id},  # what analytics reads: names may change, ids do not
    )
    sub.tier_id = tier.id
    sub.credits_remaining = tier.monthly_credits
    if expiry_kind != LedgerKind.TIER_CHANGE:
        # A plan change is not a new month: what was used this month stays counted.
        sub.credits_used_this_month = 0
    sub.billing_anchor = anchor
    sub.current_period_start = start
    sub.current_period_end = end
    sub.updated_at = now
    await session.flush()


async def apply_due_reset(
    session: AsyncSession, *, user_id: int | None, now: datetime, org_id: int | None = None
) -> bool:
    """Run the monthly reset if the period has ended; return whether one ran.

    Catches up over any number of missed months at once: the new period is the
    anniversary period that contains ``now``. A scheduled downgrade or a
    cancellation takes effect here. Accounts paid through a payment provider
    (``stripe_subscription_id`` set) are skipped: the provider's paid invoice
    starts their next period (``start_paid_period``), unless they cancelled.
    """
    due = (
        await session.execute(
            select(UserSubscription.id).where(
                _owned_by(user_id, org_id), UserSubscription.current_period_end <= now, _lazily_reset
            )
        )
    ).first()
    if due is None:
        return False
    sub = await _lock_account(session, user_id=user_id, org_id=org_id)
    if sub.current_period_end > now:  # another transaction reset it while we waited for the lock
        return False
    if sub.stripe_subscription_id is not None and not sub.cancel_at_period_end:
        return False  # became provider-paid while we waited for the lock
    next_tier_id = sub.scheduled_tier_id or sub.tier_id
    if sub.cancel_at_period_end:
        next_tier_id = (await tier_by_name(session, FREE_TIER)).id
    tier = await tier_by_id(session, next_tier_id)
    start, end = period_containing(sub.billing_anchor, now)
    await _start_period(
        session,
        sub,
        tier=tier,
        start=start,
        end=end,
        anchor=sub.billing_anchor,
        now=now,
        expiry_kind=LedgerKind.EXPIRY,
        reason="unused monthly credits expire at the end of the period",
    )
    if sub.cancel_at_period_end:
        sub.cancel_at_period_end = False
        sub.stripe_subscription_id = None
    sub.scheduled_tier_id = None
    await session.flush()
    return True


async def due_account_user_ids(session: AsyncSession, *, now: datetime, limit: int = 500) -> list[int]:
    """Users whose period has ended (for the ``reset-due`` cron job)."""
    rows = await session.execute(
        select(_sub.c.user_id)
        .where(_sub.c.user_id.is_not(None), UserSubscription.current_period_end <= now, _lazily_reset)
        .order_by(UserSubscription.current_period_end)
        .limit(limit)
    )
    return [int(r) for r in rows.scalars()]


async def due_account_org_ids(session: AsyncSession, *, now: datetime, limit: int = 500) -> list[int]:
    """Organizations whose period has ended (the ``reset-due`` job passes each as ``org_id``)."""
    rows = await session.execute(
        select(_sub.c.organization_id)
        .where(_sub.c.organization_id.is_not(None), UserSubscription.current_period_end <= now, _lazily_reset)
        .order_by(UserSubscription.current_period_end)
        .limit(limit)
    )
    return [int(r) for r in rows.scalars()]


async def get_account(
    session: AsyncSession, *, user_id: int | None, now: datetime, org_id: int | None = None
) -> UserSubscription:
    """The user's account (or the organization's pool with ``org_id``), reset first if its period is over."""
    await apply_due_reset(session, user_id=user_id, now=now, org_id=org_id)
    sub = (
        await session.execute(
            select(UserSubscription)
            .where(_owned_by(user_id, org_id))
            .options(selectinload(UserSubscription.tier), selectinload(UserSubscription.scheduled_tier))
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if sub is None:
        raise _no_account(user_id, org_id)
    return sub


# --- charges and refunds --------------------------------------------------------------


def _scoped(user_id: int, kind: str, key: str | None) -> str:
    return f"u{user_id}:{kind}:{key}" if key else f"u{user_id}:{kind}:{new_key()}"


async def _replay_charge(session: AsyncSession, key: str) -> ChargeResult | None:
    row = await _ledger_by_key(session, key)
    if row is None:
        return None
    return ChargeResult(
        usage_log_id=int(row.usage_log_id or 0),
        ledger_id=row.id,
        credits_used=-row.delta,
        balance=Balance(row.monthly_balance_after, row.purchased_balance_after),
        replayed=True,
    )


async def charge(
    session: AsyncSession,
    *,
    user_id: int,
    amount: int,
    action_type: ActionType | str,
    now: datetime,
    tool_name: str | None = None,
    conversation_id: int | None = None,
    idempotency_key: str | None = None,
    org_id: int | None = None,
) -> ChargeResult:
    """Spend ``amount`` credits (monthly first, then purchased) and log the action.

    Raises ``InsufficientCredits`` and changes nothing when the balance is short.
    With an ``idempotency_key`` a retry returns the first charge's result.
    With ``org_id`` the organization's pool pays and ``user_id`` is the member who
    acts: ``OrganizationNotFound`` if they are not a member, ``MemberCapReached``
    if the charge would pass their monthly cap, however full the pool.
    """
    if amount <= 0:
        raise InvalidAmount("a charge must be at least one credit")
    key = _scoped(user_id, "charge", idempotency_key)
    if idempotency_key:
        replay = await _replay_charge(session, key)
        if replay is not None:
            return replay
        try:
            async with session.begin_nested():
                return await _charge(
                    session, user_id, amount, str(action_type), now, tool_name, conversation_id, key, org_id
                )
        except UNIQUE_VIOLATIONS:
            replay = await _replay_charge(session, key)
            if replay is None:
                raise
            return replay
    return await _charge(session, user_id, amount, str(action_type), now, tool_name, conversation_id, key, org_id)


async def _charge(
    session: AsyncSession,
    user_id: int,
    amount: int,
    action_type: str,
    now: datetime,
    tool_name: str | None,
    conversation_id: int | None,
    key: str,
    org_id: int | None = None,
) -> ChargeResult:
    # Lock the row (PostgreSQL; SQLite writers are serialised already)
    # to learn how the charge splits between the monthly and purchased balances.
    locked = (
        select(
            _sub.c.id,
            _sub.c.credits_remaining,
            _sub.c.purchased_credits_remaining,
            _sub.c.current_period_end,
            _sub.c.current_period_start,
            _sub.c.tier_id,
        )
        .where(_owned_by(user_id, org_id))
        .with_for_update()
    )
    row = (await session.execute(locked)).first()
    if row is None:
        raise _no_account(user_id, org_id)
    if row.current_period_end <= now and await apply_due_reset(session, user_id=user_id, now=now, org_id=org_id):
        row = (await session.execute(locked)).one()
    sub_id, monthly, purchased = int(row.id), int(row.credits_remaining), int(row.purchased_credits_remaining)
    if org_id is not None:
        # The pool's row lock (taken above) serialises every charge of the organization,
        # so the member's counter is read and written by one charge at a time.
        await _spend_member_cap(
            session, org_id=org_id, user_id=user_id, amount=amount, period_start=row.current_period_start
        )
    if monthly + purchased < amount:
        raise InsufficientCredits(balance=monthly + purchased, required=amount, tier_id=int(row.tier_id))
    from_monthly = min(monthly, amount)
    # Still one conditional UPDATE computed by the database: it can never take a
    # balance below zero even if the lock above were missing.
    updated = await session.execute(
        update(_sub)
        .where(
            _sub.c.id == sub_id,
            _sub.c.credits_remaining >= from_monthly,
            _sub.c.purchased_credits_remaining >= amount - from_monthly,
        )
        .values(
            credits_remaining=_sub.c.credits_remaining - from_monthly,
            purchased_credits_remaining=_sub.c.purchased_credits_remaining - (amount - from_monthly),
            credits_used_this_month=_sub.c.credits_used_this_month + amount,
            total_credits_used=_sub.c.total_credits_used + amount,
            updated_at=now,
        )
        .returning(_sub.c.credits_remaining, _sub.c.purchased_credits_remaining)
    )
    after = updated.first()
    if after is None:  # pragma: no cover - only reachable if the row lock is bypassed
        raise InsufficientCredits(balance=monthly + purchased, required=amount, tier_id=int(row.tier_id))
    balance = Balance(int(after[0]), int(after[1]))
    usage_id = (
        await session.execute(
            insert(_usage)
            .values(
                user_id=user_id,
                organization_id=org_id,
                conversation_id=conversation_id,
                action_type=action_type,
                tool_name=tool_name,
                credits_used=amount,
                success=True,
                created_at=now,
            )
            .returning(_usage.c.id)
        )
    ).scalar_one()
    ledger_id = await _append_ledger(
        session,
        subscription_id=sub_id,
        user_id=user_id,
        kind=LedgerKind.CHARGE,
        monthly_delta=-from_monthly,
        purchased_delta=-(amount - from_monthly),
        balance_after=balance,
        key=key,
        now=now,
        usage_log_id=int(usage_id),
    )
    return ChargeResult(usage_log_id=int(usage_id), ledger_id=ledger_id, credits_used=amount, balance=balance)


async def refund(
    session: AsyncSession, *, usage_log_id: int, now: datetime, error_message: str | None = None
) -> LedgerResult:
    """Give back the credits of a charge whose action failed on our side, once.

    The credits go back to the balances they came from, and the usage log is
    marked ``success = false`` with the error.
    """
    key = f"refund:usage:{usage_log_id}"
    if (replay := await _replay_ledger(session, key)) is not None:
        return replay
    charge_row = (
        await session.execute(
            select(CreditLedger).where(
                CreditLedger.usage_log_id == usage_log_id, CreditLedger.kind == LedgerKind.CHARGE.value
            )
        )
    ).scalar_one_or_none()
    if charge_row is None:
        raise ChargeNotFound(f"no charge for usage log {usage_log_id}")
    usage = await session.get(UsageLog, usage_log_id)
    assert usage is not None
    sub = await _lock_account(session, user_id=usage.user_id, org_id=usage.organization_id)
    if usage.organization_id is not None:
        await _return_member_cap(
            session,
            org_id=usage.organization_id,
            user_id=usage.user_id,
            amount=-charge_row.delta,
            period_start=sub.current_period_start,
        )
    back_monthly, back_purchased = -charge_row.monthly_delta, -charge_row.purchased_delta
    amount = back_monthly + back_purchased
    sub.credits_remaining += back_monthly
    sub.purchased_credits_remaining += back_purchased
    sub.credits_used_this_month = max(sub.credits_used_this_month - amount, 0)
    sub.total_credits_used = max(sub.total_credits_used - amount, 0)
    sub.updated_at = now
    usage.success = False
    usage.error_message = error_message
    await session.flush()
    balance = Balance(sub.credits_remaining, sub.purchased_credits_remaining)
    ledger_id = await _append_ledger(
        session,
        subscription_id=sub.id,
        user_id=usage.user_id,
        kind=LedgerKind.REFUND,
        monthly_delta=back_monthly,
        purchased_delta=back_purchased,
        balance_after=balance,
        key=key,
        now=now,
        usage_log_id=usage_log_id,
        reason=error_message or "action failed",
    )
    return LedgerResult(ledger_id, balance)


async def mark_failed(session: AsyncSession, *, usage_log_id: int, error_message: str) -> None:
    """Record that a charged action failed without giving the credits back."""
    await session.execute(
        update(_usage).where(_usage.c.id == usage_log_id).values(success=False, error_message=error_message)
    )


# --- purchases ------------------------------------------------------------------------


async def create_purchase(
    session: AsyncSession,
    *,
    user_id: int,
    credits_amount: int,
    price_paid: Any,
    now: datetime,
    stripe_checkout_session_id: str | None = None,
    stripe_payment_intent_id: str | None = None,
    org_id: int | None = None,
    request_key: str | None = None,
) -> CreditPurchase:
    """Record a pending pack purchase; credits come with ``grant_purchase``.

    With ``org_id`` the pack fills the organization's pool; ``user_id`` is the buyer.
    ``request_key`` (``request_key(...)``) names the buyer's request, so a retry of it
    finds this purchase (``purchase_for_request``) instead of making a second one.
    """
    purchase = CreditPurchase(
        user_id=user_id,
        organization_id=org_id,
        credits_amount=credits_amount,
        price_paid=price_paid,
        payment_status=PurchaseStatus.PENDING,
        stripe_checkout_session_id=stripe_checkout_session_id,
        stripe_payment_intent_id=stripe_payment_intent_id,
        clawback_shortfall=0,
        created_at=now,
        request_key=request_key,
    )
    session.add(purchase)
    await session.flush()
    return purchase


def request_key(user_id: int, idempotency_key: str | None, *, org_id: int | None = None) -> str | None:
    """The name of a user's request made with an ``Idempotency-Key`` (None without one)."""
    if not idempotency_key:
        return None
    return f"u{user_id}:o{org_id}:{idempotency_key}" if org_id is not None else f"u{user_id}:{idempotency_key}"


async def purchase_for_request(session: AsyncSession, key: str | None, *, now: datetime) -> CreditPurchase | None:
    """The purchase an earlier attempt of this request made (it may have committed before a crash).

    A key names one request for ``REQUEST_WINDOW``; an older purchase gives its key up.
    """
    if key is None:
        return None
    found = (
        await session.execute(select(CreditPurchase).where(CreditPurchase.request_key == key))
    ).scalar_one_or_none()
    if found is None or found.created_at > now - REQUEST_WINDOW:
        return found
    found.request_key = None
    await session.flush()
    return None


async def _lock_purchase(session: AsyncSession, purchase_id: int) -> tuple[CreditPurchase, UserSubscription]:
    """The purchase and the account it pays into, both locked (re-read, not from the identity map)."""
    purchase = (
        await session.execute(
            select(CreditPurchase)
            .where(CreditPurchase.id == purchase_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if purchase is None:
        raise PurchaseNotFound(f"purchase {purchase_id} does not exist")
    return purchase, await _lock_account(session, user_id=purchase.user_id, org_id=purchase.organization_id)


async def grant_purchase(session: AsyncSession, *, purchase_id: int, now: datetime) -> LedgerResult:
    """Complete a pending purchase and add its credits to the purchased balance, once."""
    key = f"purchase:{purchase_id}"
    if (replay := await _replay_ledger(session, key)) is not None:
        return replay
    purchase, sub = await _lock_purchase(session, purchase_id)
    if purchase.payment_status != PurchaseStatus.PENDING:
        # Completed by a concurrent delivery that committed first (its ledger row is now visible).
        if (replay := await _replay_ledger(session, key)) is not None:
            return replay
        raise InvalidAmount(f"purchase {purchase_id} is {purchase.payment_status}, not pending")
    purchase.payment_status = PurchaseStatus.COMPLETED
    purchase.completed_at = now
    sub.purchased_credits_remaining += purchase.credits_amount
    sub.updated_at = now
    await session.flush()
    balance = Balance(sub.credits_remaining, sub.purchased_credits_remaining)
    ledger_id = await _append_ledger(
        session,
        subscription_id=sub.id,
        user_id=purchase.user_id,
        kind=LedgerKind.PURCHASE,
        monthly_delta=0,
        purchased_delta=purchase.credits_amount,
        balance_after=balance,
        key=key,
        now=now,
        purchase_id=purchase.id,
        reason=f"{purchase.credits_amount} credit pack",
    )
    return LedgerResult(ledger_id, balance)


async def claw_back_purchase(session: AsyncSession, *, purchase_id: int, now: datetime, reason: str) -> LedgerResult:
    """Take a refunded or disputed pack's credits back from the purchased balance, once.

    Never below zero: what is already spent is recorded as the purchase's shortfall.
    """
    key = f"clawback:{purchase_id}"
    if (replay := await _replay_ledger(session, key)) is not None:
        return replay
    purchase, sub = await _lock_purchase(session, purchase_id)
    if purchase.payment_status != PurchaseStatus.COMPLETED:
        raise InvalidAmount(f"purchase {purchase_id} is {purchase.payment_status}; only completed ones are clawed back")
    taken = min(purchase.credits_amount, sub.purchased_credits_remaining)
    purchase.payment_status = PurchaseStatus.REFUNDED
    purchase.clawback_shortfall = purchase.credits_amount - taken
    sub.purchased_credits_remaining -= taken
    sub.updated_at = now
    await session.flush()
    balance = Balance(sub.credits_remaining, sub.purchased_credits_remaining)
    ledger_id = await _append_ledger(
        session,
        subscription_id=sub.id,
        user_id=purchase.user_id,
        kind=LedgerKind.CLAWBACK,
        monthly_delta=0,
        purchased_delta=-taken,
        balance_after=balance,
        key=key,
        now=now,
        purchase_id=purchase.id,
        reason=reason,
        details={"shortfall": purchase.clawback_shortfall},
    )
    return LedgerResult(ledger_id, balance)


# --- tiers ----------------------------------------------------------------------------


def is_upgrade(current: SubscriptionTier, target: SubscriptionTier) -> bool:
    """A dearer tier (or, at the same price, more credits) is an upgrade."""
    return (target.monthly_price, target.monthly_credits) > (current.monthly_price, current.monthly_credits)


@dataclass(frozen=True)
class TierChange:
    effective: str  # "now" or "period_end"
    message: str


async def change_tier(
    session: AsyncSession,
    *,
    user_id: int | None,
    tier_id: int,
    now: datetime,
    org_id: int | None = None,
    request_key: str | None = None,
) -> TierChange:
    """Upgrade at once (new period, new tier's credits, purchased kept) or schedule a downgrade.

    With ``org_id`` the organization's plan changes (``user_id`` is who asked). With a
    ``request_key`` (``request_key(...)``) an upgrade's grant is keyed by it, so a retry
    of a request whose upgrade already committed answers it again instead of acting.
    """
    await apply_due_reset(session, user_id=user_id, now=now, org_id=org_id)
    target = await tier_by_id(session, tier_id, active_only=True)
    sub = await _lock_account(session, user_id=user_id, org_id=org_id)
    grant_key = None
    if request_key is not None:
        earlier = await _ledger_by_key(session, _upgrade_key(sub.id, request_key))
        if earlier is not None and earlier.created_at > now - REQUEST_WINDOW:
            return _upgraded(target)  # this request's upgrade committed already
        grant_key = _upgrade_key(sub.id, request_key) if earlier is None else None
    current = await tier_by_id(session, sub.tier_id)
    if target.id == current.id:
        if sub.scheduled_tier_id is None and not sub.cancel_at_period_end:
            raise AlreadyOnTier(f"you are already on the {target.display_name} tier")
        sub.scheduled_tier_id = None
        sub.cancel_at_period_end = False
        sub.updated_at = now
        await session.flush()
        return TierChange("now", f"You stay on {target.display_name}; the scheduled change is cancelled.")
    if not is_upgrade(current, target):
        sub.scheduled_tier_id = target.id
        sub.cancel_at_period_end = False
        sub.updated_at = now
        await session.flush()
        return TierChange(
            "period_end",
            f"You move to {target.display_name} on {sub.current_period_end.date().isoformat()}, "
            f"when this period ends; until then you keep {current.display_name}.",
        )
    await _start_period(
        session,
        sub,
        tier=target,
        start=now,
        end=add_months(now, 1),
        anchor=now,
        now=now,
        expiry_kind=LedgerKind.TIER_CHANGE,
        reason=f"upgrade from {current.display_name} to {target.display_name}",
        grant_key=grant_key,
    )
    sub.scheduled_tier_id = None
    sub.cancel_at_period_end = False
    sub.payment_status = PaymentStatus.ACTIVE
    await session.flush()
    return _upgraded(target)


def _upgrade_key(subscription_id: int, request_key: str) -> str:
    # Hashed: a request key may be longer than a ledger key has room for.
    return f"s{subscription_id}:grant:request:{hashlib.sha256(request_key.encode()).hexdigest()}"


def _upgraded(target: SubscriptionTier) -> TierChange:
    return TierChange("now", f"Upgraded to {target.display_name}: {target.monthly_credits} credits this period.")


async def cancel(session: AsyncSession, *, user_id: int | None, now: datetime, org_id: int | None = None) -> TierChange:
    """Go back to Free when the period ends; credits stay usable until then (``org_id``: the organization's plan)."""
    await apply_due_reset(session, user_id=user_id, now=now, org_id=org_id)
    sub = await _lock_account(session, user_id=user_id, org_id=org_id)
    free = await tier_by_name(session, FREE_TIER)
    if sub.tier_id == free.id:
        raise AlreadyOnTier("you are on the Free tier already; there is nothing to cancel")
    sub.cancel_at_period_end = True
    sub.scheduled_tier_id = free.id
    sub.updated_at = now
    await session.flush()
    return TierChange(
        "period_end", f"Your plan ends on {sub.current_period_end.date().isoformat()}; then you move to Free."
    )


# --- plans paid through a payment provider (Stripe) ----------------------------------


async def start_paid_period(
    session: AsyncSession,
    *,
    user_id: int | None,
    tier_id: int,
    start: datetime,
    end: datetime,
    now: datetime,
    subscription_ref: str | None,
    activate: bool = True,
    org_id: int | None = None,
) -> bool:
    """Start the period a provider's paid invoice covers, with the tier's credits; once, only forward.

    Applies when the period starts after the current one, or is still running and
    changes the tier (an upgrade paid before a late webhook). A period already over,
    or the current one again, changes nothing but the payment status: a paid invoice
    leaves the account ``active`` (unless ``activate`` is false: the caller knows of a
    newer failed payment). Returns whether a period started. ``org_id``: an organization's pool.
    """
    sub = await _lock_account(session, user_id=user_id, org_id=org_id)
    tier = await tier_by_id(session, tier_id)
    if activate:
        sub.payment_status = PaymentStatus.ACTIVE
    if subscription_ref is not None:
        sub.stripe_subscription_id = subscription_ref
    sub.updated_at = now
    forward = start > sub.current_period_start or (end > now and tier.id != sub.tier_id)
    already = await _ledger_by_key(session, f"s{sub.id}:grant:{start.isoformat()}:{tier.id}")
    if not forward or already is not None or end <= start:
        await session.flush()
        return False
    current = await tier_by_id(session, sub.tier_id)
    await _start_period(
        session,
        sub,
        tier=tier,
        start=start,
        end=end,
        anchor=start,
        now=now,
        expiry_kind=LedgerKind.EXPIRY if tier.id == current.id else LedgerKind.TIER_CHANGE,
        reason=(
            "unused monthly credits expire: a new paid period starts"
            if tier.id == current.id
            else f"paid change from {current.display_name} to {tier.display_name}"
        ),
    )
    sub.scheduled_tier_id = None  # the scheduled change has arrived, or the provider billed otherwise
    await session.flush()
    return True


async def end_paid_plan(
    session: AsyncSession, *, user_id: int | None, subscription_ref: str, now: datetime, org_id: int | None = None
) -> bool:
    """The provider ended the subscription: move to Free now (purchased credits kept); once.

    Does nothing when the account is paid by another subscription (an old one ended)
    or is on Free already. Returns whether the tier changed. ``org_id``: an organization's pool.
    """
    sub = await _lock_account(session, user_id=user_id, org_id=org_id)
    if sub.stripe_subscription_id not in (None, subscription_ref):
        return False
    free = await tier_by_name(session, FREE_TIER)
    sub.stripe_subscription_id = None
    sub.cancel_at_period_end = False
    sub.scheduled_tier_id = None
    sub.payment_status = PaymentStatus.CANCELLED
    sub.updated_at = now
    if sub.tier_id == free.id:
        await session.flush()
        return False
    current = await tier_by_id(session, sub.tier_id)
    await _start_period(
        session,
        sub,
        tier=free,
        start=now,
        end=add_months(now, 1),
        anchor=now,
        now=now,
        expiry_kind=LedgerKind.TIER_CHANGE,
        reason=f"{current.display_name} subscription ended: back to {free.display_name}",
    )
    return True


async def set_payment_status(
    session: AsyncSession, *, user_id: int | None, status: PaymentStatus, now: datetime, org_id: int | None = None
) -> None:
    """Record the provider's view of the plan's payments (``past_due`` after a failed renewal)."""
    sub = await _lock_account(session, user_id=user_id, org_id=org_id)
    sub.payment_status = status
    sub.updated_at = now
    await session.flush()


# --- admin ----------------------------------------------------------------------------


async def adjust(
    session: AsyncSession,
    *,
    user_id: int,
    amount: int,
    reason: str,
    admin_id: int | None,
    now: datetime,
    idempotency_key: str | None = None,
    org_id: int | None = None,
) -> LedgerResult:
    """An admin's manual change: credits given go to the purchased (never expiring) balance;

    credits taken come from the monthly allowance first; never below zero. With
    ``org_id`` the organization's pool changes (``user_id`` is recorded on the row).
    """
    if amount == 0:
        raise InvalidAmount("an adjustment must change the balance")
    if not reason.strip():
        raise InvalidAmount("an adjustment needs a reason")
    key = _scoped(user_id, "adjust", idempotency_key)
    if (replay := await _replay_ledger(session, key)) is not None:
        return replay
    await apply_due_reset(session, user_id=user_id, now=now, org_id=org_id)
    sub = await _lock_account(session, user_id=user_id, org_id=org_id)
    if amount > 0:
        monthly_delta, purchased_delta = 0, amount
    else:
        take = -amount
        if take > sub.balance:
            raise InsufficientCredits(balance=sub.balance, required=take, tier_id=sub.tier_id)
        from_monthly = min(sub.credits_remaining, take)
        monthly_delta, purchased_delta = -from_monthly, -(take - from_monthly)
    sub.credits_remaining += monthly_delta
    sub.purchased_credits_remaining += purchased_delta
    sub.updated_at = now
    await session.flush()
    balance = Balance(sub.credits_remaining, sub.purchased_credits_remaining)
    ledger_id = await _append_ledger(
        session,
        subscription_id=sub.id,
        user_id=user_id,
        kind=LedgerKind.ADJUSTMENT,
        monthly_delta=monthly_delta,
        purchased_delta=purchased_delta,
        balance_after=balance,
        key=key,
        now=now,
        admin_id=admin_id,
        reason=reason.strip(),
    )
    return LedgerResult(ledger_id, balance)


async def ledger_sums(session: AsyncSession, *, subscription_id: int) -> Balance:
    """The balances the ledger says an account should have (for audits and tests)."""
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(CreditLedger.monthly_delta), 0),
                func.coalesce(func.sum(CreditLedger.purchased_delta), 0),
            ).where(CreditLedger.subscription_id == subscription_id)
        )
    ).one()
    return Balance(int(row[0]), int(row[1]))


# --- organization pools (teams) -------------------------------------------------------


async def open_org_account(session: AsyncSession, *, org_id: int, now: datetime) -> UserSubscription:
    """Open an organization's pool on the Free tier with its monthly credits (one grant row).

    The organization then upgrades, buys packs and resets like a user's account,
    through the same functions called with ``org_id``.
    """
    return await _open(session, user_id=None, org_id=org_id, now=now)


async def _spend_member_cap(
    session: AsyncSession, *, org_id: int, user_id: int, amount: int, period_start: datetime
) -> None:
    """Count ``amount`` against the member's cap for the pool's period, or refuse the charge.

    The caller holds the pool's row lock. A counter from an earlier period counts as
    zero: caps reset with the organization's period.
    """
    row = (
        await session.execute(
            select(
                _members.c.id,
                _members.c.monthly_cap,
                _members.c.credits_used,
                _members.c.usage_period_start,
                _orgs.c.default_member_cap,
            )
            .join(_orgs, _orgs.c.id == _members.c.organization_id)
            .where(_members.c.organization_id == org_id, _members.c.user_id == user_id)
        )
    ).first()
    if row is None:
        raise OrganizationNotFound(f"organization {org_id} not found")
    used = int(row.credits_used) if row.usage_period_start == period_start else 0
    cap = row.monthly_cap if row.monthly_cap is not None else row.default_member_cap
    if cap is not None and used + amount > cap:
        raise MemberCapReached(cap=int(cap), used=used, required=amount)
    await session.execute(
        update(_members)
        .where(_members.c.id == row.id)
        .values(credits_used=used + amount, usage_period_start=period_start)
    )


async def _return_member_cap(
    session: AsyncSession, *, org_id: int, user_id: int, amount: int, period_start: datetime
) -> None:
    """Give a refunded charge back to the member's cap, if it was counted in this period."""
    await session.execute(
        update(_members)
        .where(
            _members.c.organization_id == org_id,
            _members.c.user_id == user_id,
            _members.c.usage_period_start == period_start,
        )
        .values(credits_used=case((_members.c.credits_used >= amount, _members.c.credits_used - amount), else_=0))
    )
