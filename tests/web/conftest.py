"""Fixtures for HTTP tests: the app on the test database, clients, and a ``register`` helper.

Other suites (chat, admin, pages, Stripe) import these::

    from tests.web.conftest import make_client, register

``app`` is ``create_app`` bound to the ``db`` fixture (so every test runs on SQLite
and PostgreSQL) with a movable clock: ``app.state.clock.advance(days=31)``.
Passwords are hashed with cheap Argon2 parameters to keep the suite fast.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI

from devops_agent.config import Settings
from devops_agent.db import Database
from devops_agent.users import Passwords
from devops_agent.web.app import create_app
from devops_agent.web.security import CSRF_COOKIE
from tests.factories import T0

BASE_URL = "http://testserver"
# For tests of pure HTTP behaviour (validation, routing) that touch the database in no
# backend-specific way: run them on SQLite only to keep the suite fast.
SQLITE_ONLY = pytest.mark.parametrize("db", ["sqlite"], indirect=True)
PASSWORD = "correct-horse-battery"
_names = itertools.count(1)


class MovableClock:
    """A clock tests move by hand; it never moves by itself."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def fast_passwords() -> Passwords:
    """Argon2id with test-sized cost (the production defaults take ~50 ms a hash)."""
    return Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def build_app(db: Database, tmp_path: Path, **settings: Any) -> FastAPI:
    """``create_app`` on an existing database, with a movable clock and fast hashing."""
    cfg = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url="sqlite:///" + str(tmp_path / "unused.db"),
        secret_key="test-secret-key",
        log_dir=tmp_path / "logs",
        **settings,
    )
    app = create_app(cfg, database=db, clock=MovableClock())
    app.state.passwords = fast_passwords()
    return app


@pytest.fixture
def app(db: Database, tmp_path: Path) -> FastAPI:
    return build_app(db, tmp_path)


def make_client(app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
    """A client of ``app`` over ASGI with its own cookie jar (a second user, a script)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL, **kwargs)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(app) as c:
        yield c


async def register(client: httpx.AsyncClient, username: str | None = None, password: str = PASSWORD) -> dict[str, Any]:
    """Register a new user; the client keeps the session cookie and sends the CSRF header from now on.

    Returns the ``user`` object of the response.
    """
    name = username or f"user{next(_names)}"
    response = await client.post(
        "/api/auth/register", json={"username": name, "email": f"{name}@example.com", "password": password}
    )
    assert response.status_code == 201, response.text
    client.headers["X-CSRF-Token"] = client.cookies[CSRF_COOKIE]
    user: dict[str, Any] = response.json()["user"]
    return user
