"""Sessions end when people say so: logout, log out everywhere, a new password. API keys stay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event, func, select

from devops_agent.web.models import UserSession
from devops_agent.web.security import CSRF_COOKIE, SESSION_COOKIE
from tests.web.conftest import PASSWORD, make_client, register
from tests.web.test_api_keys import upgrade_to

NEW_PASSWORD = "a-new-and-longer-password"


def copy_of(client: httpx.AsyncClient, app: FastAPI) -> httpx.AsyncClient:
    """Another client holding a copy of ``client``'s cookies and CSRF header (a stolen cookie)."""
    thief = make_client(app)
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        thief.cookies.set(name, client.cookies[name])
    thief.headers["X-CSRF-Token"] = client.cookies[CSRF_COOKIE]
    return thief


@asynccontextmanager
async def login(app: FastAPI, username: str, password: str = PASSWORD) -> AsyncIterator[httpx.AsyncClient]:
    """A second browser logged in to the same account."""
    async with make_client(app) as browser:
        response = await browser.post("/api/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        browser.headers["X-CSRF-Token"] = browser.cookies[CSRF_COOKIE]
        yield browser


async def balance(client: httpx.AsyncClient) -> int:
    response = await client.get("/api/subscription")
    assert response.status_code == 200, response.text
    credits: int = response.json()["subscription"]["credits_remaining"]
    return credits


async def api_key(client: httpx.AsyncClient) -> dict[str, str]:
    await upgrade_to(client, "starter")
    created = await client.post("/api/keys", json={"name": "ci"})
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['secret']}"}


async def sessions_of(app: FastAPI, user: dict[str, Any]) -> int:
    async with app.state.db.transaction() as session:
        count = await session.scalar(select(func.count()).where(UserSession.user_id == user["id"]))
    return int(count or 0)


async def test_a_copied_cookie_stops_working_at_logout_and_cannot_buy(app: FastAPI, client: httpx.AsyncClient) -> None:
    user = await register(client)
    async with copy_of(client, app) as thief:
        assert (await thief.get("/api/auth/me")).status_code == 200  # the copy works while the session lives

        assert (await client.post("/api/auth/logout")).status_code == 204

        assert (await thief.get("/api/auth/me")).status_code == 401
        bought = await thief.post("/api/credits/purchase", json={"pack_size": 100})
        assert (bought.status_code, bought.json()["error"]) == (401, "unauthenticated")
        assert (await thief.post("/api/auth/logout-everywhere")).status_code == 401
    async with login(app, user["username"]) as again:
        assert await balance(again) == 20  # nothing was bought


async def test_logout_ends_only_that_session(app: FastAPI, client: httpx.AsyncClient) -> None:
    user = await register(client)
    async with login(app, user["username"]) as laptop:
        assert await sessions_of(app, user) == 2
        assert (await laptop.post("/api/auth/logout")).status_code == 204
        assert (await laptop.get("/api/auth/me")).status_code == 401
        assert (await client.get("/api/auth/me")).status_code == 200
        assert await sessions_of(app, user) == 1


async def test_logout_everywhere_ends_every_session_but_not_the_api_keys(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await register(client)
    key = await api_key(client)
    async with login(app, user["username"]) as laptop, copy_of(laptop, app) as thief:
        response = await laptop.post("/api/auth/logout-everywhere")
        assert response.status_code == 204
        assert any(c.startswith("session=") and "Max-Age=0" in c for c in response.headers.get_list("set-cookie"))
        for browser in (client, laptop, thief):
            assert (await browser.get("/api/auth/me")).status_code == 401
        bought = await thief.post("/api/credits/purchase", json={"pack_size": 100})
        assert bought.status_code == 401
    assert await sessions_of(app, user) == 0
    async with make_client(app, headers=key) as script:
        assert (await script.get("/api/auth/me")).json()["user"]["id"] == user["id"]
        assert (await script.post("/api/auth/logout-everywhere")).status_code == 204  # a key may end them too
        assert (await script.get("/api/auth/me")).status_code == 200  # and goes on working
    async with login(app, user["username"]) as back:
        assert (await back.get("/api/auth/me")).status_code == 200


async def test_a_new_password_ends_the_other_sessions_and_keeps_this_one(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await register(client)
    key = await api_key(client)
    async with login(app, user["username"]) as laptop, copy_of(client, app) as thief:
        changed = await client.post(
            "/api/account/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        )
        assert changed.status_code == 204, changed.text

        assert (await laptop.get("/api/auth/me")).status_code == 401
        # The stolen copy carried the old password's fingerprint: it is out too.
        assert (await thief.get("/api/auth/me")).status_code == 401
        # This browser goes on, writes included (its CSRF token is unchanged).
        assert (await client.get("/api/auth/me")).status_code == 200
        assert (await client.post("/api/credits/purchase", json={"pack_size": 100})).status_code == 200
    assert await sessions_of(app, user) == 1
    async with make_client(app) as browser:
        old = await browser.post("/api/auth/login", json={"username": user["username"], "password": PASSWORD})
        assert old.status_code == 401
    async with login(app, user["username"], NEW_PASSWORD) as browser:
        assert (await browser.get("/api/auth/me")).status_code == 200
    async with make_client(app, headers=key) as script:
        assert (await script.get("/api/auth/me")).status_code == 200


async def test_a_copied_cookie_of_the_session_that_changed_the_password_lives_on_only_as_that_session(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The session stays valid (it is the user's own); logging it out ends the copy as well."""
    await register(client)
    changed = await client.post(
        "/api/account/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert changed.status_code == 204
    async with copy_of(client, app) as copy:
        assert (await copy.get("/api/auth/me")).status_code == 200
        assert (await client.post("/api/auth/logout")).status_code == 204
        assert (await copy.get("/api/auth/me")).status_code == 401


async def test_a_wrong_current_password_is_403_and_changes_nothing(app: FastAPI, client: httpx.AsyncClient) -> None:
    user = await register(client)
    async with login(app, user["username"]) as laptop:
        wrong = await client.post(
            "/api/account/password", json={"current_password": "not-the-password", "new_password": NEW_PASSWORD}
        )
        assert (wrong.status_code, wrong.json()["error"]) == (403, "invalid_credentials")
        assert (await laptop.get("/api/auth/me")).status_code == 200
    async with login(app, user["username"]) as browser:  # the old password still works
        assert (await browser.get("/api/auth/me")).status_code == 200


async def test_password_change_validation_is_400(app: FastAPI, client: httpx.AsyncClient) -> None:
    await register(client)
    for body, field in (
        ({"current_password": PASSWORD, "new_password": "short"}, "new_password"),
        ({"current_password": PASSWORD}, "new_password"),
        ({"new_password": NEW_PASSWORD}, "current_password"),
        ({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "extra": 1}, "extra"),
    ):
        response = await client.post("/api/account/password", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"] == "validation_error"
        assert field in {d["field"] for d in response.json()["details"]}
    async with make_client(app) as visitor:
        anonymous = await visitor.post(
            "/api/account/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        )
        assert anonymous.status_code == 401
    no_csrf = await client.post(
        "/api/account/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers={"X-CSRF-Token": ""},
    )
    assert (no_csrf.status_code, no_csrf.json()["error"]) == (403, "csrf_failed")


async def test_a_cookie_request_reads_its_session_and_user_in_one_statement(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The server-side check adds no query: the session row is joined into the user lookup."""
    await register(client)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = app.state.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert (await client.get("/api/auth/me")).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 1, selects
    assert "user_sessions" in selects[0]
