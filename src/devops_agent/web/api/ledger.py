"""``GET /api/credits/ledger[.csv]``: every movement of the customer's balance, on every plan.

It is the customer's own money, so no plan feature gates it. With ``org_id`` a member
reads the team pool's movements; a charge made by another member shows without its
conversation (that conversation is theirs).
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from devops_agent import billing
from devops_agent.billing import activity, orgs
from devops_agent.billing.models import LedgerKind, UserSubscription
from devops_agent.billing.periods import add_months
from devops_agent.web import labels
from devops_agent.web.api import AUTHED, errors
from devops_agent.web.deps import CurrentUser, NowDep, SessionDep
from devops_agent.web.errors import ApiError
from devops_agent.web.schemas import Timestamp

router = APIRouter(prefix="/api/credits", tags=["credits"])

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
KINDS = ", ".join(k.value for k in LedgerKind)

LimitParam = Annotated[int, Query(ge=1, le=activity.MAX_LIMIT)]
CursorParam = Annotated[str | None, Query(description="next_cursor of the previous page.")]
MonthParam = Annotated[str | None, Query(description="Only this UTC month, YYYY-MM.")]
KindParam = Annotated[str | None, Query(description=f"Only movements of this kind: {KINDS}.")]
OrgParam = Annotated[int | None, Query(ge=1, le=2**62, description="A team pool you belong to.")]


class LedgerEntryOut(BaseModel):
    id: int
    at: Timestamp
    kind: str
    credits: int
    monthly_after: int
    purchased_after: int
    promotional_after: int
    reason: str | None
    conversation_id: int | None


class LedgerOut(BaseModel):
    entries: list[LedgerEntryOut]
    next_cursor: str | None


def _window(month: str | None) -> tuple[datetime | None, datetime | None]:
    if month is None:
        return None, None
    match = MONTH.match(month)
    if match is None:
        raise ApiError(400, "invalid_request", "Choose a month written like 2026-01.", field="month")
    start = datetime(int(match.group(1)), int(match.group(2)), 1, tzinfo=UTC)
    return start, add_months(start, 1)


def _kind(kind: str | None) -> LedgerKind | None:
    if kind is None:
        return None
    try:
        return LedgerKind(kind)
    except ValueError:
        raise ApiError(
            400, "invalid_request", f"There is no kind {kind!r}; choose one of {KINDS}.", field="kind"
        ) from None


def _cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 19:
        raise ApiError(400, "invalid_request", "This cursor is not one a page of the ledger gave.", field="cursor")
    return int(cursor)


async def _account(session: AsyncSession, *, user_id: int, org_id: int | None, now: datetime) -> UserSubscription:
    """The account whose movements the user may read: their own, or a pool of theirs."""
    if org_id is not None:
        await orgs.get_organization(session, org_id=org_id, user_id=user_id)  # 404 unless a member
    return await billing.get_account(session, user_id=None if org_id is not None else user_id, org_id=org_id, now=now)


def reason(movement: activity.Movement) -> str | None:
    """What a customer reads: the actions of a message by name, else the ledger's reason."""
    if not movement.actions:
        return movement.reason
    parts = []
    for action in movement.actions:
        text = f"{labels.action_label(action.name)} ({action.credits})"
        if movement.kind == LedgerKind.CHARGE.value and not action.success:
            text += ", failed"
        parts.append(text)
    said = "; ".join(parts)
    if movement.kind == LedgerKind.REFUND.value and movement.reason:
        return f"{said}: {movement.reason}"
    return said


def _entry(movement: activity.Movement, viewer_id: int) -> LedgerEntryOut:
    mine = movement.user_id == viewer_id
    return LedgerEntryOut(
        id=movement.id,
        at=movement.at,
        kind=movement.kind,
        credits=movement.credits,
        monthly_after=movement.monthly_after,
        purchased_after=movement.purchased_after,
        promotional_after=movement.promotional_after,
        reason=reason(movement),
        conversation_id=movement.conversation_id if mine else None,
    )


@router.get(
    "/ledger",
    response_model=LedgerOut,
    summary="Every movement of your balance (or a team pool's), newest first; a message's charges as one",
    responses=errors(*AUTHED, 404),
)
async def ledger(
    user: CurrentUser,
    session: SessionDep,
    now: NowDep,
    limit: LimitParam = 50,
    cursor: CursorParam = None,
    month: MonthParam = None,
    kind: KindParam = None,
    org_id: OrgParam = None,
) -> LedgerOut:
    start, end = _window(month)
    wanted, after = _kind(kind), _cursor(cursor)
    account = await _account(session, user_id=user.id, org_id=org_id, now=now)
    page = await activity.movements(
        session, subscription_id=account.id, limit=limit, cursor=after, start=start, end=end, kind=wanted
    )
    return LedgerOut(
        entries=[_entry(m, user.id) for m in page.movements],
        next_cursor=str(page.next_cursor) if page.next_cursor is not None else None,
    )


# Columns are only ever added at the end: spreadsheets and scripts read them by position.
CSV_COLUMNS = (
    "id",
    "at",
    "kind",
    "credits",
    "monthly_after",
    "purchased_after",
    "what",
    "conversation_id",
    "promotional_after",
)


def _csv_safe(value: str) -> str:
    """Defuse spreadsheet formulas in free text (CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


@router.get(
    "/ledger.csv",
    summary="The same movements as CSV, with readable kinds (every page at once)",
    responses={200: {"content": {"text/csv": {}}, "description": "One row per movement."}, **errors(*AUTHED, 404)},
)
async def ledger_csv(
    user: CurrentUser,
    session: SessionDep,
    now: NowDep,
    month: MonthParam = None,
    kind: KindParam = None,
    org_id: OrgParam = None,
) -> Response:
    start, end = _window(month)
    wanted = _kind(kind)
    account = await _account(session, user_id=user.id, org_id=org_id, now=now)
    rows = await activity.all_movements(session, subscription_id=account.id, start=start, end=end, kind=wanted)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for movement in rows:
        entry = _entry(movement, user.id)
        writer.writerow(
            (
                entry.id,
                movement.at.isoformat(),
                labels.kind_label(entry.kind),
                entry.credits,
                entry.monthly_after,
                entry.purchased_after,
                _csv_safe(entry.reason or ""),
                entry.conversation_id or "",
                entry.promotional_after,
            )
        )
    name = f"credits-{month or 'all'}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
