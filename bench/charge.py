"""The charge path in-process: the credits engine against a raw-driver loop of the same SQL.

For each database (a SQLite file in WAL mode, PostgreSQL) and each concurrency (1 and 16
workers, each charging its own customer), it measures charges per second and the latency
of one charge three ways:

* engine: ``billing.credits.charge_alone``, a charge in a transaction of its own, as the
  agent charges a tool call (the engine's hot path on the bare driver connection);
* in session: ``billing.credits.charge`` inside ``Database.transaction()``, as a charge
  composed with other writes (the chat's message charge) runs, through SQLAlchemy;
* raw: the bare driver (``sqlite3`` / ``asyncpg``) running the same statements
  (``billing.charge_sql``): lock/read the account, the conditional UPDATE ... RETURNING,
  the usage log INSERT and the ledger INSERT, in one transaction.

The ratio engine/raw is the figure the charge path is held to (target: at least 0.5);
the session ratio shows what the ORM transaction costs.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import Figures, scratch_postgres
from devops_agent.billing import charge_sql, credits
from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.catalog_sync import sync_catalog
from devops_agent.billing.models import User
from devops_agent.db import SQLITE_PRAGMAS, Database
from devops_agent.migrate import upgrade

CHARGES_PER_WORKER = {1: 1500, 16: 150}
START_BALANCE = 1_000_000


async def _prepare(db: Database, workers: int) -> list[int]:
    """Migrate, seed the catalog and open one customer per worker with a large balance."""
    await upgrade(db)
    now = datetime.now(UTC)
    async with db.transaction() as s:
        await sync_catalog(s, load_catalog())
        ids = []
        for _ in range(workers * 3):  # a third each for the engine, session and raw runs
            user = User(
                username=f"bench-{uuid.uuid4().hex[:10]}",
                email=f"{uuid.uuid4().hex}@bench.local",
                password_hash="-",
                is_admin=False,
                is_suspended=False,
                email_opt_out=False,
                created_at=now,
            )
            s.add(user)
            await s.flush()
            await credits.open_account(s, user_id=user.id, now=now)
            await credits.adjust(s, user_id=user.id, amount=START_BALANCE, reason="bench", admin_id=None, now=now)
            ids.append(user.id)
    return ids


async def _timed_run(user_ids: list[int], per_worker: int, charge: Callable[[int], Awaitable[object]]) -> Figures:
    """Each user's worker charges ``per_worker`` times, one after the other; all workers at once."""
    latencies: list[float] = []

    async def worker(user_id: int) -> None:
        for _ in range(per_worker):
            t = time.perf_counter()
            await charge(user_id)
            latencies.append((time.perf_counter() - t) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(worker(u) for u in user_ids))
    return Figures(len(user_ids) * per_worker, time.perf_counter() - start, latencies)


async def _engine_run(db: Database, user_ids: list[int], per_worker: int) -> Figures:
    async def charge(user_id: int) -> object:
        return await credits.charge_alone(
            db, user_id=user_id, amount=1, action_type="agent_message", now=datetime.now(UTC)
        )

    return await _timed_run(user_ids, per_worker, charge)


async def _session_run(db: Database, user_ids: list[int], per_worker: int) -> Figures:
    async def charge(user_id: int) -> object:
        async with db.transaction() as s:
            now = datetime.now(UTC)
            return await credits.charge(s, user_id=user_id, amount=1, action_type="agent_message", now=now)

    return await _timed_run(user_ids, per_worker, charge)


def _split(monthly: int, amount: int) -> tuple[int, int]:
    from_monthly = min(monthly, amount)
    return from_monthly, amount - from_monthly


def _sqlite_raw_run(
    path: Path, user_ids: list[int], per_worker: int, pragmas: tuple[str, ...] = SQLITE_PRAGMAS
) -> Figures:
    """The same statements on bare sqlite3: BEGIN IMMEDIATE, serialised by a lock like the engine."""
    lock = threading.Lock()
    latencies: list[float] = []
    sql = charge_sql.SQLITE

    def worker(user_id: int) -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in pragmas:  # set up as the engine's connections are, unless told otherwise
            conn.execute(pragma)
        for _ in range(per_worker):
            t = time.perf_counter()
            with lock:
                now = charge_sql.sqlite_timestamp(datetime.now(UTC))
                key = uuid.uuid4().hex
                conn.execute("BEGIN IMMEDIATE")
                sub_id, monthly, _purchased, _end = conn.execute(sql["select"], (user_id,)).fetchone()
                m, p = _split(monthly, 1)
                ma, pa = conn.execute(sql["update"], (m, p, 1, now, sub_id)).fetchone()
                (usage_id,) = conn.execute(sql["usage"], (user_id, None, "agent_message", None, 1, now)).fetchone()
                conn.execute(sql["ledger"], (sub_id, user_id, -m, -p, ma, pa, usage_id, key, now)).fetchone()
                conn.execute("COMMIT")
            latencies.append((time.perf_counter() - t) * 1000)
        conn.close()

    threads = [threading.Thread(target=worker, args=(u,)) for u in user_ids]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return Figures(len(user_ids) * per_worker, time.perf_counter() - start, latencies)


async def _pg_raw_run(dsn: str, user_ids: list[int], per_worker: int) -> Figures:
    pool = await asyncpg.create_pool(dsn, min_size=len(user_ids), max_size=len(user_ids))
    latencies: list[float] = []
    sql = charge_sql.POSTGRES

    async def worker(user_id: int) -> None:
        async with pool.acquire() as conn:
            for _ in range(per_worker):
                t = time.perf_counter()
                now = datetime.now(UTC)
                key = uuid.uuid4().hex
                async with conn.transaction():
                    row = await conn.fetchrow(sql["select"], user_id)
                    m, p = _split(row["credits_remaining"], 1)
                    after = await conn.fetchrow(sql["update"], m, p, 1, now, row["id"])
                    usage_id = await conn.fetchval(sql["usage"], user_id, None, "agent_message", None, 1, now)
                    await conn.fetchval(
                        sql["ledger"], row["id"], user_id, -m, -p, after[0], after[1], usage_id, key, now
                    )
                latencies.append((time.perf_counter() - t) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(worker(u) for u in user_ids))
    elapsed = time.perf_counter() - start
    await pool.close()
    return Figures(len(user_ids) * per_worker, elapsed, latencies)


def _row(database: str, workers: int, engine: Figures, session: Figures, raw: Figures) -> dict[str, Any]:
    return {
        "database": database,
        "workers": workers,
        "engine": engine.as_dict(),
        "session": session.as_dict(),
        "raw": raw.as_dict(),
        "ratio": round(engine.per_second / raw.per_second, 3) if raw.per_second else None,
        "session_ratio": round(session.per_second / raw.per_second, 3) if raw.per_second else None,
    }


ROUNDS = (("engine", "session", "raw"), ("raw", "session", "engine"))


async def _measure(
    database: str, workers: int, db: Database, raw_run: Callable[[list[int], int], Awaitable[Figures]]
) -> dict[str, Any]:
    """Run the three ways twice, in opposite orders, so that neither gains from going first."""
    per_worker = CHARGES_PER_WORKER[workers]
    ids = await _prepare(db, workers)
    runners: dict[str, Callable[[], Awaitable[Figures]]] = {
        "engine": lambda: _engine_run(db, ids[:workers], per_worker),
        "session": lambda: _session_run(db, ids[workers : 2 * workers], per_worker),
        "raw": lambda: raw_run(ids[2 * workers :], per_worker),
    }
    runs: dict[str, list[Figures]] = {name: [] for name in runners}
    for order in ROUNDS:
        for name in order:
            runs[name].append(await runners[name]())
    combined = {name: Figures.combined(figures) for name, figures in runs.items()}
    return _row(database, workers, combined["engine"], combined["session"], combined["raw"])


SYNC_MODES = ("NORMAL", "FULL")


def _with_synchronous(mode: str) -> tuple[str, ...]:
    """Our SQLite pragmas with ``synchronous`` set to ``mode``."""
    return tuple(p for p in SQLITE_PRAGMAS if not p.startswith("PRAGMA synchronous")) + (f"PRAGMA synchronous={mode}",)


async def _sqlite_sync_cost() -> dict[str, Any]:
    """What durable commits cost: the raw SQLite loop, one worker, with synchronous NORMAL and FULL.

    The app runs FULL (every commit fsyncs the WAL; NORMAL may lose the last commits on a
    power loss). Each mode runs twice, in opposite orders, on the same file.
    """
    per_worker = CHARGES_PER_WORKER[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        db = Database(f"sqlite:///{path}")
        ids = await _prepare(db, 1)
        await db.dispose()
        runs: dict[str, list[Figures]] = {mode: [] for mode in SYNC_MODES}
        for order in (SYNC_MODES, SYNC_MODES[::-1]):
            for mode in order:
                pragmas = _with_synchronous(mode)
                runs[mode].append(await asyncio.to_thread(_sqlite_raw_run, path, ids[:1], per_worker, pragmas))
    figures = {mode.lower(): Figures.combined(r).as_dict() for mode, r in runs.items()}
    full, normal = figures["full"]["per_second"], figures["normal"]["per_second"]
    return {**figures, "full_over_normal": round(full / normal, 3) if normal else None}


async def run() -> dict[str, Any]:
    """Measure every (database, workers) pair, and SQLite's durable commits; return the rows."""
    rows: list[dict[str, Any]] = []
    for workers in (1, 16):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.db"
            db = Database(f"sqlite:///{path}")

            async def sqlite_raw(ids: list[int], per_worker: int, path: Path = path) -> Figures:
                return await asyncio.to_thread(_sqlite_raw_run, path, ids, per_worker)

            rows.append(await _measure("sqlite", workers, db, sqlite_raw))
            await db.dispose()
        async with scratch_postgres("bench_charge") as url:
            db = Database(url, pool_size=workers)

            async def postgres_raw(ids: list[int], per_worker: int, url: str = url) -> Figures:
                return await _pg_raw_run(url, ids, per_worker)

            rows.append(await _measure("postgresql", workers, db, postgres_raw))
            await db.dispose()
    return {"charge_path": rows, "sqlite_synchronous": await _sqlite_sync_cost()}


def report(results: dict[str, Any]) -> list[str]:
    lines = [
        "Charge path (in-process): engine (charge_alone) and in a session (charge) vs raw driver, same SQL",
        f"{'database':<11}{'workers':>8}{'engine/s':>10}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'session/s':>10}{'p50 ms':>8}{'raw/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'ratio':>7}{'session':>9}",
    ]
    for r in results["charge_path"]:
        e, s, w = r["engine"], r["session"], r["raw"]
        lines.append(
            f"{r['database']:<11}{r['workers']:>8}{e['per_second']:>10.0f}{e['p50_ms']:>8.2f}{e['p99_ms']:>8.2f}"
            f"{s['per_second']:>10.0f}{s['p50_ms']:>8.2f}"
            f"{w['per_second']:>9.0f}{w['p50_ms']:>8.2f}{w['p99_ms']:>8.2f}{r['ratio']:>7.2f}{r['session_ratio']:>9.2f}"
        )
    sync = results.get("sqlite_synchronous")
    if sync:
        lines.append("")
        lines.append("SQLite durable commits: raw loop, 1 worker, synchronous=NORMAL vs FULL (the app runs FULL)")
        lines.append(f"{'synchronous':<12}{'charges/s':>10}{'p50 ms':>8}{'p99 ms':>8}")
        for mode in ("normal", "full"):
            f = sync[mode]
            lines.append(f"{mode.upper():<12}{f['per_second']:>10.0f}{f['p50_ms']:>8.2f}{f['p99_ms']:>8.2f}")
        lines.append(f"FULL/NORMAL throughput: {sync['full_over_normal']:.2f}")
    return lines
