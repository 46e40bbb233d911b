"""Run the web service with uvicorn: ``devops-agent serve``, ``python app.py`` and ``make run``.

One process on SQLite (its busy wait is unfair to writers in other processes);
several workers on PostgreSQL. Shutdown is graceful: on SIGTERM/SIGINT uvicorn
stops accepting, lets requests in flight finish (up to ``GRACEFUL_SHUTDOWN_SECONDS``)
and then runs the app's shutdown (which disposes the database engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from sqlalchemy.engine import make_url

from devops_agent.agent.tools import check_catalog_tools, sandbox_server
from devops_agent.billing.catalog import CatalogError, load_catalog
from devops_agent.config import Settings, get_settings

GRACEFUL_SHUTDOWN_SECONDS = 20
# How long a worker may leave uvicorn's health ping unanswered before it is killed and
# replaced. uvicorn's 5 s is shorter than a worker's cold start on a busy two-core host
# (the cloud SDKs alone take seconds to import): workers were killed while starting,
# over and over (seen at load 13 on two cores). A hung worker is still replaced.
WORKER_HEALTHCHECK_SECONDS = 30


def app_factory() -> object:
    """The ASGI app for uvicorn's ``--factory`` (each worker builds its own)."""
    from devops_agent.web.app import create_app

    return create_app()


def check_workers(settings: Settings, workers: int) -> str | None:
    """Why ``workers`` cannot run with these settings, or None when it can."""
    if workers < 1:
        return "--workers must be at least 1."
    if workers > 1 and make_url(settings.database_url).get_backend_name() == "sqlite":
        return (
            "SQLite serves one process only (its locking is unfair across processes): "
            "run with --workers 1, or set DATABASE_URL to PostgreSQL for several workers."
        )
    return None


def check_catalog(settings: Settings) -> str | None:
    """Why the pricing file cannot be served (each worker would fail on it at start), or None."""
    try:
        check_catalog_tools(load_catalog(settings.pricing_file))
    except CatalogError as exc:
        return f"error: the pricing catalog is invalid: {exc}"
    return None


# prometheus-client's multiprocess mode (see ``devops_agent.metrics``).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def metrics_directory(workers: int) -> Iterator[Path | None]:
    """Give several workers a ``PROMETHEUS_MULTIPROC_DIR`` to share their metrics, and clean it after them.

    The workers inherit the variable, and read it when they first import the metrics.
    An operator's own directory (the variable already set) is emptied at start (files
    of an earlier run would add to this run's counts) and kept; otherwise a fresh
    temporary directory is made and removed when the server stops. One worker keeps
    its metrics in memory, unless the operator set the variable.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        yield path
        return
    if workers == 1:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="devops-agent-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def migrate_before_workers(settings: Settings) -> None:
    """Migrate once in the parent, so the workers start on a current schema.

    Each worker still runs the (then empty) upgrade at start-up, under the advisory
    lock of ``devops_agent.migrate``, which keeps any other starter safe too.
    """
    from devops_agent.db import Database
    from devops_agent.migrate import upgrade

    async def work() -> None:
        db = Database(settings.database_url, pool_size=1)
        try:
            await upgrade(db)
        finally:
            await db.dispose()

    asyncio.run(work())


def run_server(host: str | None = None, port: int | None = None, workers: int = 1) -> None:
    """Serve until interrupted; ``HOST``/``PORT`` (settings) apply when not given."""
    settings = get_settings()
    problem = check_workers(settings, workers) or check_catalog(settings)
    if problem:
        print(problem, file=sys.stderr)  # noqa: T201
        raise SystemExit(2)
    host = host or settings.host
    port = port or settings.port
    if workers > 1:
        migrate_before_workers(settings)
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    print(  # noqa: T201
        f"DevOps Agent listening on http://{host}:{port} (open http://{shown}:{port}) "
        f"with {workers} worker{'s' if workers > 1 else ''}; Ctrl+C to stop.",
        flush=True,
    )
    sandbox = None
    if settings.cloud == "sandbox" and not settings.sandbox_url:
        # One sandbox cloud for every worker (and it outlives a worker's restart).
        sandbox, url = sandbox_server.start()
        os.environ["SANDBOX_URL"] = url
        get_settings.cache_clear()
        print(f"Sandbox AWS (moto) at {url}, shared by every worker.", flush=True)  # noqa: T201
    try:
        with metrics_directory(workers):
            _run_uvicorn(host, port, workers)
    finally:
        if sandbox is not None:
            sandbox_server.stop(sandbox)


def _run_uvicorn(host: str, port: int, workers: int) -> None:
    uvicorn.run(
        "devops_agent.web.server:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        access_log=False,  # our own JSON request log replaces uvicorn's
        log_level="info",
        proxy_headers=True,
    )
