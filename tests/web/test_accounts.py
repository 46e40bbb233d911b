"""Accounts: register, login by username or email, logout, me; cookies, CSRF and the login limit."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import select, update

from devops_agent.billing.models import User
from devops_agent.web.models import LoginThrottle
from devops_agent.web.ratelimit import Limit, LoginLimiter, RegistrationLimiter
from tests.factories import gather_all
from tests.web.conftest import PASSWORD, SQLITE_ONLY, make_client, register


async def test_register_puts_the_user_on_free_with_twenty_credits_and_logs_in(client, app: FastAPI) -> None:
    response = await client.post(
        "/api/auth/register", json={"username": "ada", "email": "Ada@Example.com", "password": PASSWORD}
    )
    assert response.status_code == 201
    assert response.json() == {"user": {"id": 1, "username": "ada", "email": "ada@example.com"}}
    cookies = response.headers.get_list("set-cookie")
    session_cookie = next(c for c in cookies if c.startswith("session="))
    csrf_cookie = next(c for c in cookies if c.startswith("csrf_token="))
    assert "HttpOnly" in session_cookie
    assert "samesite=lax" in session_cookie.lower()
    assert "HttpOnly" not in csrf_cookie  # browser code must read it
    assert "Secure" not in session_cookie  # COOKIE_SECURE is off here

    me = await client.get("/api/auth/me")
    assert me.json()["user"]["username"] == "ada"
    sub = (await client.get("/api/subscription")).json()["subscription"]
    assert sub["tier"]["name"] == "free"
    assert sub["credits_remaining"] == 20

    async with app.state.db.transaction() as session:
        stored = (await session.execute(select(User.password_hash))).scalar_one()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


async def test_cookies_are_secure_when_cookie_secure_is_set(db, tmp_path) -> None:
    from tests.web.conftest import build_app

    app = build_app(db, tmp_path, cookie_secure=True)
    async with make_client(app) as client:
        response = await client.post(
            "/api/auth/register", json={"username": "sec", "email": "sec@example.com", "password": PASSWORD}
        )
    assert all("Secure" in c for c in response.headers.get_list("set-cookie"))


async def test_duplicate_username_or_email_is_409_already_exists(client) -> None:
    await register(client, "bob")
    for body in (
        {"username": "BOB", "email": "other@example.com", "password": PASSWORD},
        {"username": "bobby", "email": "BOB@example.com", "password": PASSWORD},
    ):
        response = await client.post("/api/auth/register", json=body)
        assert response.status_code == 409
        assert response.json()["error"] == "already_exists"


REGISTER_MISTAKES = [
    ({"username": "ab", "email": "a@example.com", "password": PASSWORD}, "username"),
    ({"username": "bad name!", "email": "a@example.com", "password": PASSWORD}, "username"),
    ({"username": "x" * 33, "email": "a@example.com", "password": PASSWORD}, "username"),
    ({"username": "okname", "email": "not-an-email", "password": PASSWORD}, "email"),
    ({"username": "okname", "email": "a@example.com", "password": "short"}, "password"),
    ({"username": "okname", "email": "a@example.com"}, "password"),
    ({"username": 12345, "email": "a@example.com", "password": PASSWORD}, "username"),
]


@SQLITE_ONLY  # schema validation happens before any database work
async def test_register_validation_names_the_field(client) -> None:
    for body, field in REGISTER_MISTAKES:
        response = await client.post("/api/auth/register", json=body)
        assert response.status_code == 422, body
        assert response.json()["error"] == "validation_error"
        assert field in [d["field"] for d in response.json()["details"]]
    assert (await client.get("/api/auth/me")).status_code == 401


async def test_login_by_username_or_email_and_logout(app: FastAPI) -> None:
    async with make_client(app) as first:
        await register(first, "carol")
    async with make_client(app) as client:
        assert (await client.get("/api/auth/me")).status_code == 401
        for name in ("carol", "CAROL@example.com"):
            response = await client.post("/api/auth/login", json={"username": name, "password": PASSWORD})
            assert response.status_code == 200, response.text
            assert response.json()["user"]["username"] == "carol"
        assert (await client.get("/api/auth/me")).status_code == 200
        client.headers["X-CSRF-Token"] = client.cookies["csrf_token"]
        assert (await client.post("/api/auth/logout")).status_code == 204
        assert (await client.get("/api/auth/me")).json()["error"] == "unauthenticated"


async def test_wrong_password_and_unknown_user_are_the_same_401(app: FastAPI) -> None:
    async with make_client(app) as client:
        await register(client, "dave")
        client.cookies.clear()
        wrong = await client.post("/api/auth/login", json={"username": "dave", "password": "wrong-password"})
        unknown = await client.post("/api/auth/login", json={"username": "nobody", "password": "wrong-password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"] == "invalid_credentials"


async def test_cookie_post_without_matching_csrf_token_is_refused(client) -> None:
    await register(client)
    token = client.headers.pop("X-CSRF-Token")
    missing = await client.post("/api/credits/purchase", json={"pack_size": 100})
    wrong = await client.post("/api/credits/purchase", json={"pack_size": 100}, headers={"X-CSRF-Token": "forged"})
    for response in (missing, wrong):
        assert response.status_code == 403
        assert response.json()["error"] == "csrf_failed"
    assert (await client.get("/api/subscription")).json()["subscription"]["credits_remaining"] == 20
    ok = await client.post("/api/credits/purchase", json={"pack_size": 100}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 200


async def test_a_forged_or_stale_session_cookie_is_not_a_login(app: FastAPI) -> None:
    async with make_client(app) as client:
        await register(client, "erin")
        client.cookies.set("session", client.cookies["session"][:-2] + "xx")
        assert (await client.get("/api/auth/me")).status_code == 401
    async with make_client(app) as client:
        await register(client, "frank")
        # A new password ends the sessions made with the old one.
        async with app.state.db.transaction() as session:
            await session.execute(update(User).where(User.username == "frank").values(password_hash="$argon2id$new"))
        assert (await client.get("/api/auth/me")).status_code == 401


async def test_suspended_user_is_forbidden(app: FastAPI, client) -> None:
    await register(client, "gina")
    async with app.state.db.transaction() as session:
        await session.execute(update(User).where(User.username == "gina").values(is_suspended=True))
    response = await client.get("/api/subscription")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


async def test_login_is_limited_per_account_with_retry_after_across_app_instances(app: FastAPI, tmp_path) -> None:
    from tests.web.conftest import build_app

    other_worker = build_app(app.state.db, tmp_path)  # a second process sharing the database
    for a in (app, other_worker):
        a.state.login_limiter = LoginLimiter(
            account=Limit(3, timedelta(minutes=15)), address=Limit(100, timedelta(hours=1))
        )
        a.state.clock = app.state.clock
    async with make_client(app) as client:
        await register(client, "hank")
    bad = {"username": "hank", "password": "wrong-password"}
    async with make_client(app) as one, make_client(other_worker) as two:
        for c in (one, two, one):
            assert (await c.post("/api/auth/login", json=bad)).status_code == 401
        refused = await two.post("/api/auth/login", json={"username": "hank", "password": PASSWORD})
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) == 15 * 60
        app.state.clock.advance(minutes=10)
        assert int((await one.post("/api/auth/login", json=bad)).headers["Retry-After"]) == 5 * 60
        app.state.clock.advance(minutes=5)
        assert (await one.post("/api/auth/login", json={"username": "hank", "password": PASSWORD})).status_code == 200
    async with app.state.db.transaction() as session:
        buckets = (await session.execute(select(LoginThrottle.bucket))).scalars().all()
    assert "account:hank" not in buckets  # a good login clears the account's count


async def test_login_is_limited_per_client_address(app: FastAPI) -> None:
    app.state.login_limiter = LoginLimiter(
        account=Limit(100, timedelta(minutes=15)), address=Limit(4, timedelta(minutes=15))
    )
    async with make_client(app) as client:
        statuses = [
            (await client.post("/api/auth/login", json={"username": f"guess{i}", "password": "wrong-pass"})).status_code
            for i in range(5)
        ]
    assert statuses == [401, 401, 401, 401, 429]


def _signup(n: int) -> dict[str, str]:
    return {"username": f"farm{n}", "email": f"farm{n}@example.com", "password": PASSWORD}


async def _users(app: FastAPI) -> int:
    async with app.state.db.transaction() as session:
        return len((await session.execute(select(User.id))).all())


async def test_registrations_are_limited_per_client_address(app: FastAPI) -> None:
    """Each account comes with Free credits: one address cannot open accounts without end."""
    app.state.registration_limiter = RegistrationLimiter(per_hour=3)
    async with make_client(app) as client:
        statuses = [(await client.post("/api/auth/register", json=_signup(i))).status_code for i in range(3)]
        assert statuses == [201, 201, 201]
        refused = await client.post("/api/auth/register", json=_signup(3))
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) == 3600
        assert await _users(app) == 3  # nothing written for the refused one
        app.state.clock.advance(minutes=61)
        assert (await client.post("/api/auth/register", json=_signup(3))).status_code == 201


async def test_concurrent_registrations_never_pass_the_limit(app: FastAPI) -> None:
    """The count is bumped and checked in the registration's own transaction."""
    app.state.registration_limiter = RegistrationLimiter(per_hour=5)
    async with make_client(app) as client:
        responses = await gather_all(*(client.post("/api/auth/register", json=_signup(i)) for i in range(12)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 5 + [429] * 7
    assert await _users(app) == 5


async def test_a_limit_of_zero_turns_it_off(app: FastAPI) -> None:
    app.state.registration_limiter = RegistrationLimiter(per_hour=0)
    async with make_client(app) as client:
        for i in range(12):
            assert (await client.post("/api/auth/register", json=_signup(i))).status_code == 201


async def test_racing_sign_ups_that_differ_only_by_case_make_one_account(app: FastAPI) -> None:
    async with make_client(app) as one, make_client(app) as two:
        casey = {"username": "Casey", "email": "casey@example.com", "password": PASSWORD}
        responses = await gather_all(
            one.post("/api/auth/register", json=casey),
            two.post("/api/auth/register", json={**casey, "username": "casey", "email": "other-casey@example.com"}),
        )
    assert sorted(r.status_code for r in responses) == [201, 409]
    assert [r.json()["error"] for r in responses if r.status_code == 409] == ["already_exists"]
    assert await _users(app) == 1
