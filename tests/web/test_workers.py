"""Several workers on a brand-new PostgreSQL database: one migrates, the others wait, all serve.

Each worker runs the migrations (and the catalog sync) at start-up; they take turns
under a PostgreSQL advisory lock, so none of them trips on another's
``CREATE TABLE alembic_version`` and uvicorn never stops the server. Real processes:
``devops-agent serve --workers 4`` on a free port, twice in a row, each time on a
database created for it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.scratch_pg import brand_new_postgres
from tests.web.test_server import _free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
WORKERS = 4
CLI = Path(sys.executable).with_name("devops-agent")


def _serve_until_ready(database_url: str, workdir: Path) -> str:
    """Start ``serve --workers 4``, wait for every worker's start-up, stop it; return its output."""
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_DIR": str(workdir / "logs"), "SECRET_KEY": "k" * 32}
    out_path = workdir / "server.out"
    with out_path.open("w") as output:
        process = subprocess.Popen(
            [str(CLI), "serve", "--workers", str(WORKERS), "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                text = out_path.read_text()
                if process.poll() is not None:
                    pytest.fail(f"the server stopped (exit {process.returncode}):\n{text}")
                if "Application startup failed" in text:
                    pytest.fail(f"a worker failed to start:\n{text}")
                if text.count("Application startup complete") >= WORKERS:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"the workers did not all start within 180 s:\n{text}")
                time.sleep(0.2)
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"database": "ok", "migrations": "current"}
            for _ in range(2 * WORKERS):  # whichever worker takes the connection answers
                assert httpx.get(f"http://127.0.0.1:{port}/api/subscription/tiers", timeout=10).status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return out_path.read_text()


async def _serve_on_a_brand_new_database(workdir: Path) -> str:
    async with brand_new_postgres() as url:
        return await asyncio.to_thread(_serve_until_ready, url, workdir)


@pytest.mark.parametrize("start", [1, 2])
async def test_several_workers_start_on_a_brand_new_postgres_database(start: int, tmp_path: Path) -> None:
    output = await _serve_on_a_brand_new_database(tmp_path)
    # On a loaded machine uvicorn may replace a worker that is slow to answer its health
    # check while it imports ("Child process died"): more start-ups, never a failed one.
    assert output.count("Application startup complete") >= WORKERS, output
    assert "Application startup failed" not in output, output
    assert "Traceback" not in output, output
