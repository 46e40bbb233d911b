"""Billing periods: monthly anniversaries of an anchor, clamped at month ends.

A period is computed from the anchor, never from the previous period, so an
account opened on Jan 31 renews on Feb 28 (or 29) and then on Mar 31 again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from dateutil.relativedelta import relativedelta

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The real clock: timezone-aware UTC."""
    return datetime.now(UTC)


def add_months(anchor: datetime, months: int) -> datetime:
    """``anchor`` moved by whole months, the day clamped to the month's last day."""
    return anchor + relativedelta(months=months)


def period_containing(anchor: datetime, now: datetime) -> tuple[datetime, datetime]:
    """The [start, end) monthly period of ``anchor`` that contains ``now``."""
    if now < anchor:
        return anchor, add_months(anchor, 1)
    months = (now.year - anchor.year) * 12 + (now.month - anchor.month)
    start = add_months(anchor, months)
    if start > now:
        months -= 1
        start = add_months(anchor, months)
    return start, add_months(anchor, months + 1)
