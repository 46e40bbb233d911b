"""The worked month of revenue recognition, played through the real billing verbs.

Shared by the engine's test (``test_recognition.py``), the admin API's and the admin
page's: each plays ``play_worked_month`` on its own database and reads March 2026.
The story and its figures are in ``test_recognition.test_the_worked_month``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from devops_agent import billing
from devops_agent.billing.catalog import DEFAULT_PRICING_FILE
from devops_agent.config import get_settings
from devops_agent.db import Database
from tests.factories import make_user

# The pricing file with its 100-credit pack lasting 20 days (pack B of the story).
EXPIRING_100 = 'credits = 100\nprice = "10.00"\nexpires_after_days = 20\n'


@contextmanager
def expiring_packs(tmp_path: Path) -> Iterator[Path]:
    """Point ``PRICING_FILE`` at the shipped catalog whose 100-credit pack expires after 20 days."""
    text = DEFAULT_PRICING_FILE.read_text()
    assert 'credits = 100\nprice = "10.00"\n' in text
    pricing = tmp_path / "pricing-expiring.toml"
    pricing.write_text(text.replace('credits = 100\nprice = "10.00"\n', EXPIRING_100))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRICING_FILE", str(pricing))
        get_settings.cache_clear()
        try:
            yield pricing
        finally:
            get_settings.cache_clear()
    get_settings.cache_clear()


def at(month: int, day: int, hour: int = 0) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


@dataclass(frozen=True)
class Story:
    alice: int
    bob: int
    pack_a: int


async def _buy(db: Database, user_id: int, credits: int, price: str, when: datetime) -> int:
    async with db.transaction() as s:
        purchase = await billing.create_purchase(
            s, user_id=user_id, credits_amount=credits, price_paid=Decimal(price), now=when
        )
        await billing.grant_purchase(s, purchase_id=purchase.id, now=when)
        return purchase.id


async def _charge(db: Database, user_id: int, amount: int, when: datetime) -> int:
    async with db.transaction() as s:
        done = await billing.charge(s, user_id=user_id, amount=amount, action_type="agent_message", now=when)
        return done.usage_log_id


async def _upgrade(db: Database, user_id: int, tier: str, when: datetime) -> None:
    async with db.transaction() as s:
        target = await billing.tier_by_name(s, tier)
        await billing.change_tier(s, user_id=user_id, tier_id=target.id, now=when)


async def play_worked_month(db: Database) -> Story:
    """Alice and Bob from February to April 2026 (needs ``expiring_packs``: pack B expires)."""
    async with db.transaction() as s:
        alice = (await make_user(s, username="alice", now=at(2, 10))).id
    await _upgrade(db, alice, "starter", at(2, 15))  # P1: $19, Feb 15 - Mar 15
    pack_a = await _buy(db, alice, 300, "25.00", at(2, 20))  # A: 300 credits for $25.00, never expires
    await _charge(db, alice, 250, at(2, 25))  # 200 from P1, 50 from A

    await _buy(db, alice, 100, "10.00", at(3, 2))  # B: 100 credits for $10.00, expires Mar 22
    await _charge(db, alice, 70, at(3, 5))  # from B (it expires before A)
    refunded = await _charge(db, alice, 20, at(3, 10))  # from B: 10 left
    await _upgrade(db, alice, "professional", at(3, 16))  # the reset's P2 (Mar 15), replaced by P3 ($79) at once
    async with db.transaction() as s:  # reading the account after Mar 22 expires B's 10 credits
        await billing.get_account(s, user_id=alice, now=at(3, 23))
    async with db.transaction() as s:  # A refunded: its 250 left are taken back (other packs have none)
        await billing.claw_back_purchase(s, purchase_id=pack_a, now=at(3, 24), reason="charge disputed")
    async with db.transaction() as s:  # B expired: the 20 come back on a fresh grant, expired at once
        await billing.refund(s, usage_log_id=refunded, now=at(3, 25), error_message="the tool failed")
    await _buy(db, alice, 250, "20.00", at(3, 26))  # C: 250 credits for $20.00

    async with db.transaction() as s:
        bob = (await make_user(s, username="bob", now=at(3, 1))).id
    async with db.transaction() as s:  # G: 50 credits given by an admin, price 0
        await billing.adjust(s, user_id=bob, amount=50, reason="goodwill", admin_id=None, now=at(3, 3))
    await _charge(db, bob, 60, at(3, 4))  # 20 from his Free plan, 40 from G
    await _buy(db, bob, 200, "16.00", at(3, 5))  # D: 200 credits for $16.00
    async with db.transaction() as s:  # 10 from G, then 20 from D
        await billing.adjust(s, user_id=bob, amount=-30, reason="double grant", admin_id=None, now=at(3, 6))

    await _charge(db, alice, 1010, at(4, 2))  # April: 1000 from P3, 10 from C
    return Story(alice=alice, bob=bob, pack_a=pack_a)


# March 2026 as the test's docstring tabulates it (USD).
MARCH = {
    "month": "2026-03",
    "currency": "usd",
    "plan_revenue": "69.27",
    "pack_sales": "46.00",
    "pack_revenue_recognized": "8.60",
    "breakage": "3.00",
    "refunds": "20.83",
    "deferred_revenue_start": "20.83",
    "deferred_revenue_end": "34.40",
}
