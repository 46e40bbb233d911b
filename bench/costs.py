"""Where a chat's time goes: the server's own time per request, split by layer.

wrk (``bench.wrk``) says how many chats a second the server answers; this section says
why that many. The app is driven through ASGI directly, in one process, with no HTTP
and no client (so the figures are the server's alone), eight requests at a time:

* ``chat_us``: ``POST /api/chat`` (offline agent, a new conversation), as in wrk;
* ``tiers_us``: ``GET /api/subscription/tiers``, wrk's H, FastAPI's own floor;
* ``statements``: the SQL statements one chat runs (counted with SQLAlchemy's
  ``before_cursor_execute``); ``transactions`` and ``lone_reads``: the contexts it opens;
* ``transaction_us``: an empty ``Database.transaction()`` (lock, connection, BEGIN,
  session, COMMIT), ``lone_read_us``: an empty ``Database.lone_reads()``;
* ``statement_us``: one primary-key SELECT through SQLAlchemy (Core, the session's
  connection), beside ``driver_statement_us``, the same SQL on the driver's connection;
* ``commit_us``: a transaction with one UPDATE (a COMMIT that writes; measured alike on
  SQLite with ``synchronous`` FULL and OFF here, so not the fsync's).

``layers_us`` adds them up: the database layer's share of a chat (its transactions
and statements at these prices) and what is left for the rest of our code and
FastAPI. Run with ``python -m bench costs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event, select, update

from bench.common import scratch_postgres
from devops_agent import billing
from devops_agent.billing.models import UserSubscription
from devops_agent.config import Settings
from devops_agent.db import Database, driver_sqlite_connection
from devops_agent.web.app import create_app

CONCURRENT = 8
ROUNDS = 5
PER_ROUND = 400


async def _mean_us(work: Callable[[], Awaitable[Any]], *, concurrent: int = 1) -> float:
    """The fastest round's mean time per call, in microseconds (after a warm-up)."""
    for _ in range(100):
        await work()
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(PER_ROUND // concurrent):
            await asyncio.gather(*(work() for _ in range(concurrent)))
        best = min(best, (time.perf_counter() - started) / PER_ROUND * 1e6)
    return round(best, 1)


class _Asgi:
    """Requests straight into the ASGI app: the server's work without HTTP or a client."""

    def __init__(self, app: Any, cookie: str, csrf: str) -> None:
        self.app = app
        self.auth = [(b"cookie", cookie.encode()), (b"x-csrf-token", csrf.encode())]

    async def call(self, method: str, path: str, body: bytes = b"") -> None:
        headers = [(b"host", b"bench"), *self.auth]
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("bench", 80),
            "state": {},
        }
        delivered = False
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client stays: no disconnect
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await self.app(scope, receive, send)
        if statuses != [200]:
            raise RuntimeError(f"{method} {path} answered {statuses}")


async def _backend(url: str, workdir: Path) -> dict[str, Any]:
    settings = Settings(
        database_url=url,
        secret_key=uuid.uuid4().hex,
        log_dir=workdir / "logs",
        smtp_url=None,
        registration_limit_per_hour=0,
    )
    # The request log's stdout handler is made with the first app: to /dev/null, not the report.
    with contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: PTH123, SIM115  (open for the process's life)
        app = create_app(settings)
    db: Database = app.state.db
    results: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
            name = f"c{uuid.uuid4().hex[:12]}"
            response = await client.post(
                "/api/auth/register",
                json={"username": name, "email": f"{name}@bench.local", "password": "bench-password"},
            )
            response.raise_for_status()
            user_id = int(response.json()["user"]["id"])
            cookie = f"session={client.cookies['session']}; csrf_token={client.cookies['csrf_token']}"
            asgi = _Asgi(app, cookie, client.cookies["csrf_token"])
        async with db.transaction() as session:
            await billing.adjust(
                session, user_id=user_id, amount=10_000_000, reason="bench", admin_id=None, now=datetime.now(UTC)
            )

        async def chat() -> None:
            await asgi.call("POST", "/api/chat", b'{"message":"hello"}')

        async def tiers() -> None:
            await asgi.call("GET", "/api/subscription/tiers")

        results["chat_us"] = await _mean_us(chat, concurrent=CONCURRENT)
        results["tiers_us"] = await _mean_us(tiers, concurrent=CONCURRENT)
        results.update(await _counts(db, chat))
        results.update(await _database_layer(db, user_id))
    layers = (
        results["transactions"] * results["transaction_us"]
        + results["lone_reads"] * results["lone_read_us"]
        + results["statements"] * results["statement_us"]
    )
    results["layers_us"] = {
        "database_layer": round(layers, 1),
        "framework_floor": results["tiers_us"],
        "the_rest": round(results["chat_us"] - layers - results["tiers_us"], 1),
    }
    return results


async def _counts(db: Database, chat: Callable[[], Awaitable[None]]) -> dict[str, int]:
    """Statements, transactions and lone reads of one chat."""
    statements = 0
    contexts = {"transaction": 0, "lone_reads": 0}

    def count(*_args: Any) -> None:
        nonlocal statements
        statements += 1

    real_transaction, real_lone_reads = db.transaction, db.lone_reads

    def counted(real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            contexts[real.__name__] += 1
            return real(*args, **kwargs)

        return wrapper

    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    db.transaction, db.lone_reads = counted(real_transaction), counted(real_lone_reads)  # type: ignore[method-assign]
    try:
        await chat()
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)
        db.transaction, db.lone_reads = real_transaction, real_lone_reads  # type: ignore[method-assign]
    return {"statements": statements, "transactions": contexts["transaction"], "lone_reads": contexts["lone_reads"]}


async def _database_layer(db: Database, user_id: int) -> dict[str, float]:
    """What the database layer charges for a transaction, a lone read, a statement and a commit."""
    by_key = select(UserSubscription.id).where(UserSubscription.user_id == user_id)
    sql = "SELECT id FROM user_subscriptions WHERE user_id = "

    async def empty_transaction() -> None:
        async with db.transaction() as session:
            await session.connection()

    async def lone_read() -> None:
        async with db.lone_reads() as session:
            await session.connection()

    async def write() -> None:
        async with db.transaction() as session:
            await session.execute(
                update(UserSubscription).where(UserSubscription.user_id == user_id).values(updated_at=datetime.now(UTC))
            )

    out = {
        "transaction_us": await _mean_us(empty_transaction),
        "lone_read_us": await _mean_us(lone_read),
        "commit_us": await _mean_us(write),
    }
    async with db.transaction() as session:
        connection = await session.connection()

        async def statement() -> None:
            (await connection.execute(by_key)).scalar_one()

        out["statement_us"] = await _mean_us(statement)
        if db.is_sqlite:
            raw = await driver_sqlite_connection(connection)

            async def driver_statement() -> None:
                raw.execute(sql + "?", (user_id,)).fetchone()

        else:
            pg = (await connection.get_raw_connection()).driver_connection

            async def driver_statement() -> None:
                await pg.fetchval(sql + "$1", user_id)

        out["driver_statement_us"] = await _mean_us(driver_statement)
    return out


async def run() -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-costs-"))
    out: dict[str, Any] = {"sqlite": await _backend(f"sqlite:///{workdir / 'costs.db'}", workdir)}
    async with scratch_postgres("costs") as url:
        out["postgresql"] = await _backend(url, workdir)
    return {"costs": out}


def report(results: dict[str, Any]) -> list[str]:
    lines = [
        "server time per request in microseconds (ASGI, in process, 8 at a time)",
        f"{'':24}{'SQLite':>12}{'PostgreSQL':>12}",
    ]
    costs = results["costs"]
    rows = (
        "chat_us",
        "tiers_us",
        "statements",
        "transactions",
        "lone_reads",
        "transaction_us",
        "lone_read_us",
        "statement_us",
        "driver_statement_us",
        "commit_us",
    )
    for row in rows:
        lines.append(f"{row:24}{costs['sqlite'][row]:>12}{costs['postgresql'][row]:>12}")
    for layer in ("database_layer", "framework_floor", "the_rest"):
        sqlite, pg = costs["sqlite"]["layers_us"][layer], costs["postgresql"]["layers_us"][layer]
        lines.append(f"chat: {layer:18}{sqlite:>12}{pg:>12}")
    return lines
