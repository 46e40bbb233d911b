"""Anniversary periods clamp at month ends and never drift."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devops_agent.billing.periods import add_months, period_containing


def d(y: int, m: int, day: int, h: int = 0) -> datetime:
    return datetime(y, m, day, h, tzinfo=UTC)


def test_month_end_anchor_clamps_and_recovers() -> None:
    anchor = d(2026, 1, 31, 9)
    assert add_months(anchor, 1) == d(2026, 2, 28, 9)
    assert add_months(anchor, 2) == d(2026, 3, 31, 9)
    assert add_months(d(2028, 1, 31), 1) == d(2028, 2, 29)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (d(2026, 1, 31, 9), (d(2026, 1, 31, 9), d(2026, 2, 28, 9))),
        (d(2026, 2, 28, 8), (d(2026, 1, 31, 9), d(2026, 2, 28, 9))),
        (d(2026, 2, 28, 9), (d(2026, 2, 28, 9), d(2026, 3, 31, 9))),
        (d(2026, 3, 30), (d(2026, 2, 28, 9), d(2026, 3, 31, 9))),
        (d(2026, 12, 31, 10), (d(2026, 12, 31, 9), d(2027, 1, 31, 9))),
    ],
)
def test_period_containing(now: datetime, expected: tuple[datetime, datetime]) -> None:
    assert period_containing(d(2026, 1, 31, 9), now) == expected
