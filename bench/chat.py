"""The chat path over HTTP: chats per second with the offline agent, beside the raw-SQL limit.

A real server (uvicorn, 2 workers, PostgreSQL, at most 16 pooled connections a
worker) serves ``POST /api/chat``; 64 clients, each logged in as its own user with a
large balance, send "hello" (the offline agent answers without calling a tool) in
their own conversation, one request at a time, and we measure chats per second and
the latency of one chat (p50/p99).

Beside it, the limit the database sets: an asyncpg loop (64 clients sharing 16
connections, lent per chat as a server's pool lends them) running the statements one
chat runs, in the same transactions, with nothing else: the session lookup; then the
conversation and history reads, the charge's four statements (``billing.charge_sql``)
and the user message INSERT; then the assistant message INSERT, the balance read and
the conversation UPDATE. (The low-credit email check reads nothing while the balance
is above the threshold, as it is here.)
The ratio http/raw says how much of a chat is our Python (FastAPI, SQLAlchemy, the
loop) rather than database work. Load generator, server and database share the
machine's cores, so absolute figures are the machine's, not the service's ceiling.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import Figures, free_port, scratch_postgres, server_env, wait_ready
from devops_agent.billing import charge_sql, credits
from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.catalog_sync import sync_catalog
from devops_agent.db import Database
from devops_agent.migrate import upgrade

CLIENTS = 64
WORKERS = 2
CHATS_PER_CLIENT = int(os.environ.get("BENCH_CHATS_PER_CLIENT", "30"))
# More connections than cores buys the raw loop nothing, and PostgreSQL's 100 are shared.
RAW_CONNECTIONS = 16
SERVER_POOL = 8
BALANCE = 1_000_000
MESSAGE = "hello"
ROOT = Path(__file__).resolve().parents[1]


def app_factory() -> Any:
    """The app for the bench's uvicorn workers: the service as configured, with a modest pool.

    Each worker lends at most ``2 * SERVER_POOL`` connections: enough for two cores, and
    PostgreSQL's 100 connections are shared with whatever else runs on the machine.
    """
    from devops_agent.config import get_settings
    from devops_agent.web.app import create_app

    settings = get_settings()
    return create_app(settings, database=Database(settings.database_url, pool_size=SERVER_POOL))


def _start_server(url: str, port: int, log_dir: Path) -> subprocess.Popen[bytes]:
    env = server_env(url, log_dir, CLOUD="sandbox")
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.chat:app_factory",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
        "--no-access-log",
        # Longer than the set-up phases: uvicorn's 5 s default closes idle keep-alive
        # connections while a client may be sending on them (a ReadError on the client).
        "--timeout-keep-alive",
        "120",
        "--log-level",
        os.environ.get("BENCH_SERVER_LOG_LEVEL", "warning"),
    ]
    # Output to a file, never a pipe nobody reads: a full pipe blocks the workers.
    with (log_dir / "server.out").open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


async def _clients(base: str, url: str) -> tuple[list[httpx.AsyncClient], list[int]]:
    """Register one user per client, then give each a balance that will not run out."""
    clients, user_ids = [], []
    for _ in range(CLIENTS):
        client = httpx.AsyncClient(base_url=base, timeout=60)
        name = f"b{uuid.uuid4().hex[:12]}"
        response = await client.post(
            "/api/auth/register", json={"username": name, "email": f"{name}@bench.local", "password": "bench-password"}
        )
        response.raise_for_status()
        client.headers["X-CSRF-Token"] = client.cookies["csrf_token"]
        clients.append(client)
        user_ids.append(int(response.json()["user"]["id"]))
    db = Database(url)
    async with db.transaction() as session:
        for user_id in user_ids:
            await credits.adjust(
                session, user_id=user_id, amount=BALANCE, reason="bench", admin_id=None, now=datetime.now(UTC)
            )
    await db.dispose()
    return clients, user_ids


async def _http_run(clients: list[httpx.AsyncClient]) -> tuple[Figures, list[int]]:
    """Each client: one chat to open its conversation (not timed), then the timed chats."""

    async def open_conversation(client: httpx.AsyncClient) -> int:
        first = await client.post("/api/chat", json={"message": MESSAGE})
        first.raise_for_status()
        return int(first.json()["conversation_id"])

    conversations = list(await asyncio.gather(*(open_conversation(c) for c in clients)))
    latencies: list[float] = []

    async def client_loop(client: httpx.AsyncClient, conversation_id: int) -> None:
        for _ in range(CHATS_PER_CLIENT):
            t = time.perf_counter()
            response = await client.post("/api/chat", json={"message": MESSAGE, "conversation_id": conversation_id})
            latencies.append((time.perf_counter() - t) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"chat answered {response.status_code}: {response.text}")

    start = time.perf_counter()
    await asyncio.gather(*(client_loop(c, cid) for c, cid in zip(clients, conversations, strict=True)))
    return Figures(len(clients) * CHATS_PER_CLIENT, time.perf_counter() - start, latencies), conversations


async def _raw_run(dsn: str, user_ids: list[int], conversations: list[int]) -> Figures:
    """The statements of one chat on bare asyncpg, 64 clients on 16 connections, nothing else."""
    pool = await asyncpg.create_pool(dsn, min_size=RAW_CONNECTIONS, max_size=RAW_CONNECTIONS)
    sql = charge_sql.POSTGRES
    latencies: list[float] = []
    reply = "[Offline agent] Hello! I can list and create EC2 instances, RDS databases and S3 buckets."

    async def loop(user_id: int, conversation_id: int) -> None:
        for _ in range(CHATS_PER_CLIENT):
            t = time.perf_counter()
            async with pool.acquire() as conn:  # per chat, as a server's pool lends them
                now = datetime.now(UTC)
                await conn.fetchrow("SELECT id, password_hash, is_suspended FROM users WHERE id = $1", user_id)
                async with conn.transaction():
                    await conn.fetchrow("SELECT * FROM conversations WHERE id = $1", conversation_id)
                    await conn.fetch(
                        "SELECT * FROM messages WHERE conversation_id = $1 ORDER BY id DESC LIMIT 20", conversation_id
                    )
                    row = await conn.fetchrow(sql["select"], user_id)
                    from_monthly = min(row["credits_remaining"], 1)
                    after = await conn.fetchrow(sql["update"], from_monthly, 1 - from_monthly, 1, now, row["id"])
                    usage_id = await conn.fetchval(
                        sql["usage"], user_id, conversation_id, "agent_message", None, 1, now
                    )
                    await conn.fetchval(
                        sql["ledger"],
                        row["id"],
                        user_id,
                        -from_monthly,
                        from_monthly - 1,
                        after[0],
                        after[1],
                        usage_id,
                        uuid.uuid4().hex,
                        now,
                    )
                    await conn.fetchval(
                        "INSERT INTO messages (conversation_id, user_id, role, content, created_at) "
                        "VALUES ($1, $2, 'user', $3, $4) RETURNING id",
                        conversation_id,
                        user_id,
                        MESSAGE,
                        now,
                    )
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO messages (conversation_id, user_id, role, content, tool_calls, created_at) "
                        "VALUES ($1, $2, 'assistant', $3, $4::json, $5)",
                        conversation_id,
                        user_id,
                        reply,
                        json.dumps([]),
                        now,
                    )
                    await conn.fetchrow(
                        "SELECT credits_remaining, purchased_credits_remaining FROM user_subscriptions "
                        "WHERE user_id = $1",
                        user_id,
                    )
                    await conn.execute("UPDATE conversations SET updated_at = $1 WHERE id = $2", now, conversation_id)
                # No low-credit email check: the balance stays far above the threshold.
                latencies.append((time.perf_counter() - t) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(loop(u, c) for u, c in zip(user_ids, conversations, strict=True)))
    elapsed = time.perf_counter() - start
    await pool.close()
    return Figures(len(user_ids) * CHATS_PER_CLIENT, elapsed, latencies)


async def run() -> dict[str, Any]:
    """Serve, load, measure; then the raw loop on the same database."""
    async with scratch_postgres("bench_chat") as url:
        db = Database(url)
        await upgrade(db)
        async with db.transaction() as session:
            await sync_catalog(session, load_catalog())
        await db.dispose()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        logs = Path(tempfile.mkdtemp(prefix="bench-chat-logs-"))
        server = _start_server(url, port, logs)
        try:
            await wait_ready(base, server, logs / "server.out")
            clients, user_ids = await _clients(base, url)
            try:
                http, conversations = await _http_run(clients)
            finally:
                for client in clients:
                    await client.aclose()
        except Exception as exc:
            raise RuntimeError(f"the chat bench failed; the server's logs are in {logs}") from exc
        finally:
            server.terminate()
            server.wait(timeout=60)
        shutil.rmtree(logs, ignore_errors=True)
        raw = await _raw_run(url, user_ids, conversations)
    return {
        "chat_path": {
            "clients": CLIENTS,
            "workers": WORKERS,
            "chats_per_client": CHATS_PER_CLIENT,
            "http": http.as_dict(),
            "raw": raw.as_dict(),
            "ratio": round(http.per_second / raw.per_second, 3) if raw.per_second else None,
        }
    }


def report(results: dict[str, Any]) -> list[str]:
    r = results["chat_path"]
    h, w = r["http"], r["raw"]
    return [
        f"Chat path: POST /api/chat 'hello', offline agent, no tools; {r['workers']} uvicorn workers, "
        f"PostgreSQL, {r['clients']} concurrent clients",
        f"{'':<22}{'chats/s':>9}{'p50 ms':>9}{'p99 ms':>9}",
        f"{'HTTP (the service)':<22}{h['per_second']:>9.0f}{h['p50_ms']:>9.1f}{h['p99_ms']:>9.1f}",
        f"{'raw SQL (asyncpg)':<22}{w['per_second']:>9.0f}{w['p50_ms']:>9.1f}{w['p99_ms']:>9.1f}",
        f"ratio http/raw: {r['ratio']:.2f}",
    ]
