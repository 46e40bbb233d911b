"""Purchases and upgrades whose ``Idempotency-Key`` a dead process left "in progress".

A process killed during the work leaves its reservation without an answer. While its
lease runs, a retry is told to wait (409); once it has run out, the retry runs the work
again, which is safe: when the dead process's purchase or upgrade had committed, the
retry finds it and answers it (one purchase, one grant); when it had not, the retry
makes it. ``devops-agent recover`` releases such keys for retries to come.

Each test builds what the dead process left: its reservation (the record it inserted
before the work) and, where the crash came after the commit, the effect itself made
by the real gateway with the same key.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from typer.testing import CliRunner

from devops_agent import billing
from devops_agent.billing.models import CreditLedger, CreditPurchase, LedgerKind, User, UserSubscription
from devops_agent.cli import app as cli_app
from devops_agent.db import Database
from devops_agent.web.idempotency import fingerprint
from devops_agent.web.models import IdempotencyRecord
from tests.web.conftest import MovableClock, register

LEASE = timedelta(seconds=120)  # the default IDEMPOTENCY_LEASE_SECONDS


async def _left_in_progress(db: Database, *, user_id: int, key: str, path: str, body: dict[str, Any], at: Any) -> None:
    async with db.transaction() as session:
        session.add(
            IdempotencyRecord(user_id=user_id, key=key, fingerprint=fingerprint("POST", path, body), created_at=at)
        )


async def _count(db: Database, model: Any, *where: Any) -> int:
    async with db.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def _books_balance(db: Database, user_id: int) -> int:
    async with db.transaction() as session:
        sub = (await session.execute(select(UserSubscription).where(UserSubscription.user_id == user_id))).scalar_one()
        sums = await billing.ledger_sums(session, subscription_id=sub.id)
        assert sums == billing.Balance.of(sub)
        return sub.balance


@pytest.mark.parametrize("committed", [True, False], ids=["effect-committed", "effect-lost"])
async def test_a_purchase_left_in_progress_is_answered_once_after_its_lease(
    app: FastAPI, client: httpx.AsyncClient, db: Database, committed: bool
) -> None:
    user = await register(client)
    clock: MovableClock = app.state.clock
    started = clock()
    headers = {"Idempotency-Key": "buy-then-crash"}
    await _left_in_progress(
        db, user_id=user["id"], key="buy-then-crash", path="/api/credits/purchase", body={"pack_size": 250}, at=started
    )
    if committed:  # the dead process's purchase had committed before it died
        async with db.transaction() as session:
            buyer = await session.get(User, user["id"])
        assert buyer is not None
        pack = app.state.catalog.require_pack(250)
        await app.state.gateway.purchase_pack(db, user=buyer, pack=pack, idempotency_key="buy-then-crash", now=started)

    waiting = await client.post("/api/credits/purchase", json={"pack_size": 250}, headers=headers)
    assert (waiting.status_code, waiting.json()["error"]) == (409, "conflict")  # the lease still runs

    clock.advance(seconds=LEASE.total_seconds() + 1)
    retried = await client.post("/api/credits/purchase", json={"pack_size": 250}, headers=headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()["credits_remaining"] == 270
    assert await _count(db, CreditPurchase) == 1
    assert await _count(db, CreditLedger, CreditLedger.kind == LedgerKind.PURCHASE.value) == 1
    assert await _books_balance(db, user["id"]) == 270
    replayed = await client.post("/api/credits/purchase", json={"pack_size": 250}, headers=headers)
    assert replayed.json() == retried.json()
    assert replayed.headers["Idempotent-Replayed"] == "true"


async def test_concurrent_retries_of_an_expired_purchase_buy_once(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    user = await register(client)
    clock: MovableClock = app.state.clock
    await _left_in_progress(
        db, user_id=user["id"], key="k", path="/api/credits/purchase", body={"pack_size": 100}, at=clock()
    )
    clock.advance(seconds=LEASE.total_seconds() + 1)
    responses = await asyncio.gather(
        *(
            client.post("/api/credits/purchase", json={"pack_size": 100}, headers={"Idempotency-Key": "k"})
            for _ in range(4)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 1
    assert set(statuses) <= {200, 409}
    assert await _count(db, CreditPurchase) == 1
    assert await _books_balance(db, user["id"]) == 120


async def test_an_upgrade_that_committed_before_the_crash_is_answered_not_applied_twice(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    user = await register(client)
    tiers = (await client.get("/api/subscription/tiers")).json()["tiers"]
    pro = next(t for t in tiers if t["monthly_credits"] > 20)
    clock: MovableClock = app.state.clock
    started = clock()
    body = {"tier_id": pro["id"]}
    await _left_in_progress(db, user_id=user["id"], key="up-1", path="/api/subscription/upgrade", body=body, at=started)
    async with db.transaction() as session:
        buyer = await session.get(User, user["id"])
        tier = await billing.tier_by_id(session, pro["id"])
    assert buyer is not None
    await app.state.gateway.change_plan(db, user=buyer, tier=tier, idempotency_key="up-1", now=started)
    grants = await _count(db, CreditLedger, CreditLedger.kind == LedgerKind.MONTHLY_GRANT.value)

    clock.advance(seconds=LEASE.total_seconds() + 1)
    retried = await client.post("/api/subscription/upgrade", json=body, headers={"Idempotency-Key": "up-1"})
    assert retried.status_code == 200, retried.text
    assert retried.json()["subscription"]["tier"]["id"] == pro["id"]
    assert retried.json()["message"].startswith(f"Upgraded to {pro['display_name']}")
    assert await _count(db, CreditLedger, CreditLedger.kind == LedgerKind.MONTHLY_GRANT.value) == grants
    assert await _books_balance(db, user["id"]) == pro["monthly_credits"]


async def test_recover_releases_keys_left_in_progress_past_their_lease(
    app: FastAPI, client: httpx.AsyncClient, db: Database, env: str
) -> None:
    user = await register(client)
    clock: MovableClock = app.state.clock
    # The command reads the real clock: the first record's lease (from the test clock's T0) ran out long ago.
    await _left_in_progress(
        db, user_id=user["id"], key="old", path="/api/credits/purchase", body={"pack_size": 100}, at=clock()
    )
    await _left_in_progress(
        db,
        user_id=user["id"],
        key="new",
        path="/api/credits/purchase",
        body={"pack_size": 100},
        at=clock() + timedelta(days=3650),
    )
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, ["recover"])
    assert result.exit_code == 0, result.output
    assert "Released 1 Idempotency-Key(s) left in progress" in result.output
    assert await _count(db, IdempotencyRecord) == 1
    retried = await client.post("/api/credits/purchase", json={"pack_size": 100}, headers={"Idempotency-Key": "old"})
    assert (retried.status_code, retried.json()["credits_remaining"]) == (200, 120)
