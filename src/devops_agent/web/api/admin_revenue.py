"""Revenue recognition for the admins and the accountant (``/api/admin/revenue/recognition``).

``billing.recognition``'s docstring defines each figure and why the roll-forward
``deferred start + pack sales - recognized - breakage - refunds = deferred end`` holds
to the cent. Like the rest of ``/api/admin`` (``web.api.admin``), every route needs
``is_admin`` (401 without a user, 403 ``forbidden`` for others).

* ``GET /revenue/recognition?month=YYYY-MM``: one UTC month; the current month when
  ``month`` is left out (the dashboard opens on it). Amounts are decimal strings with
  two places (exact, unlike floats), in ``currency`` ``usd``.
* ``GET /revenue/recognition.csv?from=YYYY-MM&to=YYYY-MM``: one row per month with
  the same columns, both months included; by default the twelve months ending with
  the current one, at most ``MAX_MONTHS``.

A month that is not ``YYYY-MM`` (years 2000 to 2999), or a range that runs backwards
or is too long, is 400 ``invalid_request`` naming the parameter in ``field``.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from devops_agent.billing.recognition import (
    FIRST_YEAR,
    LAST_YEAR,
    Recognition,
    recognition_by_month,
    recognition_csv,
)
from devops_agent.billing.recognition import recognition as month_figures
from devops_agent.web.api.admin import ADMIN_ERRORS
from devops_agent.web.deps import AdminUser, NowDep, SessionDep
from devops_agent.web.errors import ApiError

router = APIRouter(prefix="/api/admin", tags=["admin"])

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
MAX_MONTHS = 120
MonthParam = Annotated[str | None, Query(description="A UTC month, YYYY-MM; the current one by default.")]
Amount = Annotated[str, Field(pattern=r"^-?\d+\.\d{2}$", description="USD, a decimal string with two places.")]


def _parse_month(value: str | None, now: datetime, field: str) -> tuple[int, int]:
    if value is None:
        return now.year, now.month
    match = MONTH.match(value)
    if match is None or not FIRST_YEAR <= int(match.group(1)) <= LAST_YEAR:
        raise ApiError(
            400,
            "invalid_request",
            f"{field} must be a month written like 2026-03 (years {FIRST_YEAR} to {LAST_YEAR}).",
            field=field,
        )
    return int(match.group(1)), int(match.group(2))


def _months_back(year: int, month: int, back: int) -> tuple[int, int]:
    index = year * 12 + month - 1 - back
    return index // 12, index % 12 + 1


def _amount(value: Decimal) -> str:
    return f"{value:.2f}"


class RecognitionOut(BaseModel):
    month: str = Field(description="The UTC month, YYYY-MM.")
    currency: str = Field(description="Always `usd`.")
    plan_revenue: Amount = Field(description="Plan prices earned evenly over the periods they pay for.")
    pack_sales: Amount = Field(description="Prices of the packs sold in the month (deferred until used).")
    pack_revenue_recognized: Amount = Field(
        description="Pack credits consumed at their cost basis: charges net of refunds, negative adjustments."
    )
    breakage: Amount = Field(description="Pack credits that expired unused, at their cost basis.")
    refunds: Amount = Field(description="Pack credits taken back when their pack was refunded, at their cost basis.")
    deferred_revenue_start: Amount = Field(description="Pack credits still owed when the month began.")
    deferred_revenue_end: Amount = Field(
        description="Start + pack_sales - pack_revenue_recognized - breakage - refunds, exactly."
    )

    @classmethod
    def of(cls, month: Recognition) -> RecognitionOut:
        return cls(
            month=month.month,
            currency=month.currency,
            plan_revenue=_amount(month.plan_revenue),
            pack_sales=_amount(month.pack_sales),
            pack_revenue_recognized=_amount(month.pack_revenue_recognized),
            breakage=_amount(month.breakage),
            refunds=_amount(month.refunds),
            deferred_revenue_start=_amount(month.deferred_revenue_start),
            deferred_revenue_end=_amount(month.deferred_revenue_end),
        )


@router.get(
    "/revenue/recognition",
    response_model=RecognitionOut,
    summary="A month's recognized revenue and the roll-forward of deferred pack revenue",
    responses=ADMIN_ERRORS,
)
async def recognition(_admin: AdminUser, session: SessionDep, now: NowDep, month: MonthParam = None) -> RecognitionOut:
    year, number = _parse_month(month, now, "month")
    return RecognitionOut.of(await month_figures(session, year=year, month=number))


@router.get(
    "/revenue/recognition.csv",
    summary="Recognized revenue and deferred pack revenue, one row per month, as CSV",
    responses={200: {"content": {"text/csv": {}}, "description": "A header, then one row per month."}, **ADMIN_ERRORS},
    response_class=Response,
)
async def recognition_export(
    _admin: AdminUser,
    session: SessionDep,
    now: NowDep,
    first: Annotated[
        str | None, Query(alias="from", description="The first UTC month, YYYY-MM; 11 months before `to` by default.")
    ] = None,
    last: Annotated[
        str | None, Query(alias="to", description="The last UTC month, YYYY-MM; this one by default.")
    ] = None,
) -> Response:
    end = _parse_month(last, now, "to")
    start = _parse_month(first, now, "from") if first is not None else max(_months_back(*end, 11), (FIRST_YEAR, 1))
    months = (end[0] - start[0]) * 12 + end[1] - start[1] + 1
    if months < 1:
        raise ApiError(400, "invalid_request", "from must not be after to.", field="from")
    if months > MAX_MONTHS:
        raise ApiError(400, "invalid_request", f"Ask for at most {MAX_MONTHS} months at a time.", field="from")
    rows = await recognition_by_month(session, first=start, last=end)
    name = f"revenue-recognition-{rows[0].month}-to-{rows[-1].month}.csv"
    return Response(
        recognition_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
