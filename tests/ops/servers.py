"""Real `devops-agent serve` processes for the operations tests: start on a free port, wait, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base_url: str
    output: Path

    def log_text(self) -> str:
        return self.output.read_text(errors="replace")

    def log(self) -> str:
        return self.log_text()[-4000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(database_url: str, workdir: Path, *, workers: int, **extra: str) -> Served:
    """Start `devops-agent serve --workers N` (offline agent, demo payments) and wait for /readyz."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "STRIPE_", "PROMETHEUS_"))}
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=uuid.uuid4().hex,
        LOG_DIR=str(workdir / "logs"),
        SMTP_URL="",
        REGISTRATION_LIMIT_PER_HOUR="0",
        TMPDIR=str(workdir),  # where serve makes its metrics directory
        **extra,
    )
    output = workdir / "server.out"
    with output.open("w") as out:  # a file, not a pipe nobody reads
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "devops-agent"),
                "serve",
                "--workers",
                str(workers),
                "--port",
                str(port),
            ],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches the workers too
        )
    served = Served(process, f"http://127.0.0.1:{port}", output)
    wait_ready(served, timeout=90)
    wait_workers(served, workers, timeout=90)
    return served


def wait_workers(served: Served, workers: int, *, timeout: float) -> None:
    """Wait until every worker has started (one answering /readyz says nothing of the others)."""
    started = time.monotonic()
    while served.log_text().count("Application startup complete") < workers:
        if served.process.poll() is not None or time.monotonic() - started > timeout:
            pytest.fail(f"{workers} workers did not all start within {timeout:.0f} s:\n{served.log()}")
        time.sleep(0.1)


def wait_ready(served: Served, *, timeout: float) -> float:
    """Poll /readyz until it answers 200; return how long it took."""
    started = time.monotonic()
    while True:
        if served.process.poll() is not None:
            pytest.fail(f"the server exited with {served.process.returncode}:\n{served.log()}")
        try:
            if httpx.get(f"{served.base_url}/readyz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        if time.monotonic() - started > timeout:
            pytest.fail(f"the server did not answer /readyz within {timeout:.0f} s:\n{served.log()}")
        time.sleep(0.1)


def stop(served: Served) -> None:
    """SIGTERM (graceful), then SIGKILL the whole group if it lingers."""
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(served.process.pid, signal.SIGKILL)
            served.process.wait(10)
    with contextlib.suppress(ProcessLookupError):  # a worker the parent lost track of must not outlive the test
        os.killpg(served.process.pid, signal.SIGKILL)
