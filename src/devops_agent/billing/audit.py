"""The admin audit log: who did what to which account, when and why.

Every admin action (a credit adjustment, a promotional grant, a suspension, a restore)
appends one row in the same transaction as the action, so the log and the change
commit together or not at all. A credit adjustment or grant is also in the ledger
(with ``admin_id`` and ``reason``); this table puts it beside the actions that move no
credits. ``adjust_credits``, ``grant_credits`` and ``set_suspended`` are those actions,
each with its row. A grant to an organization's pool has no target user: its row names
the organization in ``details`` (``org_id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from devops_agent.db import Base

from .adjustments import adjust, grant_promotional
from .errors import InvalidAmount
from .ledger import Balance
from .models import BigId, CreditGrant, CreditLedger, LedgerKind, User
from .org_models import Organization
from .types import UTCDateTime


class AdminAction(StrEnum):
    ADJUST_CREDITS = "adjust_credits"
    GRANT_CREDITS = "grant_credits"
    SUSPEND = "suspend"
    RESTORE = "restore"


class AdminAudit(Base):
    __tablename__ = "admin_audit"
    __table_args__ = (Index("ix_admin_audit_target_user_id_id", "target_user_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(32))
    target_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(Text)
    ledger_id: Mapped[int | None] = mapped_column(ForeignKey("credit_ledger.id", ondelete="SET NULL"))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


async def record(
    session: AsyncSession,
    *,
    admin_id: int,
    action: AdminAction,
    target_user_id: int | None,
    reason: str,
    now: datetime,
    ledger_id: int | None = None,
    details: dict[str, Any] | None = None,
) -> AdminAudit:
    """Append one audit row in the caller's transaction."""
    entry = AdminAudit(
        admin_id=admin_id,
        action=action.value,
        target_user_id=target_user_id,
        reason=reason,
        ledger_id=ledger_id,
        details=details,
        created_at=now,
    )
    session.add(entry)
    await session.flush()
    return entry


async def entries(session: AsyncSession, *, target_user_id: int | None = None, limit: int = 50) -> list[AdminAudit]:
    """The newest audit rows, for one user or for everyone."""
    query = select(AdminAudit).order_by(AdminAudit.id.desc()).limit(limit)
    if target_user_id is not None:
        query = query.where(AdminAudit.target_user_id == target_user_id)
    return list((await session.execute(query)).scalars())


# --- the audited actions --------------------------------------------------------------


@dataclass(frozen=True)
class Adjusted:
    """An adjustment's ledger row (None when nothing moved), its audit row (None for a replay) and the balance."""

    ledger_id: int | None
    audit: AdminAudit | None
    balance: Balance


async def adjust_credits(
    session: AsyncSession,
    *,
    admin_id: int,
    user_id: int,
    amount: int,
    reason: str,
    now: datetime,
    idempotency_key: str | None = None,
) -> Adjusted | None:
    """Give (+) or take (-) credits of the user's own account, audited with the admin's id; None: no such user.

    A retried ``idempotency_key`` replays the adjustment and appends no second audit row.
    """
    if await session.get(User, user_id) is None:
        return None
    if not reason.strip():
        raise InvalidAmount("An adjustment needs a reason.")
    result = await adjust(
        session,
        user_id=user_id,
        amount=amount,
        reason=reason,
        admin_id=admin_id,
        now=now,
        idempotency_key=f"admin:{idempotency_key}" if idempotency_key else None,
    )
    entry = None
    if not result.replayed:
        entry = await record(
            session,
            admin_id=admin_id,
            action=AdminAction.ADJUST_CREDITS,
            target_user_id=user_id,
            reason=reason.strip(),
            now=now,
            ledger_id=result.ledger_id,
            details={"amount": amount},
        )
    return Adjusted(result.ledger_id, entry, result.balance)


@dataclass(frozen=True)
class Granted:
    """A promotional grant and its audit row (the first one's, for a replayed ``idempotency_key``)."""

    grant: CreditGrant
    audit: AdminAudit


async def grant_credits(
    session: AsyncSession,
    *,
    admin_id: int,
    credits: int,
    reason: str,
    now: datetime,
    expires_at: datetime | None = None,
    user_id: int | None = None,
    org_id: int | None = None,
    idempotency_key: str | None = None,
) -> Granted | None:
    """Give a user's account (or with ``org_id`` an organization's pool) promotional credits, audited.

    None: no such user or organization. A retried ``idempotency_key`` returns the first
    grant and its audit row, and appends no second one.
    """
    owner = await session.get(Organization, org_id) if org_id is not None else await session.get(User, user_id)
    if owner is None:
        return None
    grant = await grant_promotional(
        session,
        user_id=user_id if org_id is None else None,
        org_id=org_id,
        credits=credits,
        reason=reason,
        admin_id=admin_id,
        now=now,
        expires_at=expires_at,
        idempotency_key=f"admin:{idempotency_key}" if idempotency_key else None,
    )
    ledger_id = await session.scalar(
        select(CreditLedger.id).where(CreditLedger.grant_id == grant.id, CreditLedger.kind == LedgerKind.GRANT.value)
    )
    first = await session.scalar(select(AdminAudit).where(AdminAudit.ledger_id == ledger_id)) if ledger_id else None
    if first is not None:  # a replay: the grant was audited when it was made
        return Granted(grant, first)
    details: dict[str, Any] = {
        "grant_id": grant.id,
        "credits": credits,
        "expires_at": expires_at.isoformat() if expires_at is not None else None,
    }
    if org_id is not None:
        details["org_id"] = org_id
    entry = await record(
        session,
        admin_id=admin_id,
        action=AdminAction.GRANT_CREDITS,
        target_user_id=user_id if org_id is None else None,
        reason=reason.strip(),
        now=now,
        ledger_id=ledger_id,
        details=details,
    )
    return Granted(grant, entry)


async def set_suspended(
    session: AsyncSession, *, admin_id: int, user_id: int, suspended: bool, reason: str, now: datetime
) -> tuple[User, AdminAudit] | None:
    """Suspend (or restore) a user's account, audited; None: no such user. Nobody suspends themself."""
    if user_id == admin_id:
        raise InvalidAmount("You cannot suspend or restore your own account.")
    user = await session.get(User, user_id)
    if user is None:
        return None
    user.is_suspended = suspended
    entry = await record(
        session,
        admin_id=admin_id,
        action=AdminAction.SUSPEND if suspended else AdminAction.RESTORE,
        target_user_id=user_id,
        reason=reason.strip(),
        now=now,
    )
    return user, entry
