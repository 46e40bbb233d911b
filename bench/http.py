"""The HTTP paths of the seed: purchases/s, a read endpoint's requests/s, and the no-database ceiling.

A real server (uvicorn, 2 workers, PostgreSQL in a scratch database) is driven by
64 concurrent clients, each logged in as its own user, one request at a time per
client:

* ``POST /api/credits/purchase`` (100-credit pack, demo payments): a write path
  (authentication, purchase + grant + ledger row in one transaction, the receipt queued);
* ``GET /api/subscription``: the read path (authentication, monthly-reset check,
  account and tiers);
* ``GET /api/subscription/tiers``: public and served from memory, so it measures
  FastAPI + uvicorn + the load generator with no database: the ceiling of this
  machine for the other two.

Load generator, server and database share the machine's cores: the figures are
the machine's, not the service's ceiling. ``BENCH_HTTP_REQUESTS`` sets the requests
per client per path (default 40).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench.common import Figures, free_port, scratch_postgres, server_env, wait_ready
from devops_agent.billing.catalog import load_catalog
from devops_agent.billing.catalog_sync import sync_catalog
from devops_agent.db import Database
from devops_agent.migrate import upgrade

CLIENTS = 64
WORKERS = 2
REQUESTS_PER_CLIENT = int(os.environ.get("BENCH_HTTP_REQUESTS", "40"))

Request = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


def _start_server(url: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """``devops-agent serve --workers 2``, as production would run it."""
    env = server_env(url, workdir / "logs")
    cli = Path(sys.executable).with_name("devops-agent")
    command = [str(cli), "serve", "--port", str(port), "--workers", str(WORKERS)]
    output = (workdir / "server.out").open("wb")
    return subprocess.Popen(command, env=env, cwd=workdir, stdout=output, stderr=subprocess.STDOUT)


async def _register(base: str) -> httpx.AsyncClient:
    # Idle connections are dropped by the client before uvicorn's 5 s keep-alive timeout can
    # close one under a request being sent (an httpx.ReadError after a pause between phases).
    limits = httpx.Limits(max_connections=1, keepalive_expiry=3.0)
    client = httpx.AsyncClient(base_url=base, timeout=60, limits=limits)
    name = f"b{uuid.uuid4().hex[:12]}"
    response = await client.post(
        "/api/auth/register", json={"username": name, "email": f"{name}@bench.local", "password": "bench-password"}
    )
    response.raise_for_status()
    client.headers["X-CSRF-Token"] = client.cookies["csrf_token"]
    return client


async def _measure(clients: list[httpx.AsyncClient], request: Request) -> Figures:
    latencies: list[float] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        for _ in range(REQUESTS_PER_CLIENT):
            t = time.perf_counter()
            response = await request(client)
            latencies.append((time.perf_counter() - t) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{response.request.url.path} answered {response.status_code}: {response.text}")

    await asyncio.gather(*(request(c) for c in clients))  # warm-up: connections, caches
    start = time.perf_counter()
    await asyncio.gather(*(client_loop(c) for c in clients))
    return Figures(len(clients) * REQUESTS_PER_CLIENT, time.perf_counter() - start, latencies)


async def run() -> dict[str, Any]:
    """Serve, load each path in turn, measure."""
    async with scratch_postgres("bench_http") as url:
        db = Database(url)
        await upgrade(db)
        async with db.transaction() as session:
            await sync_catalog(session, load_catalog())
        await db.dispose()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            server = _start_server(url, port, workdir)
            try:
                await wait_ready(base, server, workdir / "server.out")
                clients = list(await asyncio.gather(*(_register(base) for _ in range(CLIENTS))))
                try:
                    purchase = await _measure(
                        clients, lambda c: c.post("/api/credits/purchase", json={"pack_size": 100})
                    )
                    read = await _measure(clients, lambda c: c.get("/api/subscription"))
                    tiers = await _measure(clients, lambda c: c.get("/api/subscription/tiers"))
                finally:
                    for client in clients:
                        await client.aclose()
            finally:
                server.terminate()
                server.wait(timeout=30)
    return {
        "http": {
            "load_average_1m": round(os.getloadavg()[0], 1),  # other work on the machine skews every figure
            "clients": CLIENTS,
            "workers": WORKERS,
            "requests_per_client": REQUESTS_PER_CLIENT,
            "purchase": purchase.as_dict(),
            "subscription": read.as_dict(),
            "tiers": tiers.as_dict(),
        }
    }


def report(results: dict[str, Any]) -> list[str]:
    r = results["http"]
    rows = [
        ("POST /api/credits/purchase", r["purchase"]),
        ("GET /api/subscription", r["subscription"]),
        ("GET /api/subscription/tiers", r["tiers"]),
    ]
    lines = [
        f"HTTP: {r['workers']} uvicorn workers, PostgreSQL, {r['clients']} concurrent clients, "
        f"{r['requests_per_client']} requests each per path (tiers: from memory, the no-database ceiling); "
        f"load average at the end: {r.get('load_average_1m')}",
        f"{'':<30}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}",
    ]
    for label, f in rows:
        lines.append(f"{label:<30}{f['per_second']:>9.0f}{f['p50_ms']:>9.1f}{f['p99_ms']:>9.1f}")
    return lines
