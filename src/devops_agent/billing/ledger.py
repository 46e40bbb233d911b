"""The ledger: one append-only row per change of a balance, found again by its key.

Rules this module keeps for the whole engine:

* Every change of a grant's credits appends exactly one ``credit_ledger`` row
  (``append_ledger``) naming the grant, with the monthly, purchased and promotional
  deltas and the balances after; an operation that moves several grants (a charge
  spanning two) writes one row per grant, all in its transaction, the first under the
  operation's key and the others under ``split:<first row id>:<n>`` with
  ``operation_id`` naming the first. Rows are never
  updated or deleted, so for every account the balances equal the sums of the deltas
  (``ledger_sums``, read by audits and tests).
* Every row carries a unique idempotency key, scoped so that callers cannot collide:
  ``u<user>:<kind>:<key>`` for a user's named operation (``scoped_key``),
  ``refund:usage:<id>``, ``purchase:<id>`` and ``clawback:<id>`` for what happens once
  to a charge or a purchase, ``s<account>:...`` for a period's grant and expiry. A
  retried operation finds the first row (``replay_ledger``, ``replay_charge``) and
  returns its result instead of acting again; the unique index decides a race.
* A request made with an ``Idempotency-Key`` is named by ``request_key`` for
  ``REQUEST_WINDOW``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import CreditLedger, LedgerKind

# How long a request's Idempotency-Key names that one request (the web layer keeps its records as long).
REQUEST_WINDOW = timedelta(days=30)
_ledger = cast(Table, CreditLedger.__table__)
# Built once, run with each row's values (the ledger is written on every balance change).
_APPEND = insert(_ledger).returning(_ledger.c.id)


@dataclass(frozen=True)
class Balance:
    """An account's three balances: plan (monthly), paid (purchased) and promotional credits."""

    monthly: int
    purchased: int
    promotional: int = 0

    @property
    def total(self) -> int:
        return self.monthly + self.purchased + self.promotional

    @classmethod
    def of(cls, row: Any) -> Balance:
        """The balances of an account row (``UserSubscription`` or a row with its columns)."""
        return cls(
            int(row.credits_remaining), int(row.purchased_credits_remaining), int(row.promotional_credits_remaining)
        )

    @classmethod
    def after(cls, row: CreditLedger) -> Balance:
        """The balances a ledger row left."""
        return cls(row.monthly_balance_after, row.purchased_balance_after, row.promotional_balance_after)


@dataclass(frozen=True)
class ChargeResult:
    """What a charge did (``replayed``: a retry answered from the first charge's ledger row)."""

    usage_log_id: int
    ledger_id: int
    credits_used: int
    balance: Balance
    replayed: bool = False


@dataclass(frozen=True)
class LedgerResult:
    """What any other balance change did, and the balances after it."""

    ledger_id: int | None
    balance: Balance
    replayed: bool = False


def new_key() -> str:
    """A fresh idempotency key for operations the caller did not name."""
    return uuid.uuid4().hex


def request_key(user_id: int, idempotency_key: str | None, *, org_id: int | None = None) -> str | None:
    """The name of a user's request made with an ``Idempotency-Key`` (None without one)."""
    if not idempotency_key:
        return None
    return f"u{user_id}:o{org_id}:{idempotency_key}" if org_id is not None else f"u{user_id}:{idempotency_key}"


def scoped_key(user_id: int, kind: str, key: str | None) -> str:
    """The ledger key of a user's operation: the caller's key names it only within that user and kind."""
    return f"u{user_id}:{kind}:{key}" if key else f"u{user_id}:{kind}:{new_key()}"


async def append_ledger(
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
    promotional_delta: int = 0,
    grant_id: int | None = None,
    operation_id: int | None = None,
    usage_log_id: int | None = None,
    purchase_id: int | None = None,
    admin_id: int | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Append the one ledger row of a balance change; return its id (a reused ``key`` violates the unique index)."""
    row: dict[str, Any] = {
        "subscription_id": subscription_id,
        "user_id": user_id,
        "kind": kind.value,
        "monthly_delta": monthly_delta,
        "purchased_delta": purchased_delta,
        "promotional_delta": promotional_delta,
        "monthly_balance_after": balance_after.monthly,
        "purchased_balance_after": balance_after.purchased,
        "promotional_balance_after": balance_after.promotional,
        "grant_id": grant_id,
        "operation_id": operation_id,
        "usage_log_id": usage_log_id,
        "purchase_id": purchase_id,
        "admin_id": admin_id,
        "reason": reason,
        "idempotency_key": key,
        "created_at": now,
    }
    if details is not None:  # absent, not None: a bound None would be stored as JSON 'null', not SQL NULL
        row["details"] = details
    connection = await session.connection()  # a Core statement: no ORM execution hooks needed
    return int((await connection.execute(_APPEND, row)).scalar_one())


async def ledger_by_key(session: AsyncSession, key: str) -> CreditLedger | None:
    """The ledger row recorded under ``key``, if any."""
    return (await session.execute(select(CreditLedger).where(CreditLedger.idempotency_key == key))).scalar_one_or_none()


async def replay_ledger(session: AsyncSession, key: str) -> LedgerResult | None:
    """The result of the operation already recorded under ``key``, if there is one."""
    row = await ledger_by_key(session, key)
    if row is None:
        return None
    last = await _last_of_operation(session, row)
    return LedgerResult(row.id, Balance.after(last), replayed=True)


async def replay_charge(session: AsyncSession, key: str) -> ChargeResult | None:
    """The result of the charge already recorded under ``key``, if there is one."""
    row = await ledger_by_key(session, key)
    if row is None:
        return None
    rows = await operation_rows(session, row)
    return ChargeResult(
        usage_log_id=int(row.usage_log_id or 0),
        ledger_id=row.id,
        credits_used=-sum(r.delta for r in rows),
        balance=Balance.after(rows[-1]),
        replayed=True,
    )


def split_key(first_id: int, n: int) -> str:
    """The key of an operation's ``n``-th ledger row (n >= 2) when it moves several grants."""
    return f"split:{first_id}:{n}"


async def operation_rows(session: AsyncSession, first: CreditLedger) -> list[CreditLedger]:
    """The ledger rows of one operation, in order: its keyed row and the rows split from it."""
    split = (
        await session.execute(
            select(CreditLedger).where(CreditLedger.operation_id == first.id).order_by(CreditLedger.id)
        )
    ).scalars()
    return [first, *split]


async def _last_of_operation(session: AsyncSession, first: CreditLedger) -> CreditLedger:
    return (await operation_rows(session, first))[-1]


async def ledger_sums(session: AsyncSession, *, subscription_id: int) -> Balance:
    """The balances the ledger says an account should have (for audits and tests)."""
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(CreditLedger.monthly_delta), 0),
                func.coalesce(func.sum(CreditLedger.purchased_delta), 0),
                func.coalesce(func.sum(CreditLedger.promotional_delta), 0),
            ).where(CreditLedger.subscription_id == subscription_id)
        )
    ).one()
    return Balance(int(row[0]), int(row[1]), int(row[2]))
