"""Interrupted chat turns: cancelled, abandoned by the client, or left by a dead process.

The model endpoint is the real Claude backend pointed at the local Messages API server,
scripted to hang. A turn in flight has charged its message; whatever interrupts it,
the credits come back exactly once (one refund ledger row per charge) and the same
``Idempotency-Key`` then gets a real reply. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from typer.testing import CliRunner

from devops_agent import billing
from devops_agent.agent import turns
from devops_agent.agent.backends.claude import ClaudeBackend
from devops_agent.agent.models import Message
from devops_agent.agent.service import AgentRuntime
from devops_agent.billing.models import CreditLedger, LedgerKind, UserSubscription
from devops_agent.billing.periods import utcnow
from devops_agent.cli import app as cli_app
from devops_agent.db import Database
from devops_agent.web.security import CSRF_COOKIE
from tests.agent.fake_anthropic import FakeAnthropic, hang, text_reply, tool_use
from tests.web.conftest import MovableClock, build_app, make_client, register


@pytest.fixture
def app(db: Database, tmp_path: Path, runtime: AgentRuntime, anthropic_server: FakeAnthropic) -> FastAPI:
    app = build_app(db, tmp_path)
    backend = ClaudeBackend(api_key="sk-test", model="claude-test", base_url=anthropic_server.url, max_retries=0)
    # A lease of an hour: no renewal happens during a test; tests move the clock past it.
    app.state.agent_runtime = dataclasses.replace(runtime, backend=backend, turn_lease=timedelta(hours=1))
    return app


@pytest.fixture
async def client(app: FastAPI) -> Any:
    async with make_client(app) as c:
        yield c


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait (on a busy machine, generously) for something another task or thread does."""
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def books(db: Database, user_id: int) -> tuple[int, list[str]]:
    """The user's balance (checked against the ledger's sums) and the kinds of their ledger rows."""
    async with db.transaction() as session:
        sub = (await session.execute(select(UserSubscription).where(UserSubscription.user_id == user_id))).scalar_one()
        sums = await billing.ledger_sums(session, subscription_id=sub.id)
        assert sums == billing.Balance.of(sub)
        kinds = (
            await session.execute(
                select(CreditLedger.kind).where(CreditLedger.subscription_id == sub.id).order_by(CreditLedger.id)
            )
        ).scalars()
        return sub.balance, list(kinds)


async def refunds_per_charge(db: Database, user_id: int) -> dict[int, int]:
    """For each usage log the user was charged for: how many refund rows it has."""
    async with db.transaction() as session:
        charged = (
            await session.execute(
                select(CreditLedger.usage_log_id).where(
                    CreditLedger.user_id == user_id, CreditLedger.kind == LedgerKind.CHARGE.value
                )
            )
        ).scalars()
        counts = {int(u): 0 for u in charged}
        refunded = await session.execute(
            select(CreditLedger.usage_log_id, func.count())
            .where(CreditLedger.user_id == user_id, CreditLedger.kind == LedgerKind.REFUND.value)
            .group_by(CreditLedger.usage_log_id)
        )
        counts.update({int(u): int(n) for u, n in refunded.all()})
        return counts


async def test_a_cancelled_chat_refunds_and_its_key_answers_afterwards(
    client: httpx.AsyncClient, db: Database, anthropic_server: FakeAnthropic
) -> None:
    anthropic_server.script(tool_use("get_ec2_instances", {}), hang())
    user = await register(client)
    headers = {"Idempotency-Key": "cancelled-1"}
    request = asyncio.create_task(client.post("/api/chat", json={"message": "hello"}, headers=headers))
    await until(lambda: len(anthropic_server.requests) == 2, "the model was asked again after the tool call")
    assert (await books(db, user["id"]))[0] == 18  # the message and the tool call, charged before they ran
    request.cancel()  # what a shutdown does to a request still running after the grace period
    with pytest.raises(asyncio.CancelledError):
        await request
    charged_and_refunded = ["monthly_grant", "charge", "charge", "refund", "refund"]
    assert await books(db, user["id"]) == (20, charged_and_refunded)
    assert sorted((await refunds_per_charge(db, user["id"])).values()) == [1, 1]
    anthropic_server.release()

    anthropic_server.script(text_reply("Here is your answer."))
    again = await client.post("/api/chat", json={"message": "hello"}, headers=headers)
    assert again.status_code == 200, again.text
    assert (again.json()["response"], again.json()["credits_remaining"]) == ("Here is your answer.", 19)
    assert await books(db, user["id"]) == (19, [*charged_and_refunded, "charge"])
    replayed = await client.post("/api/chat", json={"message": "hello"}, headers=headers)
    assert replayed.json() == again.json()
    conversation = (await client.get(f"/api/conversations/{again.json()['conversation_id']}")).json()
    assert [m["role"] for m in conversation["messages"]] == ["user", "assistant", "assistant"]
    assert conversation["messages"][1]["content"] == turns.INTERRUPTED_NOTE


async def _hang_up_while_waiting(
    app: FastAPI, client: httpx.AsyncClient, db: Database, anthropic_server: FakeAnthropic, path: str, payload: Any
) -> None:
    """The ASGI conversation of a client that sends its request to ``path``, then hangs up
    while the model thinks: the turn is cancelled and its credit refunded, nothing answered."""
    user_id = client.user_id  # type: ignore[attr-defined]
    balance, kinds = await books(db, user_id)
    body = json.dumps(payload).encode()
    hung_up = asyncio.Event()
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await hung_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cookie", cookie.encode()),
            (b"x-csrf-token", client.cookies[CSRF_COOKIE].encode()),
            (b"idempotency-key", b"gone-1"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asked = len(anthropic_server.requests)
    call = asyncio.create_task(app(scope, receive, send))
    await until(lambda: len(anthropic_server.requests) == asked + 1, "the model was asked")
    assert (await books(db, user_id))[0] == balance - 1
    hung_up.set()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not sent  # nobody to answer
    assert await books(db, user_id) == (balance, [*kinds, "charge", "refund"])


async def test_a_client_that_disconnects_gets_its_credit_back(
    app: FastAPI, client: httpx.AsyncClient, db: Database, anthropic_server: FakeAnthropic
) -> None:
    anthropic_server.script(hang())
    client.user_id = (await register(client))["id"]  # type: ignore[attr-defined]
    await _hang_up_while_waiting(app, client, db, anthropic_server, "/api/chat", {"message": "hello"})
    anthropic_server.release()

    anthropic_server.script(text_reply("Still here."))
    again = await client.post("/api/chat", json={"message": "hello"}, headers={"Idempotency-Key": "gone-1"})
    assert (again.status_code, again.json()["credits_remaining"]) == (200, 19)


async def test_a_template_run_whose_client_disconnects_is_refunded_too(
    app: FastAPI, client: httpx.AsyncClient, db: Database, anthropic_server: FakeAnthropic
) -> None:
    """A saved template runs as a chat does, down to its cancellation."""
    anthropic_server.script(hang())
    client.user_id = (await register(client))["id"]  # type: ignore[attr-defined]
    tiers = (await client.get("/api/subscription/tiers")).json()["tiers"]
    professional = next(t["id"] for t in tiers if t["name"] == "professional")
    assert (await client.post("/api/subscription/upgrade", json={"tier_id": professional})).status_code == 200
    created = await client.post("/api/templates", json={"name": "greeting", "prompt": "hello"})
    assert created.status_code == 201, created.text
    path = f"/api/templates/{created.json()['template']['id']}/run"
    await _hang_up_while_waiting(app, client, db, anthropic_server, path, {"params": {}})
    anthropic_server.release()


async def _hung_turns(
    app: FastAPI, anthropic_server: FakeAnthropic, count: int
) -> tuple[list[httpx.AsyncClient], list[dict[str, Any]], list[asyncio.Task[httpx.Response]]]:
    """``count`` users, each with a keyed chat that ran a tool call (1 credit) and then hangs."""
    clients = [make_client(app) for _ in range(count)]
    users = [await register(c) for c in clients]
    originals = []
    for i, c in enumerate(clients):
        anthropic_server.script(tool_use("get_ec2_instances", {}), hang("too late"))
        originals.append(
            asyncio.create_task(c.post("/api/chat", json={"message": "hello"}, headers={"Idempotency-Key": f"k{i}"}))
        )
        await until(lambda: len(anthropic_server.requests) == 2, "the model was asked after the tool call")
    return clients, users, originals


async def test_an_expired_turn_is_refunded_once_when_recover_and_the_retry_race(
    app: FastAPI, db: Database, anthropic_server: FakeAnthropic
) -> None:
    clients, users, originals = await _hung_turns(app, anthropic_server, 4)
    clock: MovableClock = app.state.clock
    busy = await clients[0].post("/api/chat", json={"message": "hello"}, headers={"Idempotency-Key": "k0"})
    assert (busy.status_code, busy.json()["error"]) == (409, "conflict")  # the lease still runs
    clock.advance(hours=2)  # the leases have run out (as if those processes had died)

    anthropic_server.script(*(text_reply("A fresh answer.") for _ in range(4)))
    recovered, *retries = await asyncio.gather(
        turns.recover_expired(db, now=clock()),
        *(
            c.post("/api/chat", json={"message": "hello"}, headers={"Idempotency-Key": f"k{i}"})
            for i, c in enumerate(clients)
        ),
    )
    assert [(r.status_code, r.json().get("response")) for r in retries] == [(200, "A fresh answer.")] * 4
    assert {r.user_id for r in recovered} <= {u["id"] for u in users}

    anthropic_server.release()  # the first requests' model calls answer at last: too late
    late = await asyncio.gather(*originals)
    assert {(r.status_code, r.json()["error"]) for r in late} == {(502, "agent_unavailable")}
    for user in users:  # the dead attempt's charges (message, tool) refunded once each, the fresh one paid
        assert sorted((await refunds_per_charge(db, user["id"])).values()) == [0, 1, 1]
        assert (await books(db, user["id"]))[0] == 19
    for c in clients:
        await c.aclose()


async def test_recover_command_refunds_expired_turns_and_says_so(
    app: FastAPI, db: Database, anthropic_server: FakeAnthropic, env: str
) -> None:
    clients, users, originals = await _hung_turns(app, anthropic_server, 2)
    # The command reads the real clock: months after the test clock's leases ran out.
    runner = CliRunner()
    result = await asyncio.to_thread(runner.invoke, cli_app, ["recover"])
    assert result.exit_code == 0, result.output
    assert "Refunded 2 interrupted chat turn(s): 4 credit(s) back." in result.output
    # Refunded months after their period ended: the account's reset comes first (the
    # period's leftover expires, a new period's 20 arrive), and each turn's credits come
    # back to their plan grant, which has ended, so they expire at once instead of being revived.
    kinds = ["monthly_grant", "charge", "charge", "expiry", "monthly_grant", "refund", "expiry", "refund", "expiry"]
    for user in users:
        assert await books(db, user["id"]) == (20, kinds)
    again = await asyncio.to_thread(runner.invoke, cli_app, ["recover"])
    assert "Refunded 0 interrupted chat turn(s)" in again.output
    anthropic_server.release()
    await asyncio.gather(*originals, return_exceptions=True)
    for user in users:
        assert (await books(db, user["id"]))[0] == 20
    for c in clients:
        await c.aclose()


async def _lease_of(db: Database, key: str) -> datetime:
    async with db.transaction() as session:
        lease = await session.scalar(select(Message.lease_expires_at).where(Message.idempotency_key == key))
    assert lease is not None
    return lease


async def test_a_living_turn_renews_its_lease_and_keeps_its_key(
    app: FastAPI, client: httpx.AsyncClient, db: Database, anthropic_server: FakeAnthropic
) -> None:
    app.state.clock = utcnow  # the renewals follow the real clock here
    app.state.agent_runtime = dataclasses.replace(app.state.agent_runtime, turn_lease=timedelta(seconds=3))
    anthropic_server.script(hang())
    user = await register(client)
    headers = {"Idempotency-Key": "slow-but-alive"}
    request = asyncio.create_task(client.post("/api/chat", json={"message": "hello"}, headers=headers))
    await until(lambda: len(anthropic_server.requests) == 1, "the model was asked")
    first = await _lease_of(db, "slow-but-alive")
    for _ in range(600):  # renewed every third of the lease
        if await _lease_of(db, "slow-but-alive") > first:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the lease was never renewed")
    await until(lambda: utcnow() > first, "the first lease is over")  # a retry would take an unrenewed turn
    busy = await client.post("/api/chat", json={"message": "hello"}, headers=headers)
    assert (busy.status_code, busy.json()["error"]) == (409, "conflict")
    assert (await books(db, user["id"]))[0] == 19
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    anthropic_server.release()
    assert (await books(db, user["id"]))[0] == 20
