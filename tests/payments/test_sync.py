"""`devops-agent stripe sync`: one Product and Price per paid tier and per pack, idempotently."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from decimal import Decimal

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from typer.testing import CliRunner

from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.models import SubscriptionTier
from devops_agent.cli import app as cli
from devops_agent.config import get_settings
from devops_agent.db import Database
from devops_agent.payments.models import StripePrice
from devops_agent.payments.stripe_client import make_client
from devops_agent.payments.sync import sync_prices
from tests.factories import T0
from tests.payments.conftest import stripe_settings
from tests.payments.edge import Edge

SQLITE_ONLY = pytest.mark.parametrize("db", ["sqlite"], indirect=True)


@SQLITE_ONLY  # the database part is two plain tables; Stripe is the same either way
async def test_sync_creates_once_then_only_what_changed(db: Database, stripe_app: FastAPI, edge: Edge) -> None:
    client = make_client(stripe_app.state.settings)
    catalog = load_catalog()

    first = await sync_prices(db, client, catalog, now=T0)
    again = await sync_prices(db, client, catalog, now=T0)
    dearer = dataclasses.replace(catalog.packs[1], price=Decimal("22.00"))
    edited = dataclasses.replace(catalog, packs=(catalog.packs[0], dearer, *catalog.packs[2:]))
    changed = await sync_prices(db, client, edited, now=T0)

    assert [line.split()[0] for line in first] == ["created"] * 9  # 3 paid tiers + 2 seat prices + 4 packs
    assert [line.split()[0] for line in again] == ["unchanged"] * 9
    assert [line.split()[:3] for line in changed if not line.startswith("unchanged")] == [["updated", "pack", "250:"]]
    assert len(edge.posted("/v1/products")) == 9
    assert len(edge.posted("/v1/prices")) == 10
    assert all(r.idempotency_key for r in edge.posted("/v1/prices") + edge.posted("/v1/products"))
    async with db.transaction() as session:
        tiers = {t.name: t.stripe_price_id for t in (await session.execute(select(SubscriptionTier))).scalars()}
        current = (
            await session.execute(
                select(StripePrice.unit_amount).where(
                    StripePrice.kind == "pack", StripePrice.key == "250", StripePrice.is_current.is_(True)
                )
            )
        ).scalar_one()
    assert tiers["free"] is None
    assert all(tiers[name] in edge.prices for name in ("starter", "professional", "business"))
    assert edge.prices[tiers["starter"]]["recurring"] == {"interval": "month"}
    assert current == 2200


@pytest.fixture
def stripe_env(monkeypatch: pytest.MonkeyPatch, database_url: str, edge: Edge) -> Iterator[None]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    for name, value in stripe_settings(edge).items():
        monkeypatch.setenv(name.upper(), value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@SQLITE_ONLY
def test_sync_command_prints_what_it_did(stripe_env: None) -> None:
    runner = CliRunner()

    first = runner.invoke(cli, ["stripe", "sync"])
    second = runner.invoke(cli, ["stripe", "sync"])

    assert first.exit_code == second.exit_code == 0, first.output
    assert "created    tier starter" in first.output
    assert "$19.00" in first.output
    assert second.output.count("unchanged") == 9


@SQLITE_ONLY
def test_sync_command_without_a_key_says_so(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["stripe", "sync"])
    finally:
        get_settings.cache_clear()

    assert result.exit_code == 1
    assert "STRIPE_SECRET_KEY" in result.output
