"""A real server process (``python app.py``) whose model endpoint hangs: a client hangs up, it stops, it is killed.

The Claude backend points at the local Messages API server, scripted to never answer.
A client that goes away gets its credit back at once, and so does a chat that a
shutdown cancels after its grace period. A process killed during the model call
leaves its turn leased; once the lease (2 s here) has run out, a retry with the same
``Idempotency-Key`` on a new process refunds it once and answers. The books balance
afterwards. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from devops_agent import billing
from devops_agent.billing.models import CreditLedger, UserSubscription
from devops_agent.db import Database
from devops_agent.web.security import CSRF_COOKIE
from tests.agent.fake_anthropic import FakeAnthropic, hang, text_reply
from tests.web.conftest import SQLITE_ONLY

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a-real-password-123"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _eventually(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 60) -> None:
    """Poll ``check`` (a busy machine may take a while); fail if it never holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def server(
    workdir: Path, database_url: str, model_url: str
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "LOG_DIR": str(workdir / "logs"),
        "SECRET_KEY": "a-test-secret-key-for-both-processes",
        "ANTHROPIC_API_KEY": "sk-test",
        "ANTHROPIC_BASE_URL": model_url,
        "CHAT_TURN_LEASE_SECONDS": "2",
    }
    with (workdir / f"server-{port}.out").open("w") as output:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")], cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        base_url = f"http://127.0.0.1:{port}"

        async def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"server exited:\n{(workdir / f'server-{port}.out').read_text()}")
            try:
                async with httpx.AsyncClient() as c:
                    return (await c.get(f"{base_url}/readyz", timeout=2)).status_code == 200
            except httpx.TransportError:
                return False

        try:
            await _eventually(ready, "the server answers /readyz")
            yield process, base_url
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


async def _balance(client: httpx.AsyncClient) -> int:
    return int((await client.get("/api/usage/stats")).json()["credits_remaining"])


async def test_hung_model_calls_a_client_that_hangs_up_and_a_killed_server(
    db: Database, database_url: str, tmp_path: Path, anthropic_server: FakeAnthropic
) -> None:
    anthropic_server.script(hang())
    async with server(tmp_path, database_url, anthropic_server.url) as (first, base_url):
        client = httpx.AsyncClient(base_url=base_url, timeout=30)
        registered = await client.post(
            "/api/auth/register", json={"username": "patient", "email": "patient@example.com", "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        user_id = registered.json()["user"]["id"]
        client.headers["X-CSRF-Token"] = client.cookies[CSRF_COOKIE]

        # 1. The client hangs up while the model thinks: its credit comes back at once.
        hung_up = asyncio.create_task(
            client.post("/api/chat", json={"message": "hello"}, headers={"Idempotency-Key": "gone"})
        )
        await _eventually(lambda: _true(len(anthropic_server.requests) == 1), "the model was asked")
        assert await _balance(client) == 19
        hung_up.cancel()  # closes the connection
        with contextlib.suppress(asyncio.CancelledError):
            await hung_up
        await _eventually(lambda: _is(_balance(client), 20), "the credit of the abandoned turn came back")

        # 2. The process dies during the model call.
        anthropic_server.script(hang())
        killed = asyncio.create_task(
            client.post("/api/chat", json={"message": "hello"}, headers={"Idempotency-Key": "killed"})
        )
        await _eventually(lambda: _true(len(anthropic_server.requests) == 1), "the model was asked")
        assert await _balance(client) == 19
        first.send_signal(signal.SIGKILL)
        first.wait()
        with contextlib.suppress(httpx.TransportError):
            await killed
        await client.aclose()

    anthropic_server.script(text_reply("Back again."))
    async with (
        server(tmp_path, database_url, anthropic_server.url) as (_, base_url),
        httpx.AsyncClient(base_url=base_url, timeout=30, cookies=client.cookies) as again,
    ):
        again.headers["X-CSRF-Token"] = client.cookies[CSRF_COOKIE]
        retried: list[httpx.Response] = []

        async def answered() -> bool:  # 409 while the dead turn's lease still runs
            retried.append(
                await again.post("/api/chat", json={"message": "hello"}, headers={"Idempotency-Key": "killed"})
            )
            return retried[-1].status_code != 409

        await _eventually(answered, "the retry is answered once the lease has run out")
        assert retried[-1].status_code == 200, retried[-1].text
        assert (retried[-1].json()["response"], retried[-1].json()["credits_remaining"]) == ("Back again.", 19)
    anthropic_server.release()

    async with db.transaction() as session:
        sub = (await session.execute(select(UserSubscription).where(UserSubscription.user_id == user_id))).scalar_one()
        sums = await billing.ledger_sums(session, subscription_id=sub.id)
        assert (sums.monthly, sums.purchased, sub.balance) == (
            sub.credits_remaining,
            sub.purchased_credits_remaining,
            19,
        )
        kinds = (
            await session.execute(
                select(CreditLedger.kind).where(CreditLedger.subscription_id == sub.id).order_by(CreditLedger.id)
            )
        ).scalars()
        assert list(kinds) == ["monthly_grant", "charge", "refund", "charge", "refund", "charge"]


async def _true(value: bool) -> bool:
    return value


async def _is(balance: Awaitable[int], expected: int) -> bool:
    return await balance == expected


@SQLITE_ONLY  # uvicorn's shutdown is the same on both; it waits its whole grace period (20 s)
async def test_a_shutdown_that_cancels_a_hung_chat_refunds_it_before_the_process_exits(
    db: Database, database_url: str, tmp_path: Path, anthropic_server: FakeAnthropic
) -> None:
    anthropic_server.script(hang())
    async with server(tmp_path, database_url, anthropic_server.url) as (process, base_url):
        client = httpx.AsyncClient(base_url=base_url, timeout=60)
        registered = await client.post(
            "/api/auth/register", json={"username": "stopped", "email": "stopped@example.com", "password": PASSWORD}
        )
        user_id = registered.json()["user"]["id"]
        client.headers["X-CSRF-Token"] = client.cookies[CSRF_COOKIE]
        chat = asyncio.create_task(
            client.post("/api/chat", json={"message": "hello"}, headers={"Idempotency-Key": "stopped"})
        )
        await _eventually(lambda: _true(len(anthropic_server.requests) == 1), "the model was asked")
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait)  # uvicorn waits for the chat, then cancels it
        with contextlib.suppress(httpx.TransportError):
            await chat
        await client.aclose()
    anthropic_server.release()

    async with db.transaction() as session:
        sub = (await session.execute(select(UserSubscription).where(UserSubscription.user_id == user_id))).scalar_one()
        kinds = (
            await session.execute(
                select(CreditLedger.kind).where(CreditLedger.subscription_id == sub.id).order_by(CreditLedger.id)
            )
        ).scalars()
        assert (sub.balance, list(kinds)) == (20, ["monthly_grant", "charge", "refund"])
