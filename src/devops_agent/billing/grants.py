"""Credit grants: where every credit on an account comes from, and the order they are spent in.

An account's credits are the sum of its grants (``CreditGrant``): the plan's monthly
grant, paid grants (packs) and promotional grants. The account row keeps one sum per
category (``credits_remaining``, ``purchased_credits_remaining``,
``promotional_credits_remaining``) for the hot path; every function here moves a
grant and its category's sum together, with one ledger row per grant moved.

Rules:

* **Draw-down order** (``draw_key``): lowest priority number first, then the soonest
  expiry (never-expiring last), then promotional before plan before paid, then the
  oldest. With the default priorities this spends the plan's monthly credits before
  packs, as before grants.
* A grant gives up what is left of it when it expires (``expire_due``: an ``expiry``
  ledger row), lazily when the account is read or charged and in ``reset-due``; the
  plan's grant of an account paid through a payment provider waits for the provider's
  paid invoice instead (``plans.start_paid_period``), as the monthly reset does.
* Credits taken from grants and given back (a refund) return to the grants they came
  from; the share of a grant that has expired since comes back as a fresh grant with
  the original dates, already expired, and is expired at once: it is not revived.
* Every function takes the account row locked by the caller (``accounts.lock_account``)
  or locks it itself; grants are only ever changed under their account's lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypedDict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .ledger import Balance, append_ledger, split_key
from .models import CreditGrant, GrantCategory, LedgerKind, UserSubscription

DEFAULT_PRIORITY = 50
_RANK = {GrantCategory.PROMOTIONAL.value: 0, GrantCategory.PLAN.value: 1, GrantCategory.PAID.value: 2}
_NEVER = datetime.max


@dataclass(frozen=True)
class Slot:
    """What the draw-down needs to know of a grant (built from an ORM grant or a row of the charge's read)."""

    id: int
    category: str
    remaining: int
    priority: int
    effective_at: datetime
    expires_at: datetime | None


def draw_key(slot: Slot | CreditGrant) -> tuple[Any, ...]:
    """The draw-down order: priority, soonest expiry, promotional before plan before paid, oldest."""
    expiry = slot.expires_at.replace(tzinfo=None) if slot.expires_at is not None else _NEVER
    return (slot.priority, expiry, _RANK[slot.category], slot.effective_at, slot.id)


def plan_draw(slots: Iterable[Slot | CreditGrant], amount: int) -> list[tuple[Any, int]]:
    """The grants ``amount`` credits come from, and how many from each (short if the account is).

    A grant is spendable from the moment it is written: ``effective_at`` orders grants
    (and dates a plan's period, which a payment provider may start a moment ahead of
    our clock), it does not hold credits back.
    """
    taken: list[tuple[Any, int]] = []
    left = amount
    for slot in sorted((s for s in slots if s.remaining > 0), key=draw_key):
        if left == 0:
            break
        take = min(slot.remaining, left)
        taken.append((slot, take))
        left -= take
    return taken


def is_due(slot: Slot | CreditGrant, now: datetime) -> bool:
    """Whether a grant has credits left past its expiry."""
    return slot.remaining > 0 and slot.expires_at is not None and slot.expires_at <= now


def moved(balance: Balance, category: str, delta: int) -> Balance:
    """``balance`` after ``delta`` credits of ``category`` moved."""
    if category == GrantCategory.PLAN:
        return Balance(balance.monthly + delta, balance.purchased, balance.promotional)
    if category == GrantCategory.PAID:
        return Balance(balance.monthly, balance.purchased + delta, balance.promotional)
    return Balance(balance.monthly, balance.purchased, balance.promotional + delta)


class Deltas(TypedDict):
    monthly_delta: int
    purchased_delta: int
    promotional_delta: int


def deltas(category: str, delta: int) -> Deltas:
    """The ledger row's three delta columns for ``delta`` credits of ``category``."""
    return {
        "monthly_delta": delta if category == GrantCategory.PLAN else 0,
        "purchased_delta": delta if category == GrantCategory.PAID else 0,
        "promotional_delta": delta if category == GrantCategory.PROMOTIONAL else 0,
    }


def _set_balance(sub: UserSubscription, balance: Balance, now: datetime) -> None:
    sub.credits_remaining = balance.monthly
    sub.purchased_credits_remaining = balance.purchased
    sub.promotional_credits_remaining = balance.promotional
    sub.updated_at = now


async def add_grant(
    session: AsyncSession,
    sub: UserSubscription,
    *,
    category: GrantCategory,
    credits: int,
    now: datetime,
    kind: LedgerKind,
    key: str,
    source: str,
    user_id: int | None,
    reason: str | None = None,
    effective_at: datetime | None = None,
    expires_at: datetime | None = None,
    priority: int = DEFAULT_PRIORITY,
    price: Decimal | int = 0,
    tier_id: int | None = None,
    purchase_id: int | None = None,
    admin_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> tuple[CreditGrant, int]:
    """Give ``sub`` (locked by the caller) a grant of ``credits``; return it and its ledger row's id."""
    grant = CreditGrant(
        subscription_id=sub.id,
        category=category.value,
        credits=credits,
        remaining=0,  # its credits arrive with its ledger row (``move``)
        priority=priority,
        effective_at=effective_at or now,
        expires_at=expires_at,
        price=Decimal(price),
        source=source,
        reason=reason,
        tier_id=tier_id,
        purchase_id=purchase_id,
        admin_id=admin_id,
        created_at=now,
    )
    session.add(grant)
    await session.flush()
    ledger_id, _ = await move(
        session,
        sub,
        [(grant, credits)],
        kind=kind,
        key=key,
        now=now,
        user_id=user_id,
        purchase_id=purchase_id,
        admin_id=admin_id,
        reason=reason,
        details=details,
        always=True,
    )
    assert ledger_id is not None
    return grant, ledger_id


async def move(
    session: AsyncSession,
    sub: UserSubscription,
    moves: Sequence[tuple[CreditGrant, int]],
    *,
    kind: LedgerKind,
    key: str,
    now: datetime,
    user_id: int | None,
    usage_log_id: int | None = None,
    purchase_id: int | None = None,
    admin_id: int | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    always: bool = False,
) -> tuple[int | None, Balance]:
    """Move credits of grants (negative: taken, positive: given), one ledger row per grant.

    ``sub`` is locked by the caller. The first row carries ``key``, the others
    ``split_key``. A move of 0 credits writes no row unless ``always`` (a new grant of 0
    credits, a tier's without monthly credits, is still on the books). Returns the first
    row's id (None if nothing moved) and the balances after.
    """
    balance = Balance.of(sub)
    first_id: int | None = None
    for n, (grant, delta) in enumerate(((g, d) for g, d in moves if d or always), start=1):
        grant.remaining += delta
        balance = moved(balance, grant.category, delta)
        _set_balance(sub, balance, now)
        await session.flush()
        row_id = await append_ledger(
            session,
            subscription_id=sub.id,
            user_id=user_id,
            kind=kind,
            **deltas(grant.category, delta),
            balance_after=balance,
            key=key if first_id is None else split_key(first_id, n),
            operation_id=first_id,
            now=now,
            grant_id=grant.id,
            usage_log_id=usage_log_id,
            purchase_id=purchase_id,
            admin_id=admin_id,
            reason=reason,
            details=details,
        )
        first_id = first_id if first_id is not None else row_id
    return first_id, balance


async def grants_of(session: AsyncSession, subscription_id: int, *, with_credits: bool = True) -> list[CreditGrant]:
    """The account's grants (those with credits left by default), in draw-down order, re-read."""
    query = select(CreditGrant).where(CreditGrant.subscription_id == subscription_id)
    if with_credits:
        query = query.where(CreditGrant.remaining > 0)
    rows = (await session.execute(query.execution_options(populate_existing=True))).scalars()
    return sorted(rows, key=draw_key)


def provider_renews(sub: UserSubscription) -> bool:
    """A plan paid through a payment provider, not cancelled: its paid invoice starts each period."""
    return sub.stripe_subscription_id is not None and not sub.cancel_at_period_end


def waits_for_provider(sub: UserSubscription, grant: CreditGrant | Slot) -> bool:
    """A plan grant of a provider-paid plan ends with the provider's paid invoice, not at its date."""
    return grant.category == GrantCategory.PLAN and provider_renews(sub)


async def expire_due(session: AsyncSession, sub: UserSubscription, *, now: datetime) -> int:
    """Expire what is left of ``sub``'s grants past their expiry (``sub`` locked); return the credits expired."""
    expired = 0
    for grant in await grants_of(session, sub.id):
        if not is_due(grant, now) or waits_for_provider(sub, grant):
            continue
        assert grant.expires_at is not None
        left = grant.remaining
        await move(
            session,
            sub,
            [(grant, -left)],
            kind=LedgerKind.EXPIRY,
            key=f"expiry:grant:{grant.id}",
            now=now,
            user_id=sub.user_id,
            reason=f"{left} {grant.category} credits expired on {grant.expires_at:%Y-%m-%d}",
        )
        expired += left
    return expired


async def give_back(
    session: AsyncSession,
    sub: UserSubscription,
    taken: Sequence[tuple[int | None, str, int]],
    *,
    kind: LedgerKind,
    key: str,
    now: datetime,
    user_id: int | None,
    usage_log_id: int | None = None,
    reason: str | None = None,
    taken_at: datetime | None = None,
) -> tuple[int | None, Balance]:
    """Return credits to the grants they were taken from: ``(grant_id, category, credits)`` each.

    A grant still in force gets them back. One that has expired since gets a fresh,
    already-expired grant with its dates, expired again at once (``expiry`` row), so the
    credits are on the books and not revived. Credits whose grant is unknown (taken
    before grants existed, at ``taken_at``) come back as a grant of their category that
    lasts as the category's credits did: the plan's for the account's period (expired
    at once if that period has ended, or if they were taken in an earlier one), others
    without expiry.
    """
    moves: list[tuple[CreditGrant, int]] = []
    lapsed: list[tuple[CreditGrant, int]] = []
    for grant_id, category, credits in taken:
        grant = await session.get(CreditGrant, grant_id, populate_existing=True) if grant_id is not None else None
        if grant is not None and (grant.expires_at is None or grant.expires_at > now or waits_for_provider(sub, grant)):
            moves.append((grant, credits))
            continue
        fresh = _fresh(sub, grant, category, credits, now=now, reason=reason)
        session.add(fresh)
        await session.flush()
        moves.append((fresh, credits))
        if grant is not None or _lapsed_unknown(sub, fresh, now=now, taken_at=taken_at):
            lapsed.append((fresh, -credits))
    first_id, balance = await move(
        session, sub, moves, kind=kind, key=key, now=now, user_id=user_id, usage_log_id=usage_log_id, reason=reason
    )
    for fresh, delta in lapsed:
        _, balance = await move(
            session,
            sub,
            [(fresh, delta)],
            kind=LedgerKind.EXPIRY,
            key=f"expiry:grant:{fresh.id}",
            now=now,
            user_id=user_id,
            reason="refunded credits of a grant that had expired",
        )
    return first_id, balance


def _fresh(
    sub: UserSubscription, grant: CreditGrant | None, category: str, credits: int, *, now: datetime, reason: str | None
) -> CreditGrant:
    """The grant refunded credits come back as when theirs has expired (``grant``) or is unknown (None)."""
    if grant is not None:
        effective_at, expires_at = grant.effective_at, grant.expires_at
    elif category == GrantCategory.PLAN:
        # The period's, as the monthly balance was; never ``now`` to an end already past.
        effective_at, expires_at = sub.current_period_start, sub.current_period_end
    else:
        effective_at, expires_at = now, None
    return CreditGrant(
        subscription_id=sub.id,
        category=category,
        credits=credits,
        remaining=0,
        priority=grant.priority if grant else DEFAULT_PRIORITY,
        effective_at=effective_at,
        expires_at=expires_at,
        price=(grant.cost_basis_per_credit * credits).quantize(Decimal("0.01")) if grant else Decimal(0),
        source=f"refund:grant:{grant.id}" if grant else "refund",
        reason=reason,
        tier_id=grant.tier_id if grant else None,
        created_at=now,
    )


def _lapsed_unknown(sub: UserSubscription, fresh: CreditGrant, *, now: datetime, taken_at: datetime | None) -> bool:
    """Whether plan credits taken before grants belong to a period that has ended."""
    if fresh.category != GrantCategory.PLAN or waits_for_provider(sub, fresh):
        return False
    assert fresh.expires_at is not None
    return fresh.expires_at <= now or (taken_at is not None and taken_at < fresh.effective_at)


def expiry_after(days: int | None, now: datetime) -> datetime | None:
    """The expiry of a grant that lasts ``days`` from ``now`` (None: never expires)."""
    return now + timedelta(days=days) if days else None
