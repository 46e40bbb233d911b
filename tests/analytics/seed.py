"""A small business whose every figure is known, built through the real credits engine.

January 2026 (T0 = Jan 15, 12:00 UTC):

* alice upgrades to Starter ($19), buys the 250 pack ($20, Jan 16), sends 3 messages on
  Jan 16, on Jan 17 creates an EC2 instance (5 credits) and lists instances once, which
  fails on our side and is refunded;
* bob upgrades to Professional ($79), buys the 100 pack ($10, Jan 20) that is refunded
  on Feb 3, lists instances twice on Jan 17, once failing without a refund;
* carol upgrades to Business ($199) but her card fails: ``past_due``;
* dave upgrades to Starter, cancels on Jan 20 and is back on Free at his Feb 15 reset;
* erin stays on Free and buys the 500 pack ($35) on Feb 5; a 1,000 pack stays pending.

So: MRR is $98 (alice + bob; carol is past due, dave churned), pack revenue is
$30 in January and $35 - $10 = $25 in February, and in February one paid account
of four churned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from devops_agent import billing
from devops_agent.billing.models import UserSubscription
from devops_agent.db import Database
from tests.factories import T0, make_user

JAN16 = T0 + timedelta(days=1)
JAN17 = T0 + timedelta(days=2)
JAN20 = T0 + timedelta(days=5)
FEB3 = datetime(2026, 2, 3, 9, 0, tzinfo=UTC)
FEB5 = datetime(2026, 2, 5, 9, 0, tzinfo=UTC)
FEB16 = datetime(2026, 2, 16, 9, 0, tzinfo=UTC)
JAN = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
FEB = (datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))


@dataclass(frozen=True)
class Business:
    alice: int
    bob: int
    carol: int
    dave: int
    erin: int


async def _buy(db: Database, user_id: int, credits_amount: int, price: str, when: datetime) -> int:
    async with db.transaction() as s:
        purchase = await billing.create_purchase(
            s, user_id=user_id, credits_amount=credits_amount, price_paid=Decimal(price), now=when
        )
        await billing.grant_purchase(s, purchase_id=purchase.id, now=when)
        return purchase.id


async def _charge(db: Database, user_id: int, when: datetime, tool: str | None = None, amount: int = 1) -> int:
    async with db.transaction() as s:
        result = await billing.charge(
            s,
            user_id=user_id,
            amount=amount,
            action_type="tool_use" if tool else "agent_message",
            tool_name=tool,
            now=when,
        )
        return result.usage_log_id


async def seed_business(db: Database) -> Business:
    async with db.transaction() as s:
        users = [await make_user(s, username=name, now=T0) for name in ("alice", "bob", "carol", "dave", "erin")]
        ids = Business(*(u.id for u in users))
        for user_id, tier in ((ids.alice, "starter"), (ids.bob, "professional"), (ids.carol, "business")):
            await billing.change_tier(s, user_id=user_id, tier_id=(await billing.tier_by_name(s, tier)).id, now=T0)
        await billing.change_tier(s, user_id=ids.dave, tier_id=(await billing.tier_by_name(s, "starter")).id, now=T0)
    async with db.transaction() as s:
        carol = await s.get(UserSubscription, (await billing.get_account(s, user_id=ids.carol, now=T0)).id)
        assert carol is not None
        carol.payment_status = "past_due"
        await billing.cancel(s, user_id=ids.dave, now=JAN20)

    await _buy(db, ids.alice, 250, "20.00", JAN16)
    for _ in range(3):
        await _charge(db, ids.alice, JAN16)
    await _charge(db, ids.alice, JAN17, "create_ec2_instance", amount=5)
    failed = await _charge(db, ids.alice, JAN17, "get_ec2_instances")
    async with db.transaction() as s:
        await billing.refund(s, usage_log_id=failed, now=JAN17, error_message="=AWS timed out")

    bob_pack = await _buy(db, ids.bob, 100, "10.00", JAN20)
    await _charge(db, ids.bob, JAN17, "get_ec2_instances")
    broken = await _charge(db, ids.bob, JAN17, "get_ec2_instances")
    async with db.transaction() as s:
        await billing.mark_failed(s, usage_log_id=broken, error_message="user's IAM role denied it")
        await billing.claw_back_purchase(s, purchase_id=bob_pack, now=FEB3, reason="refunded on request")

    await _buy(db, ids.erin, 500, "35.00", FEB5)
    async with db.transaction() as s:
        await billing.create_purchase(s, user_id=ids.erin, credits_amount=1000, price_paid=Decimal("60.00"), now=FEB5)
        await billing.apply_due_reset(s, user_id=ids.dave, now=FEB16)
    return ids
