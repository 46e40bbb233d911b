"""What users feel: the running server driven by wrk, beside the database's own limit.

For each backend (SQLite with one server process; PostgreSQL with two workers) a real
``devops-agent serve`` answers wrk (C, 2 threads, 64 connections, ``BENCH_WRK_SECONDS``
each, default 10). wrk, not a Python client: a Python load generator on the same two
cores would measure itself. Scenarios:

* ``H``: ``GET /api/subscription/tiers``, public and served from memory: the ceiling of
  FastAPI, uvicorn and wrk on this machine, with no database;
* ``chat_one`` / ``chat_many``: ``POST /api/chat {"message": "hello"}`` (offline agent,
  no tool, a new conversation each time) as one account, and round-robin over 200;
* ``chat_half``: ``chat_many`` paced at half its measured rate (each connection waits a
  random time between requests, so that requests arrive spread out as users' do), for
  the latency a user sees on a server that is not saturated;
* ``purchase``: ``POST /api/credits/purchase`` (100-credit pack, demo payments), 200 accounts;
* ``subscription``: ``GET /api/subscription``, 200 accounts.

Beside them, the limit L the database sets on the chat's writes: the statements of one
chat (the session's user read; the conversation, the charge's lock and read of the
account with its grants, the grant's and the account's UPDATEs, usage log and ledger row,
and the user message in one transaction; the reply and the lease given up in another)
run with nothing else, by pgbench (64 clients, one account and 200) and by a
single-connection sqlite3 loop (``synchronous`` FULL, as the app runs, and NORMAL to
show what durability costs). The figure to watch is
``chat / (1 / (1/L + 1/H))``: the chat against a request that did both the HTTP work
of H and the database work of L with nothing in between.

After each run the books are checked (stored balances equal the ledger's sums).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import free_port, scratch_postgres, server_env, wait_ready
from devops_agent import billing
from devops_agent.billing.books import check_books
from devops_agent.db import Database
from devops_agent.migrate import upgrade

CONNECTIONS = 64
THREADS = 2
ACCOUNTS = 200
SECONDS = int(os.environ.get("BENCH_WRK_SECONDS", "10"))
BALANCE = 10_000_000
PACK = 100
REPLY = "Hello! I can list and create EC2 instances, RDS databases and S3 buckets."

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,"timeouts":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end
"""


@dataclass(frozen=True)
class Account:
    user_id: int
    cookie: str
    csrf: str


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str
    path: str
    body: str | None
    accounts: int  # 0: no authentication; 1: one account; more: round-robin
    pace_ms: float = 0.0  # each connection's wait between requests (0: as fast as it can)


SCENARIOS = (
    Scenario("H", "GET", "/api/subscription/tiers", None, 0),
    Scenario("chat_one", "POST", "/api/chat", '{"message":"hello"}', 1),
    Scenario("chat_many", "POST", "/api/chat", '{"message":"hello"}', ACCOUNTS),
    Scenario("purchase", "POST", "/api/credits/purchase", f'{{"pack_size":{PACK}}}', ACCOUNTS),
    Scenario("subscription", "GET", "/api/subscription", None, ACCOUNTS),
)


def _lua(scenario: Scenario, accounts: list[Account]) -> str:
    """A wrk script: the scenario's request, rotating over its accounts, and a JSON summary."""
    chosen = accounts[: scenario.accounts]
    creds = ",\n".join(f'{{"{a.cookie}", "{a.csrf}"}}' for a in chosen)
    body = "nil" if scenario.body is None else json.dumps(scenario.body)
    # A random wait, on average ``pace_ms``: a fixed one keeps the 64 connections in step,
    # and their requests arrive in bursts of 64 that queue behind each other.
    pace = f"delay = function() return math.random() * {2 * scenario.pace_ms:.1f} end\n" if scenario.pace_ms else ""
    return f"""
local creds = {{ {creds} }}
local body = {body}
local i = 0
request = function()
  local headers = {{}}
  if body then headers["Content-Type"] = "application/json" end
  if #creds > 0 then
    i = i % #creds + 1
    headers["Cookie"] = creds[i][1]
    headers["X-CSRF-Token"] = creds[i][2]
  end
  return wrk.format("{scenario.method}", "{scenario.path}", headers, body)
end
{pace}{_DONE}"""


def _wrk(base: str, scenario: Scenario, accounts: list[Account], workdir: Path) -> dict[str, Any]:
    script = workdir / f"{scenario.name}.lua"
    script.write_text(_lua(scenario, accounts))
    command = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--timeout", "10s", "-s", str(script), base]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^WRKJSON (.*)$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    raw = json.loads(match.group(1))
    seconds = raw["duration_us"] / 1e6
    return {
        "per_second": round(raw["requests"] / seconds, 1),
        "requests": raw["requests"],
        "errors": raw["status_errors"] + raw["socket_errors"] + raw["timeouts"],
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "mean_ms": round(raw["mean_us"] / 1000, 2),
    }


# --- the database's own limit ---------------------------------------------------------

_PGBENCH = """\\set uid {uid}
SELECT id, password_hash, is_suspended FROM users WHERE id = :uid;
BEGIN;
INSERT INTO conversations (user_id, title, created_at, updated_at) VALUES (:uid, 'hello', now(), now()) RETURNING id AS cid \\gset
SELECT id AS sid FROM user_subscriptions WHERE user_id = :uid FOR UPDATE \\gset
SELECT g.id AS gid FROM user_subscriptions s LEFT JOIN credit_grants g ON g.subscription_id = s.id AND g.remaining > 0 WHERE s.user_id = :uid AND g.category = 'paid' LIMIT 1 \\gset
UPDATE credit_grants SET remaining = remaining - 1 WHERE id = :gid AND remaining >= 1;
UPDATE user_subscriptions SET purchased_credits_remaining = purchased_credits_remaining - 1, credits_used_this_month = credits_used_this_month + 1, total_credits_used = total_credits_used + 1, updated_at = now() WHERE id = :sid AND purchased_credits_remaining >= 1 RETURNING credits_remaining AS ma, purchased_credits_remaining AS pa \\gset
INSERT INTO usage_logs (user_id, conversation_id, action_type, credits_used, success, created_at) VALUES (:uid, :cid, 'agent_message', 1, TRUE, now()) RETURNING id AS ulid \\gset
INSERT INTO credit_ledger (subscription_id, user_id, kind, monthly_delta, purchased_delta, monthly_balance_after, purchased_balance_after, grant_id, usage_log_id, idempotency_key, created_at) VALUES (:sid, :uid, 'charge', 0, -1, :ma, :pa, :gid, :ulid, md5(random()::text || clock_timestamp()::text), now());
INSERT INTO messages (conversation_id, user_id, role, content, lease_expires_at, created_at) VALUES (:cid, :uid, 'user', 'hello', now() + interval '2 minutes', now()) RETURNING id AS mid \\gset
END;
BEGIN;
INSERT INTO messages (conversation_id, user_id, role, content, tool_calls, created_at) VALUES (:cid, :uid, 'assistant', '{reply}', '[]', now());
UPDATE messages SET lease_expires_at = NULL WHERE id = :mid AND reply_status IS NULL AND lease_expires_at IS NOT NULL;
END;
"""  # noqa: E501  (one statement a line, as pgbench reads them)


def _pgbench(url: str, accounts: list[Account], many: bool, workdir: Path) -> float:
    """Chats per second of the chat's statements alone, 64 pgbench clients."""
    ids = [a.user_id for a in accounts]
    uid = f"random({min(ids)}, {max(ids)})" if many else str(ids[0])
    script = workdir / f"chat-{'many' if many else 'one'}.sql"
    script.write_text(_PGBENCH.format(uid=uid, reply=REPLY))
    command = ["pgbench", "-n", "-c", str(CONNECTIONS), "-j", str(THREADS), "-T", str(SECONDS), "-f", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^tps = ([\d.]+)", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"pgbench printed no rate:\n{out}")
    return float(match.group(1))


def _sqlite_loop(path: Path, accounts: list[Account], many: bool, synchronous: str) -> float:
    """Chats per second of the chat's statements alone on one sqlite3 connection."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    ids = [a.user_id for a in accounts] if many else [accounts[0].user_id]
    done, deadline = 0, time.perf_counter() + SECONDS
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        uid = ids[done % len(ids)]
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        conn.execute("SELECT id, password_hash, is_suspended FROM users WHERE id = ?", (uid,)).fetchone()
        conn.execute("BEGIN IMMEDIATE")
        (cid,) = conn.execute(
            "INSERT INTO conversations (user_id, title, created_at, updated_at) VALUES (?, 'hello', ?, ?) RETURNING id",
            (uid, now, now),
        ).fetchone()
        sid, gid = conn.execute(
            "SELECT s.id, g.id FROM user_subscriptions s "
            "LEFT JOIN credit_grants g ON g.subscription_id = s.id AND g.remaining > 0 "
            "WHERE s.user_id = ? AND g.category = 'paid' LIMIT 1",
            (uid,),
        ).fetchone()
        conn.execute("UPDATE credit_grants SET remaining = remaining - 1 WHERE id = ? AND remaining >= 1", (gid,))
        ma, pa = conn.execute(
            "UPDATE user_subscriptions SET purchased_credits_remaining = purchased_credits_remaining - 1, "
            "credits_used_this_month = credits_used_this_month + 1, total_credits_used = total_credits_used + 1, "
            "updated_at = ? WHERE id = ? AND purchased_credits_remaining >= 1 "
            "RETURNING credits_remaining, purchased_credits_remaining",
            (now, sid),
        ).fetchone()
        (ulid,) = conn.execute(
            "INSERT INTO usage_logs (user_id, conversation_id, action_type, credits_used, success, created_at) "
            "VALUES (?, ?, 'agent_message', 1, 1, ?) RETURNING id",
            (uid, cid, now),
        ).fetchone()
        conn.execute(
            "INSERT INTO credit_ledger (subscription_id, user_id, kind, monthly_delta, purchased_delta, "
            "monthly_balance_after, purchased_balance_after, grant_id, usage_log_id, idempotency_key, created_at) "
            "VALUES (?, ?, 'charge', 0, -1, ?, ?, ?, ?, ?, ?)",
            (sid, uid, ma, pa, gid, ulid, uuid.uuid4().hex, now),
        )
        (mid,) = conn.execute(
            "INSERT INTO messages (conversation_id, user_id, role, content, lease_expires_at, created_at) "
            "VALUES (?, ?, 'user', 'hello', ?, ?) RETURNING id",
            (cid, uid, now, now),
        ).fetchone()
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO messages (conversation_id, user_id, role, content, tool_calls, created_at) "
            "VALUES (?, ?, 'assistant', ?, '[]', ?)",
            (cid, uid, REPLY, now),
        )
        conn.execute(
            "UPDATE messages SET lease_expires_at = NULL "
            "WHERE id = ? AND reply_status IS NULL AND lease_expires_at IS NOT NULL",
            (mid,),
        )
        conn.execute("COMMIT")
        done += 1
    elapsed = time.perf_counter() - start
    conn.close()
    return done / elapsed


# --- set-up and checks ----------------------------------------------------------------


async def _accounts(base: str, url: str) -> list[Account]:
    """Register the accounts through the API, then give each a balance that will not run out."""
    accounts: list[Account] = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for _ in range(ACCOUNTS):
            name = f"b{uuid.uuid4().hex[:12]}"
            client.cookies.clear()
            response = await client.post(
                "/api/auth/register",
                json={"username": name, "email": f"{name}@bench.local", "password": "bench-password"},
            )
            response.raise_for_status()
            session, csrf = response.cookies["session"], response.cookies["csrf_token"]
            accounts.append(Account(int(response.json()["user"]["id"]), f"session={session}; csrf_token={csrf}", csrf))
    db = Database(url)
    async with db.transaction() as tx:
        for account in accounts:
            await billing.adjust(
                tx, user_id=account.user_id, amount=BALANCE, reason="bench", admin_id=None, now=datetime.now(UTC)
            )
    await db.dispose()
    return accounts


async def _books_balance(url: str) -> bool:
    """Whether the books balance: the audit's checks (``devops-agent audit``), grants included."""
    db = Database(url)
    try:
        report = await check_books(db, clock=lambda: datetime.now(UTC))
    finally:
        await db.dispose()
    return report.ok


def _serve(url: str, port: int, workers: int, workdir: Path) -> subprocess.Popen[bytes]:
    env = server_env(url, workdir / "logs", CLOUD="sandbox")
    cli = Path(sys.executable).with_name("devops-agent")
    command = [str(cli), "serve", "--port", str(port), "--workers", str(workers)]
    with (workdir / "server.out").open("wb") as out:  # a file, never a pipe nobody reads
        return subprocess.Popen(command, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)


async def _backend(name: str, url: str, workers: int, workdir: Path) -> dict[str, Any]:
    db = Database(url)  # migrated before the server starts: the bench measures serving, not start-up
    await upgrade(db)
    await db.dispose()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _serve(url, port, workers, workdir)
    results: dict[str, Any] = {"workers": workers, "paths": {}}
    try:
        await wait_ready(base, server, workdir / "server.out")
        accounts = await _accounts(base, url)
        for scenario in SCENARIOS:
            print(f"  {name}: {scenario.name}", flush=True)
            results["paths"][scenario.name] = _wrk(base, scenario, accounts, workdir)
        # Half of the load the server sustained: each connection paces itself.
        half = results["paths"]["chat_many"]["per_second"] / 2
        if half > 0:
            pace = CONNECTIONS * 1000 / half
            paced = Scenario("chat_half", "POST", "/api/chat", '{"message":"hello"}', ACCOUNTS, pace)
            print(f"  {name}: chat_half", flush=True)
            results["paths"]["chat_half"] = _wrk(base, paced, accounts, workdir)
    finally:
        server.terminate()
        server.wait(timeout=60)
    results["books_balance_after_http"] = await _books_balance(url)
    if name == "postgresql":
        limit = {"one": _pgbench(url, accounts, False, workdir), "many": _pgbench(url, accounts, True, workdir)}
    else:
        path = Path(url.removeprefix("sqlite:///"))
        limit = {
            "one": _sqlite_loop(path, accounts, False, "FULL"),
            "many": _sqlite_loop(path, accounts, True, "FULL"),
            "many_normal": _sqlite_loop(path, accounts, True, "NORMAL"),
        }
    results["raw_limit"] = {k: round(v, 1) for k, v in limit.items()}
    results["books_balance_after_raw"] = await _books_balance(url)
    h = results["paths"]["H"]["per_second"]
    for which in ("one", "many"):
        bound = 1 / (1 / limit[which] + 1 / h)
        results[f"ratio_{which}"] = round(results["paths"][f"chat_{which}"]["per_second"] / bound, 3) if h else 0.0
    return results


async def run() -> dict[str, Any]:
    out: dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
    try:
        (workdir / "sqlite").mkdir()
        sqlite_url = f"sqlite:///{workdir / 'sqlite' / 'bench.db'}"
        out["sqlite"] = await _backend("sqlite", sqlite_url, 1, workdir / "sqlite")
        async with scratch_postgres("bench_wrk") as pg_url:
            (workdir / "pg").mkdir()
            out["postgresql"] = await _backend("postgresql", pg_url, 2, workdir / "pg")
    except Exception as exc:
        raise RuntimeError(f"the wrk bench failed; the servers' output is under {workdir}") from exc
    shutil.rmtree(workdir, ignore_errors=True)
    return {"wrk": {"connections": CONNECTIONS, "threads": THREADS, "seconds": SECONDS, "backends": out}}


def report(results: dict[str, Any]) -> list[str]:
    r = results["wrk"]
    lines = [f"wrk, {r['threads']} threads, {r['connections']} connections, {r['seconds']} s a path"]
    header = f"{'':<10}{'path':<14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
    for name, b in r["backends"].items():
        lines.append(f"{name} ({b['workers']} worker(s))")
        lines.append(header)
        for path, f in b["paths"].items():
            lines.append(
                f"{'':<10}{path:<14}{f['per_second']:>9.0f}{f['p50_ms']:>9.1f}{f['p99_ms']:>9.1f}{f['errors']:>8}"
            )
        limits = ", ".join(f"{k} {v:.0f}/s" for k, v in b["raw_limit"].items())
        lines.append(f"  raw limit L of the chat's statements: {limits}")
        lines.append(
            f"  chat / (1/(1/L + 1/H)): one account {b['ratio_one']:.2f}, {ACCOUNTS} accounts {b['ratio_many']:.2f}"
        )
        books = b["books_balance_after_http"] and b["books_balance_after_raw"]
        lines.append(f"  books balance (balances = ledger sums): {'yes' if books else 'NO'}")
    return lines
