"""`devops-agent init`: migrations, catalog sync, idempotency, catalog edits (Typer's runner)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from devops_agent.billing.catalog import DEFAULT_PRICING_FILE
from devops_agent.billing.models import SubscriptionTier, User, UserSubscription
from devops_agent.billing.periods import utcnow
from devops_agent.cli import app
from devops_agent.config import get_settings
from devops_agent.db import Database

runner = CliRunner()

ENTERPRISE = """
[[tiers]]
name = "enterprise"
display_name = "Enterprise"
monthly_price = "499.00"
monthly_credits = 10000
description = "For large organizations"
features = ["10,000 agent actions per month", "White-label option", "SSO integration"]
entitlements = ["api_access", "usage_analytics", "advanced_analytics",
                "team_collaboration", "custom_templates", "compliance_reports"]
"""


def _query(url: str, stmt):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        db = Database(url)
        try:
            async with db.transaction() as s:
                return (await s.execute(stmt)).all()
        finally:
            await db.dispose()

    return asyncio.run(go())


def _invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_init_is_idempotent_and_opens_missing_accounts(env: str) -> None:
    out = _invoke("init")
    assert "Nothing to change" in out  # the test database is already migrated and seeded
    assert "Starter" in out
    assert "$19.00" in out
    asyncio.run(_insert_legacy_user(env))
    out = _invoke("init")
    assert "Users moved to the Free tier: 1" in out
    rows = _query(env, select(UserSubscription.credits_remaining))
    assert rows == [(20,)]
    assert "Nothing to change" in _invoke("init")


async def _insert_legacy_user(url: str) -> None:
    db = Database(url)
    try:
        async with db.transaction() as s:
            s.add(
                User(
                    username="legacy",
                    email="legacy@example.com",
                    password_hash="x",
                    is_admin=False,
                    is_suspended=False,
                    email_opt_out=False,
                    created_at=utcnow(),
                )
            )
    finally:
        await db.dispose()


def test_catalog_edit_adds_enterprise_and_deactivates_removed_tier(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = DEFAULT_PRICING_FILE.read_text() + ENTERPRISE
    pricing = tmp_path / "pricing.toml"
    pricing.write_text(text)
    monkeypatch.setenv("PRICING_FILE", str(pricing))
    get_settings.cache_clear()
    out = _invoke("init")
    assert "Tiers created: enterprise" in out
    assert "$499.00" in out

    # Drop Business from the file: it is deactivated, not deleted.
    start = text.index('name = "business"')
    block_start = text.rindex("[[tiers]]", 0, start)
    block_end = text.index("[[packs]]", start)
    pricing.write_text(text[:block_start] + text[block_end:])
    out = _invoke("init")
    assert "Tiers deactivated: business" in out
    rows = dict(_query(env, select(SubscriptionTier.name, SubscriptionTier.is_active)))
    assert rows["business"] is False
    assert rows["enterprise"] is True


def test_bad_pricing_file_is_refused_with_a_clear_message(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pricing = tmp_path / "pricing.toml"
    pricing.write_text('[[tiers]]\nname = "pro"\nmonthly_price = "-1"\nmonthly_credits = 5\n')
    monkeypatch.setenv("PRICING_FILE", str(pricing))
    get_settings.cache_clear()
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 1
    assert "must be a non-negative amount" in result.output


def test_init_refuses_a_pricing_file_naming_no_tool(env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pricing = tmp_path / "pricing.toml"
    pricing.write_text(DEFAULT_PRICING_FILE.read_text().replace("create_rds_instance = 5", "create_rds_instace = 5"))
    monkeypatch.setenv("PRICING_FILE", str(pricing))
    get_settings.cache_clear()
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 1
    assert "[costs] names no tool: create_rds_instace" in result.output
