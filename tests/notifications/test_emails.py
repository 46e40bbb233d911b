"""Emails against a real SMTP server: once per cause and period, after commit, retried, opt-out respected."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from devops_agent import billing, notifications
from devops_agent.billing.models import User
from devops_agent.db import Database
from devops_agent.notifications import Cause, EmailOutbox, Notifier, OutboxStatus
from devops_agent.notifications.smtp import SmtpUrlError, parse_smtp_url
from tests.factories import T0, make_user
from tests.notifications.conftest import Inbox, ManualClock, free_port
from tests.orgs.factories import add_member, fill_pool, make_org

MakeNotifier = Callable[..., Notifier]


async def new_user(db: Database, *, balance: int, opt_out: bool = False) -> int:
    """A Free user whose balance has been brought to ``balance`` by an earlier charge."""
    async with db.transaction() as s:
        user = await make_user(s, now=T0)
        user.email_opt_out = opt_out
        if balance < 20:
            await billing.charge(s, user_id=user.id, amount=20 - balance, action_type="agent_message", now=T0)
        return user.id


async def spend(db: Database, notifier: Notifier, user_id: int, amount: int = 1) -> None:
    """What the chat endpoint does: charge and commit, THEN tell notifications."""
    async with db.transaction() as s:
        await billing.charge(s, user_id=user_id, amount=amount, action_type="agent_message", now=T0)
    await notifier.after_balance_change(user_id=user_id, now=T0)


async def outbox(db: Database) -> list[EmailOutbox]:
    async with db.transaction() as s:
        return list((await s.execute(select(EmailOutbox).order_by(EmailOutbox.id))).scalars())


async def test_low_credit_email_is_sent_once_when_concurrent_charges_cross_the_threshold(
    db: Database, inbox: Inbox, make_notifier: MakeNotifier
) -> None:
    # Two "workers", each with its own dispatcher, share the database.
    workers = [make_notifier(db), make_notifier(db)]
    user_id = await new_user(db, balance=10)

    await asyncio.gather(*(spend(db, workers[i % 2], user_id) for i in range(6)))
    await asyncio.gather(*(w.wait_idle() for w in workers))
    await asyncio.gather(*(w.drain() for w in workers))  # nothing left for a second pass either

    assert inbox.subjects() == ["Only 4 DevOps Agent credits left"]
    message = inbox.messages[0]
    assert str(message["To"]).endswith("@example.com")
    assert message["From"] == "DevOps Agent <billing@devops-agent.test>"
    assert "http://agent.test/billing" in message.get_payload()
    rows = await outbox(db)
    assert [(r.cause, r.status, r.attempts) for r in rows] == [("low_balance", "sent", 1)]


async def test_reaching_zero_sends_one_out_of_credits_email_and_no_later_low_one(
    db: Database, inbox: Inbox, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier(db)
    user_id = await new_user(db, balance=6)
    await spend(db, notifier, user_id, amount=6)  # 6 -> 0 in one step
    async with db.transaction() as s:
        await billing.adjust(s, user_id=user_id, amount=3, reason="goodwill", admin_id=None, now=T0)
    await spend(db, notifier, user_id)  # 3 -> 2: below 5 again in the same period
    await notifier.wait_idle()

    assert inbox.subjects() == ["You have run out of DevOps Agent credits"]
    rows = {(r.cause, r.status) for r in await outbox(db)}
    assert rows == {("credits_exhausted", "sent"), ("low_balance", "skipped")}


async def test_next_period_may_warn_again(db: Database, inbox: Inbox, make_notifier: MakeNotifier) -> None:
    notifier = make_notifier(db)
    user_id = await new_user(db, balance=5)
    await spend(db, notifier, user_id)
    later = T0 + timedelta(days=32)  # the reset grants 20 again; spend down to 3 in the new period
    async with db.transaction() as s:
        await billing.charge(s, user_id=user_id, amount=17, action_type="agent_message", now=later)
    await notifier.after_balance_change(user_id=user_id, now=later)
    await notifier.wait_idle()
    assert inbox.subjects() == ["Only 4 DevOps Agent credits left", "Only 3 DevOps Agent credits left"]


async def test_no_optional_email_for_a_user_who_turned_them_off_but_receipts_still_go(
    db: Database, inbox: Inbox, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier(db)
    user_id = await new_user(db, balance=2, opt_out=True)
    await spend(db, notifier, user_id, amount=2)
    async with db.transaction() as s:
        purchase = await billing.create_purchase(
            s, user_id=user_id, credits_amount=100, price_paid=Decimal("10.00"), now=T0
        )
        await billing.grant_purchase(s, purchase_id=purchase.id, now=T0)
    await notifier.after_purchase(purchase_id=purchase.id, now=T0)
    await notifier.wait_idle()
    assert inbox.subjects() == ["Receipt: 100 DevOps Agent credits"]
    assert [r.cause for r in await outbox(db)] == ["purchase_receipt"]


async def test_receipt_once_per_purchase_with_its_figures(
    db: Database, inbox: Inbox, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier(db)
    user_id = await new_user(db, balance=20)
    async with db.transaction() as s:
        pending = await billing.create_purchase(
            s, user_id=user_id, credits_amount=250, price_paid=Decimal("20.00"), now=T0
        )
    assert await notifier.after_purchase(purchase_id=pending.id, now=T0) == []  # not paid yet: no receipt
    async with db.transaction() as s:
        await billing.grant_purchase(s, purchase_id=pending.id, now=T0)
    # Two triggers for the same purchase race each other (two workers, a retried request): one receipt.
    await asyncio.gather(*(notifier.after_purchase(purchase_id=pending.id, now=T0) for _ in range(2)))
    await notifier.wait_idle()

    assert inbox.subjects() == ["Receipt: 250 DevOps Agent credits"]
    body = inbox.messages[0].get_payload()
    assert f"DA-{pending.id:06d}" in body
    assert "$20.00 USD" in body
    assert "Your balance is now 270 credits" in body


async def test_payment_failed_once_per_invoice(db: Database, inbox: Inbox, make_notifier: MakeNotifier) -> None:
    notifier = make_notifier(db)
    user_id = await new_user(db, balance=20)
    for reference in ("in_1", "in_1", "in_2"):
        await notifier.after_payment_failed(user_id=user_id, now=T0, reference=reference, amount=Decimal("19.00"))
    await notifier.wait_idle()
    assert inbox.subjects() == ["Your DevOps Agent payment failed"] * 2
    assert "payment of $19.00 for your Free plan" in inbox.messages[0].get_payload()


async def test_a_temporary_smtp_failure_is_retried(db: Database, inbox: Inbox, make_notifier: MakeNotifier) -> None:
    notifier = make_notifier(db)
    inbox.replies.append("451 4.3.0 Mail server temporarily rejected message")
    user_id = await new_user(db, balance=4)
    await notifier.after_balance_change(user_id=user_id, now=T0)
    await notifier.wait_idle()
    assert inbox.data_commands == 2
    assert inbox.subjects() == ["Only 4 DevOps Agent credits left"]
    assert [r.status for r in await outbox(db)] == ["sent"]


async def test_a_permanent_failure_is_not_retried(db: Database, inbox: Inbox, make_notifier: MakeNotifier) -> None:
    notifier = make_notifier(db)
    inbox.replies.append("550 5.1.1 No such mailbox")
    user_id = await new_user(db, balance=4)
    await notifier.after_balance_change(user_id=user_id, now=T0)
    await notifier.wait_idle()
    assert inbox.data_commands == 1
    [row] = await outbox(db)
    assert row.status == OutboxStatus.FAILED
    assert "550" in (row.last_error or "")


async def test_an_unreachable_server_leaves_the_email_queued_for_a_later_drain(
    db: Database, inbox: Inbox, make_notifier: MakeNotifier
) -> None:
    clock = ManualClock(T0)
    down = make_notifier(db, smtp_url=f"smtp://127.0.0.1:{free_port()}", clock=clock)
    user_id = await new_user(db, balance=3)
    await down.after_balance_change(user_id=user_id, now=T0)
    await down.wait_idle()
    [row] = await outbox(db)
    assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 1, T0 + timedelta(minutes=5))

    up = make_notifier(db, clock=clock)
    assert (await up.drain()).sent == 0  # not due yet
    clock.now = T0 + timedelta(minutes=5)
    assert (await up.drain()).sent == 1
    assert inbox.subjects() == ["Only 3 DevOps Agent credits left"]
    [row] = await outbox(db)
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)


async def test_without_smtp_url_emails_go_to_the_log_and_the_outbox(
    db: Database, make_notifier: MakeNotifier, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = make_notifier(db, smtp_url=None)
    notifications.install(db, notifier)
    user_id = await new_user(db, balance=1)
    try:
        with caplog.at_level(logging.INFO, logger="devops_agent.notifications"):
            await notifications.after_balance_change(db, user_id=user_id, now=T0)
            await notifier.wait_idle()
    finally:
        notifications.forget(db)
    assert "Only 1 DevOps Agent credit left" in caplog.text
    [row] = await outbox(db)
    assert (row.cause, row.status) == (Cause.LOW_BALANCE, "logged")
    async with db.transaction() as s:
        assert [r.id for r in await notifications.recent_outbox(s)] == [row.id]


async def test_module_triggers_never_raise(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    broken = Notifier(db, smtp_url=None, sender="x@y", base_url="http://agent.test")

    async def fail(**_: object) -> list[int]:
        raise RuntimeError("database went away")

    broken.after_balance_change = fail  # type: ignore[method-assign]
    notifications.install(db, broken)
    try:
        await notifications.after_balance_change(db, user_id=1, now=T0)
    finally:
        notifications.forget(db)
    assert "could not queue the low-credit email of user 1" in caplog.text


async def test_unknown_user_or_healthy_balance_queues_nothing(db: Database, make_notifier: MakeNotifier) -> None:
    notifier = make_notifier(db)
    user_id = await new_user(db, balance=5)
    assert await notifier.after_balance_change(user_id=user_id, now=T0) == []
    assert await notifier.after_balance_change(user_id=user_id + 100, now=T0) == []
    async with db.transaction() as s:
        assert (await s.get(User, user_id)) is not None
    assert await outbox(db) == []


def test_smtp_url_forms() -> None:
    plain = parse_smtp_url("smtp://127.0.0.1:2525")
    assert (plain.host, plain.port, plain.security, plain.username) == ("127.0.0.1", 2525, "plain", None)
    tls = parse_smtp_url("smtps://me%40corp:s3cr%2Ft@mail.corp:465?timeout=3")
    assert (tls.security, tls.username, tls.password, tls.timeout) == ("tls", "me@corp", "s3cr/t", 3.0)
    assert "s3cr" not in repr(tls)
    assert parse_smtp_url("smtp+starttls://mail.corp").port == 587
    for bad in ("http://mail.corp", "smtp://", "smtp://h:99999", "smtp://h?timeout=soon"):
        with pytest.raises(SmtpUrlError):
            parse_smtp_url(bad)


async def test_a_team_pool_running_low_then_empty_warns_its_owner_once_each(
    db: Database, inbox: Inbox, make_notifier: MakeNotifier
) -> None:
    notifier = make_notifier(db)
    async with db.transaction() as s:
        owner = await make_user(s, username="olga")
        org = await make_org(s, owner=owner, name="Acme Ops")
        member = await add_member(s, org, owner=owner)
        await fill_pool(s, org, to=6, admin=owner)

    async def team_spend(amount: int) -> None:
        async with db.transaction() as s:
            await billing.charge(
                s, user_id=member.id, org_id=org.id, amount=amount, action_type="agent_message", now=T0
            )
        await notifier.after_pool_change(org_id=org.id, now=T0)

    await team_spend(1)  # 5 left: not below the threshold yet
    await asyncio.gather(*(team_spend(1) for _ in range(2)))  # 3 left: one "low" email, however many charges
    await team_spend(3)  # empty
    await notifier.wait_idle()

    low, empty = inbox.subjects()  # the low email read 4 or 3, whichever charge queued it first
    assert low in ("Acme Ops: only 4 team credits left", "Acme Ops: only 3 team credits left")
    assert empty == "Acme Ops has run out of team credits"
    assert all(str(m["To"]) == "olga@example.com" for m in inbox.messages)  # the owner, not the member who spent
    assert f"http://agent.test/orgs/{org.id}" in inbox.messages[0].get_payload(decode=True).decode()
    rows = {(r.cause, r.status, r.user_id) for r in await outbox(db)}
    assert rows == {("pool_low", "sent", owner.id), ("pool_exhausted", "sent", owner.id)}
    # The owner's personal balance was never touched: no personal low-credit email either.
    await notifier.after_balance_change(user_id=owner.id, now=T0)
    assert len(await outbox(db)) == 2
