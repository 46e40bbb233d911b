"""`devops-agent audit`: clean books pass; each kind of corruption, made with SQL, is found and named.

The command runs through Typer's runner in a thread of its own (it runs its own event
loop), on the same database as the test, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import text
from typer.testing import CliRunner

from devops_agent import billing
from devops_agent.billing import books, orgs
from devops_agent.billing.adjustments import grant_promotional
from devops_agent.billing.models import ActionType
from devops_agent.cli import app
from devops_agent.config import get_settings
from devops_agent.db import Database
from tests.factories import T0, make_user
from tests.orgs.factories import add_member, fill_pool, make_org

runner = CliRunner()


@dataclass(frozen=True)
class Books:
    user_id: int
    usage_log_id: int
    org_id: int
    member_id: int
    pending_purchase_id: int
    spender_id: int  # promotional grants, charges drawing from several grants, a refund after an expiry


async def _keep_books(db: Database) -> Books:
    """A little business: charges, a refund, packs (granted, refunded, pending), a team with a capped member."""
    async with db.transaction() as s:
        user = await make_user(s)
        kept = await billing.charge(s, user_id=user.id, amount=3, action_type=ActionType.TOOL_USE, now=T0)
        failed = await billing.charge(s, user_id=user.id, amount=2, action_type=ActionType.TOOL_USE, now=T0)
        await billing.refund(s, usage_log_id=failed.usage_log_id, now=T0, error_message="tool failed")
        bought = await billing.create_purchase(s, user_id=user.id, credits_amount=100, price_paid=Decimal(10), now=T0)
        await billing.grant_purchase(s, purchase_id=bought.id, now=T0)
        returned = await billing.create_purchase(s, user_id=user.id, credits_amount=100, price_paid=Decimal(10), now=T0)
        await billing.grant_purchase(s, purchase_id=returned.id, now=T0)
        await billing.claw_back_purchase(s, purchase_id=returned.id, now=T0, reason="refunded")
        pending = await billing.create_purchase(s, user_id=user.id, credits_amount=100, price_paid=Decimal(10), now=T0)
        owner = await make_user(s)
        org = await make_org(s, owner=owner)
        member = await add_member(s, org, owner=owner)
        await fill_pool(s, org, to=50, admin=owner)
        await orgs.set_member_cap(s, org_id=org.id, actor_id=owner.id, user_id=member.id, cap=10)
        for amount in (4, 6):
            await billing.charge(
                s, user_id=member.id, org_id=org.id, amount=amount, action_type=ActionType.TOOL_USE, now=T0
            )
    async with db.transaction() as s:  # a charge in a transaction of its own, as the agent makes it
        await billing.charge(s, user_id=user.id, amount=1, action_type=ActionType.AGENT_MESSAGE, now=T0)
    async with db.transaction() as s:  # promotional credits, one grant expired since; charges drawing several grants
        spender = await make_user(s)
        await grant_promotional(
            s, user_id=spender.id, credits=5, reason="welcome", admin_id=None, now=T0, expires_at=T0 + timedelta(days=1)
        )
        await grant_promotional(s, user_id=spender.id, credits=30, reason="sorry", admin_id=None, now=T0)
        split = await billing.charge(s, user_id=spender.id, amount=30, action_type=ActionType.TOOL_USE, now=T0)
    later = T0 + timedelta(days=2)
    async with db.transaction() as s:
        await billing.refund(s, usage_log_id=split.usage_log_id, now=later, error_message="tool failed")
        await billing.charge(s, user_id=spender.id, amount=10, action_type=ActionType.TOOL_USE, now=later)
    return Books(user.id, kept.usage_log_id, org.id, member.id, pending.id, spender.id)


async def _sql(db: Database, statement: str, **params: object) -> None:
    async with db.transaction() as s:
        await s.execute(text(statement), params)


async def _audit() -> Result:
    return await asyncio.to_thread(runner.invoke, app, ["audit"])


def _problems(output: str) -> dict[str, int]:
    """The summary table's counts, by check."""
    counts = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in {c.name for c in books.CHECKS} and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


async def _last_run(db: Database) -> books.AuditRun:
    async with db.transaction() as s:
        run = await books.last_run(s)
    assert run is not None
    return run


@pytest.mark.usefixtures("env")
async def test_clean_books_pass_and_the_run_is_kept(db: Database) -> None:
    await _keep_books(db)
    result = await _audit()
    assert result.exit_code == 0, result.output
    assert _problems(result.output) == {c.name: 0 for c in books.CHECKS}
    assert "5 account(s) checked" in result.output  # four people and a team pool
    assert "the books hold" in result.output
    run = await _last_run(db)
    assert run.ok
    assert run.discrepancies == 0
    assert run.accounts == 5


@pytest.mark.usefixtures("env")
async def test_a_balance_changed_behind_the_ledger_fails_and_names_the_account(db: Database) -> None:
    kept = await _keep_books(db)
    await _sql(
        db, "UPDATE user_subscriptions SET credits_remaining = credits_remaining + 7 WHERE user_id = :u", u=kept.user_id
    )
    result = await _audit()
    assert result.exit_code == 1
    assert _problems(result.output) == {
        "balances": 1,
        "balance_after": 1,
        "grants": 1,
        "grant_ledger": 0,
        "charges": 0,
        "usage_logs": 0,
        "member_caps": 0,
        "purchases": 0,
    }
    assert f"balances: user {kept.user_id}: balance " in result.output
    run = await _last_run(db)
    assert not run.ok
    assert run.checks["balances"] == 1
    assert run.examples[0]["account"] == f"user {kept.user_id}"


@pytest.mark.usefixtures("env")
async def test_a_ledger_row_whose_balance_after_lies_fails(db: Database) -> None:
    kept = await _keep_books(db)
    await _sql(
        db,
        "UPDATE credit_ledger SET purchased_balance_after = purchased_balance_after + 1 WHERE id = "
        "(SELECT max(l.id) FROM credit_ledger l JOIN user_subscriptions s ON s.id = l.subscription_id "
        "WHERE s.organization_id = :o)",
        o=kept.org_id,
    )
    result = await _audit()
    assert result.exit_code == 1
    assert _problems(result.output)["balance_after"] == 1
    assert _problems(result.output)["balances"] == 0
    assert f"balance_after: organization {kept.org_id}: " in result.output


@pytest.mark.usefixtures("env")
async def test_a_charge_that_disagrees_with_its_usage_log_fails(db: Database) -> None:
    kept = await _keep_books(db)
    await _sql(db, "UPDATE usage_logs SET credits_used = credits_used + 1 WHERE id = :u", u=kept.usage_log_id)
    result = await _audit()
    assert result.exit_code == 1
    counts = _problems(result.output)
    assert counts["charges"] == 1
    assert counts["balances"] == 0
    assert f"charges: user {kept.user_id}: charge row " in result.output
    assert f"took 3 credits, usage log {kept.usage_log_id} says 4" in result.output


@pytest.mark.usefixtures("env")
async def test_a_charge_for_another_accounts_usage_fails(db: Database) -> None:
    kept = await _keep_books(db)
    # The usage log now says the member acted on their own account, while the pool paid.
    await _sql(db, "UPDATE usage_logs SET organization_id = NULL WHERE organization_id = :o", o=kept.org_id)
    result = await _audit()
    assert result.exit_code == 1
    assert _problems(result.output)["charges"] == 2
    assert f"charges: organization {kept.org_id}: charge row " in result.output
    assert f"of user {kept.member_id}" in result.output


@pytest.mark.usefixtures("env")
async def test_a_usage_log_without_its_charge_or_refunded_twice_fails(db: Database) -> None:
    kept = await _keep_books(db)
    # An action logged as paid that no charge row paid for.
    await _sql(
        db,
        "INSERT INTO usage_logs (user_id, action_type, credits_used, success, created_at) "
        "VALUES (:u, 'tool_use', 5, :t, :at)",
        u=kept.user_id,
        t=True,
        at=T0,
    )
    result = await _audit()
    assert result.exit_code == 1
    assert _problems(result.output)["usage_logs"] == 1
    assert "0 charge(s) for 0 credits" in result.output
    assert _problems(result.output)["balances"] == 0


@pytest.mark.usefixtures("env")
async def test_a_member_over_their_cap_fails(db: Database) -> None:
    kept = await _keep_books(db)
    # The counter the charge checks says 10 of 10; make the usage log say 12.
    await _sql(
        db,
        "UPDATE usage_logs SET credits_used = credits_used + 2 WHERE organization_id = :o AND credits_used = 6",
        o=kept.org_id,
    )
    result = await _audit()
    assert result.exit_code == 1
    assert _problems(result.output)["member_caps"] == 1
    assert f"member_caps: organization {kept.org_id}: member user {kept.member_id} spent 12 credits, cap 10" in (
        result.output
    )


@pytest.mark.usefixtures("env")
async def test_a_completed_purchase_without_its_grant_fails(db: Database) -> None:
    kept = await _keep_books(db)
    await _sql(db, "UPDATE credit_purchases SET payment_status = 'completed' WHERE id = :p", p=kept.pending_purchase_id)
    result = await _audit()
    assert result.exit_code == 1
    assert _problems(result.output)["purchases"] == 1
    assert f"purchase {kept.pending_purchase_id} (completed, 100 credits) has 0 grant(s)" in result.output
    assert f"purchases: user {kept.user_id}: " in result.output


async def test_the_audits_snapshot_never_blocks_a_writer_and_sees_one_state(db: Database) -> None:
    async with db.transaction() as s:
        user = await make_user(s)
    writer = Database(db.url.render_as_string(hide_password=False))  # another process's connection
    count = text("SELECT count(*) FROM credit_ledger")
    try:
        async with db.snapshot() as snapshot:
            before = (await snapshot.execute(count)).scalar_one()
            # A charge commits while the snapshot is open: it does not wait for the reader...
            async with writer.transaction() as s:
                await billing.charge(s, user_id=user.id, amount=1, action_type=ActionType.TOOL_USE, now=T0)
            # ...and the reader's later statements still see the state of its first one.
            assert (await snapshot.execute(count)).scalar_one() == before
        async with db.snapshot() as snapshot:
            assert (await snapshot.execute(count)).scalar_one() == before + 1
    finally:
        await writer.dispose()


async def test_an_audit_that_cannot_reach_the_database_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A SQLite path inside a file: the database cannot be opened at all.
    (tmp_path / "not-a-directory").write_text("")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'not-a-directory' / 'db.sqlite'}")
    get_settings.cache_clear()
    try:
        result = await _audit()
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "the books could not be checked" in result.output


@pytest.mark.usefixtures("env")
async def test_a_grant_changed_behind_the_ledger_fails_and_is_named(db: Database) -> None:
    kept = await _keep_books(db)
    async with db.transaction() as s:
        grant_id = await s.scalar(
            text(
                "SELECT g.id FROM credit_grants g JOIN user_subscriptions s ON s.id = g.subscription_id "
                "WHERE s.user_id = :u AND g.category = 'promotional' AND g.remaining > 0"
            ),
            {"u": kept.spender_id},
        )
    await _sql(db, "UPDATE credit_grants SET remaining = remaining - 4 WHERE id = :g", g=grant_id)
    result = await _audit()
    assert result.exit_code == 1
    counts = _problems(result.output)
    assert (counts["grants"], counts["grant_ledger"], counts["balances"]) == (1, 1, 0)
    grants = f"grants: user {kept.spender_id}: balance 10 + 0 + 30 (plan + paid + promotional), grants 10 + 0 + 26"
    assert grants in result.output
    ledger = f"grant_ledger: user {kept.spender_id}: promotional grant {grant_id} has 26 credits left"
    assert f"{ledger}, its ledger rows sum to 30" in result.output
    run = await _last_run(db)
    assert run.checks["grant_ledger"] == 1


@pytest.mark.usefixtures("env")
async def test_promotional_credits_changed_behind_the_ledger_fail(db: Database) -> None:
    kept = await _keep_books(db)
    await _sql(
        db,
        "UPDATE user_subscriptions SET promotional_credits_remaining = promotional_credits_remaining + 3 "
        "WHERE user_id = :u",
        u=kept.spender_id,
    )
    result = await _audit()
    assert result.exit_code == 1
    counts = _problems(result.output)
    assert (counts["balances"], counts["balance_after"], counts["grants"], counts["grant_ledger"]) == (1, 1, 1, 0)
    assert f"balances: user {kept.spender_id}: balance 10 monthly + 0 purchased + 33 promotional, " in result.output
