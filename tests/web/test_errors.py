"""Every error of the contract comes out as ``{"error", "message", ...}`` JSON, never a 500."""

from __future__ import annotations

from datetime import datetime

import httpx
from fastapi import FastAPI

from devops_agent import billing
from devops_agent.web.deps import CurrentUser, NowDep, SessionDep
from tests.web.conftest import SQLITE_ONLY, make_client, register

SEED_402_MESSAGE = "You have run out of credits. Please upgrade your plan or purchase more credits."


def add_spend_route(app: FastAPI) -> None:
    """A route that spends credits the way the chat endpoint does, to see the 402 mapping."""

    async def spend(user: CurrentUser, session: SessionDep, now: NowDep) -> dict[str, int]:
        result = await billing.charge(session, user_id=user.id, amount=25, action_type="agent_message", now=now)
        return {"credits_remaining": result.balance.total}

    app.add_api_route("/api/test-spend", spend, methods=["POST"])


async def test_insufficient_credits_is_the_seeds_exact_402(app: FastAPI, client) -> None:
    add_spend_route(app)
    await register(client)
    response = await client.post("/api/test-spend")
    assert response.status_code == 402
    body = response.json()
    assert set(body) == {"error", "message", "credits_remaining", "tier"}
    assert body["error"] == "insufficient_credits"
    assert body["message"] == SEED_402_MESSAGE
    assert body["credits_remaining"] == 20
    assert body["tier"]["name"] == "free"
    assert set(body["tier"]) == {
        "id",
        "name",
        "display_name",
        "monthly_price",
        "monthly_credits",
        "description",
        "features",
        "is_active",
    }
    # Nothing was spent: the refused charge rolled back.
    assert (await client.get("/api/subscription")).json()["subscription"]["credits_remaining"] == 20


async def test_domain_errors_of_the_seed_endpoints(client) -> None:
    await register(client)
    cases = [
        (await client.post("/api/subscription/upgrade", json={"tier_id": 999}), 404, "tier_not_found"),
        (await client.post("/api/subscription/upgrade", json={"tier_id": 1}), 400, "already_on_tier"),
        (await client.post("/api/subscription/cancel"), 400, "already_on_tier"),
        (await client.post("/api/credits/purchase", json={"pack_size": 123}), 400, "invalid_pack_size"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"] == code
        assert response.json()["message"]
    sub = (await client.get("/api/subscription")).json()["subscription"]
    assert (sub["credits_remaining"], sub["tier"]["name"], sub["cancel_at_period_end"]) == (20, "free", False)


@SQLITE_ONLY  # refused before any query
async def test_every_private_endpoint_needs_a_login(client) -> None:
    for method, path in [
        ("GET", "/api/subscription"),
        ("POST", "/api/subscription/upgrade"),
        ("POST", "/api/subscription/cancel"),
        ("POST", "/api/credits/purchase"),
        ("GET", "/api/usage/stats"),
        ("GET", "/api/usage/history"),
        ("GET", "/api/auth/me"),
        ("GET", "/api/keys"),
        ("POST", "/api/keys"),
        ("DELETE", "/api/keys/1"),
    ]:
        response = await client.request(method, path, json={} if method == "POST" else None)
        assert response.status_code in (401, 422), (method, path, response.text)
        if response.status_code == 422:  # the body is checked first; with a valid body it is 401
            continue
        assert response.json()["error"] == "unauthenticated"
    assert (await client.post("/api/credits/purchase", json={"pack_size": 100})).status_code == 401


@SQLITE_ONLY
async def test_bad_input_is_4xx_json_never_500(app: FastAPI, client) -> None:
    await register(client)
    json_header = {"Content-Type": "application/json"}
    cases = [
        # malformed JSON, a body that is not an object, no body
        (await client.post("/api/credits/purchase", content=b'{"pack_size": ', headers=json_header), 400),
        (await client.post("/api/credits/purchase", content=b"[100]", headers=json_header), 400),
        (await client.post("/api/credits/purchase"), 400),
        (await client.post("/api/credits/purchase", content=b"pack_size=100"), 400),
        # wrong types, out-of-range numbers, unknown fields
        (await client.post("/api/credits/purchase", json={"pack_size": "lots"}), 422),
        (await client.post("/api/credits/purchase", json={"pack_size": 1.5}), 422),
        (await client.post("/api/credits/purchase", json={"pack_size": -100}), 422),
        (await client.post("/api/credits/purchase", json={"pack_size": 10**30}), 422),
        (await client.post("/api/credits/purchase", json={"pack_size": 100, "price": 0}), 422),
        (await client.post("/api/subscription/upgrade", json={"tier_id": None}), 422),
        # query values out of range
        (await client.get("/api/usage/history", params={"limit": 0}), 400),
        (await client.get("/api/usage/history", params={"limit": 201}), 400),
        (await client.get("/api/usage/history", params={"offset": -1}), 400),
        (await client.get("/api/usage/history", params={"limit": "ten"}), 400),
        # a bad Idempotency-Key, unknown routes and methods
        (
            await client.post("/api/credits/purchase", json={"pack_size": 100}, headers={"Idempotency-Key": "x" * 256}),
            400,
        ),
        (await client.get("/api/nothing-here"), 404),
        (await client.delete("/api/subscription"), 405),
        (await client.delete("/api/keys/abc"), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, (response.request.method, response.request.url, response.text)
        body = response.json()
        assert body["error"]
        assert body["message"]
        if status == 422:
            assert body["error"] == "validation_error"
            assert body["details"]
        if status == 400 and response.request.url.path == "/api/usage/history":
            assert body["error"] == "invalid_request"
    # None of it bought anything.
    assert (await client.get("/api/subscription")).json()["subscription"]["credits_remaining"] == 20


@SQLITE_ONLY
async def test_oversized_bodies_are_413_declared_or_streamed(app: FastAPI) -> None:
    huge = b'{"pack_size": 100, "pad": "' + b"x" * (1024 * 1024 + 10) + b'"}'

    async def chunks():
        for i in range(0, len(huge), 64 * 1024):
            yield huge[i : i + 64 * 1024]

    async with make_client(app) as client:
        await register(client)
        declared = await client.post(
            "/api/credits/purchase", content=huge, headers={"Content-Type": "application/json"}
        )
        streamed = await client.post(
            "/api/credits/purchase", content=chunks(), headers={"Content-Type": "application/json"}
        )
        for response in (declared, streamed):
            assert response.status_code == 413
            assert response.json()["error"] == "payload_too_large"
        assert (await client.get("/api/subscription")).json()["subscription"]["credits_remaining"] == 20


@SQLITE_ONLY
async def test_unexpected_errors_are_a_json_500_without_internals(app: FastAPI) -> None:
    async def broken(now: NowDep) -> datetime:
        raise RuntimeError("secret internals")

    app.add_api_route("/api/test-broken", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/api/test-broken")
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "message": "Something went wrong on our side."}


@SQLITE_ONLY
async def test_openapi_documents_every_error_of_the_contract_endpoints(client) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert (await client.get("/docs")).status_code == 200
    expected = {
        ("post", "/api/auth/register"): {"409", "422", "429"},
        ("post", "/api/auth/login"): {"401", "422", "429"},
        ("get", "/api/subscription"): {"401"},
        ("post", "/api/subscription/upgrade"): {"400", "401", "403", "404", "409", "422"},
        ("post", "/api/subscription/cancel"): {"400", "401", "403"},
        ("post", "/api/credits/purchase"): {"400", "401", "403", "409", "422"},
        ("get", "/api/usage/history"): {"400", "401"},
        ("post", "/api/keys"): {"401", "403", "409", "422"},
        ("delete", "/api/keys/{key_id}"): {"401", "404"},
    }
    for (method, path), statuses in expected.items():
        responses = spec["paths"][path][method]["responses"]
        assert statuses <= set(responses), (method, path, sorted(responses))
        for status in statuses:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema["$ref"].rsplit("/", 1)[-1] in ("ErrorOut", "InsufficientCreditsOut"), (path, status)
    assert "Retry-After" in spec["paths"]["/api/auth/login"]["post"]["responses"]["429"]["headers"]
    upgrade = spec["paths"]["/api/subscription/upgrade"]["post"]
    assert "Idempotency-Key" in [p["name"] for p in upgrade["parameters"]]


@SQLITE_ONLY
async def test_an_unavailable_database_is_a_503_to_retry(app: FastAPI, client) -> None:
    from sqlalchemy.exc import OperationalError

    async def busy(now: NowDep) -> datetime:
        raise OperationalError("SELECT 1", {}, Exception("too many clients already"))

    app.add_api_route("/api/test-busy", busy)
    response = await client.get("/api/test-busy")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["error"] == "service_unavailable"
