"""Shared helpers for the benchmarks: latency statistics and a scratch PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

BENCH_PG = os.environ.get(
    "BENCH_DATABASE_URL", os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
)


@dataclass
class Figures:
    """Throughput and latency of one measured run."""

    ops: int
    seconds: float
    latencies_ms: list[float]

    @classmethod
    def combined(cls, runs: list[Figures]) -> Figures:
        """Several runs of the same thing as one: operations and time added up."""
        return cls(sum(r.ops for r in runs), sum(r.seconds for r in runs), [x for r in runs for x in r.latencies_ms])

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def as_dict(self) -> dict[str, float]:
        return {
            "ops": self.ops,
            "seconds": round(self.seconds, 3),
            "per_second": round(self.per_second, 1),
            "p50_ms": round(self.percentile(0.50), 3),
            "p99_ms": round(self.percentile(0.99), 3),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 3) if self.latencies_ms else 0.0,
        }


def free_port() -> int:
    """A TCP port nothing listens on now, for a benchmarked server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(base: str, server: subprocess.Popen[bytes], output: Path) -> None:
    """Poll ``/readyz`` until the server answers (database up, migrations current); its
    output (``output``) is in the error if it exits first."""
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(900):
            if server.poll() is not None:
                raise RuntimeError(f"the server exited with {server.returncode}:\n{output.read_text()}")
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the server did not become ready within 90 s")


def server_env(database_url: str, log_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a benchmarked server: offline agent, no Stripe, no SMTP, and no
    registration limit (every bench client registers from 127.0.0.1)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "STRIPE_"))}
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=uuid.uuid4().hex,
        LOG_DIR=str(log_dir),
        SMTP_URL="",
        REGISTRATION_LIMIT_PER_HOUR="0",
        **extra,
    )
    return env


@asynccontextmanager
async def scratch_postgres(prefix: str) -> AsyncIterator[str]:
    """Create a throw-away PostgreSQL database beside BENCH_DATABASE_URL; drop it afterwards."""
    url = make_url(BENCH_PG)
    admin = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
    name = f"devops_agent_{prefix}_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
