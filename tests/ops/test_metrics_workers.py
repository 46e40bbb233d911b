"""`devops-agent serve --workers 2` on PostgreSQL: /metrics adds up both workers' counts, and the
metrics directory the server made is gone once it stops."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.ops.servers import serve, stop
from tests.web.test_metrics import sample

pytestmark = pytest.mark.slow

HEALTHZ = {"method": "GET", "route": "/healthz", "status": "200"}


def healthz_by_worker(directory: Path) -> dict[str, float]:
    """Each worker's own count of /healthz answers, read from its file alone."""
    counts = {}
    for path in directory.glob("histogram_*.db"):
        pid = path.stem.rsplit("_", 1)[1]
        for family in MultiProcessCollector.merge([str(path)]):  # type: ignore[no-untyped-call]
            for s in family.samples:
                if s.name.endswith("_count") and all(s.labels.get(k) == v for k, v in HEALTHZ.items()):
                    counts[pid] = s.value
    return counts


async def test_two_workers_counts_add_up(scratch_postgres: str, tmp_path: Path) -> None:
    served = await asyncio.to_thread(serve, scratch_postgres, tmp_path, workers=2)
    try:
        [directory] = tmp_path.glob("devops-agent-metrics-*")
        sent = 0
        by_worker: dict[str, float] = {}
        # New connections (no keep-alive) are spread by the kernel over both workers' accepts.
        async with httpx.AsyncClient(base_url=served.base_url, limits=httpx.Limits(max_keepalive_connections=0)) as c:
            while len([n for n in by_worker.values() if n > 0]) < 2 and sent < 4000:
                replies = await asyncio.gather(*(c.get("/healthz") for _ in range(20)))
                assert {r.status_code for r in replies} == {200}
                sent += len(replies)
                by_worker = healthz_by_worker(directory)
            assert len([n for n in by_worker.values() if n > 0]) >= 2, by_worker
            text = (await c.get("/metrics")).text  # answered by one worker, counting both
        assert sample(text, "devops_agent_http_request_duration_seconds_count", **HEALTHZ) == sent
        assert sum(by_worker.values()) == sent
    finally:
        await asyncio.to_thread(stop, served)
    assert not directory.exists(), "serve removes the metrics directory it made"
