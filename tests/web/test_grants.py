"""Credit grants over HTTP: the customer's list, an admin's promotional grant, the sign-up bonus.

``GET /api/credits/grants`` lists what the credits come from in the order they will be
spent; ``POST /api/admin/{users,orgs}/{id}/grants`` gives promotional credits (audited);
the subscription and the ledger show the promotional balance beside the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from devops_agent.billing import audit
from devops_agent.billing.catalog import DEFAULT_PRICING_FILE
from devops_agent.billing.models import CreditGrant, CreditLedger, User
from devops_agent.config import get_settings
from devops_agent.db import Database
from tests.analytics.test_admin_api import make_admin
from tests.factories import T0
from tests.orgs.factories import make_org
from tests.web.conftest import SQLITE_ONLY, build_app, make_client, register

GRANT_KEYS = {"id", "category", "credits", "remaining", "priority", "effective_at", "expires_at", "source"}


def _iso(days: float) -> str:
    return (T0 + timedelta(days=days)).isoformat()


async def _grants(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/credits/grants", params=params)
    assert response.status_code == 200, response.text
    grants: list[dict[str, Any]] = response.json()["grants"]
    return grants


async def _give(client: httpx.AsyncClient, user_id: int, **body: Any) -> httpx.Response:
    return await client.post(f"/api/admin/users/{user_id}/grants", json=body)


async def _audit_rows(db: Database) -> list[audit.AdminAudit]:
    async with db.transaction() as session:
        return list((await session.execute(select(audit.AdminAudit).order_by(audit.AdminAudit.id))).scalars())


async def test_an_admin_grant_is_listed_audited_and_counted(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    admin = await make_admin(app, client)
    async with make_client(app) as customer_client:
        customer = await register(customer_client, "customer")
        response = await _give(client, customer["id"], credits=40, expires_at=_iso(30), reason="  conference booth ")
        assert response.status_code == 201, response.text
        grant = response.json()["grant"]
        assert set(grant) == GRANT_KEYS
        assert (grant["category"], grant["credits"], grant["remaining"], grant["source"]) == (
            "promotional",
            40,
            40,
            f"admin:{admin['id']}",
        )
        assert (grant["effective_at"], grant["expires_at"]) == (T0.isoformat(), _iso(30))

        # The customer sees the grant, the promotional balance and the ledger row with its reason.
        listed = await _grants(customer_client)
        assert grant in listed
        subscription = (await customer_client.get("/api/subscription")).json()["subscription"]
        assert (
            subscription["monthly_credits_remaining"],
            subscription["purchased_credits_remaining"],
            subscription["promotional_credits_remaining"],
            subscription["credits_remaining"],
        ) == (20, 0, 40, 60)
        newest = (await customer_client.get("/api/credits/ledger")).json()["entries"][0]
        assert (newest["kind"], newest["credits"], newest["reason"]) == ("grant", 40, "conference booth")
        assert (newest["monthly_after"], newest["purchased_after"], newest["promotional_after"]) == (20, 0, 40)

    # One audit row, naming the admin, the user, the reason and the grant's ledger row.
    (entry,) = await _audit_rows(db)
    async with db.transaction() as session:
        ledger_id = await session.scalar(select(CreditLedger.id).where(CreditLedger.grant_id == grant["id"]))
    assert (entry.action, entry.admin_id, entry.target_user_id, entry.reason, entry.ledger_id) == (
        "grant_credits",
        admin["id"],
        customer["id"],
        "conference booth",
        ledger_id,
    )
    assert entry.details == {"grant_id": grant["id"], "credits": 40, "expires_at": _iso(30)}
    detail = (await client.get(f"/api/admin/users/{customer['id']}")).json()
    assert [g["id"] for g in detail["grants"] if g["category"] == "promotional"] == [grant["id"]]
    assert detail["ledger"][0]["promotional_delta"] == 40
    assert detail["ledger"][0]["balance_after"] == 60


async def test_a_retried_grant_with_its_idempotency_key_gives_once(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    await make_admin(app, client)
    async with make_client(app) as customer_client:
        customer = await register(customer_client, "customer")
    answers = [
        await client.post(
            f"/api/admin/users/{customer['id']}/grants",
            json={"credits": 25, "expires_at": None, "reason": "ticket 42"},
            headers={"Idempotency-Key": "ticket-42"},
        )
        for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].json() == answers[1].json()
    assert len(await _audit_rows(db)) == 1
    async with db.transaction() as session:
        promotional = await session.scalar(
            select(func.count()).select_from(CreditGrant).where(CreditGrant.category == "promotional")
        )
    assert promotional == 1


async def test_grants_are_listed_in_draw_down_order_and_leave_when_spent_or_expired(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await make_admin(app, client)
    async with make_client(app) as customer_client:
        customer = await register(customer_client, "customer")
        never = (await _give(client, customer["id"], credits=5, reason="no expiry")).json()["grant"]
        soon = (await _give(client, customer["id"], credits=7, expires_at=_iso(10), reason="ten days")).json()["grant"]
        paid = await client.post(f"/api/admin/users/{customer['id']}/adjust", json={"amount": 9, "reason": "outage"})
        assert paid.status_code == 200

        # Soonest expiry first (the 10-day grant, then the plan's month), never-expiring last:
        # promotional before paid.
        listed = await _grants(customer_client)
        assert [(g["category"], g["remaining"]) for g in listed] == [
            ("promotional", 7),
            ("plan", 20),
            ("promotional", 5),
            ("paid", 9),
        ]
        assert (listed[0]["id"], listed[2]["id"]) == (soon["id"], never["id"])
        assert listed[1]["expires_at"] == (T0 + timedelta(days=31)).isoformat()

        # Ten days on, the first grant's 7 credits have expired: gone from the list, a readable ledger row.
        app.state.clock.advance(days=10)
        listed = await _grants(customer_client)
        assert [(g["category"], g["remaining"]) for g in listed] == [("plan", 20), ("promotional", 5), ("paid", 9)]
        expiry = (await customer_client.get("/api/credits/ledger", params={"kind": "expiry"})).json()["entries"]
        assert [(e["credits"], e["reason"]) for e in expiry] == [
            (-7, f"7 promotional credits expired on {(T0 + timedelta(days=10)):%Y-%m-%d}")
        ]


async def test_a_pool_gets_grants_its_members_read(app: FastAPI, client: httpx.AsyncClient, db: Database) -> None:
    admin = await make_admin(app, client)
    async with make_client(app) as owner_client:
        owner = await register(owner_client, "owner")
        async with db.transaction() as session:
            owner_row = await session.get(User, owner["id"])
            assert owner_row is not None
            org_id = (await make_org(session, owner=owner_row, now=T0)).id

        response = await client.post(
            f"/api/admin/orgs/{org_id}/grants", json={"credits": 100, "expires_at": _iso(60), "reason": "pilot team"}
        )
        assert response.status_code == 201, response.text
        grant = response.json()["grant"]
        pool = await _grants(owner_client, org_id=org_id)
        assert [(g["category"], g["remaining"]) for g in pool] == [("plan", 20), ("promotional", 100)]
        assert pool[1] == grant
        assert [g["category"] for g in await _grants(owner_client)] == ["plan"]  # the owner's own account
        pool_subscription = (await owner_client.get(f"/api/orgs/{org_id}/subscription")).json()["subscription"]
        assert (pool_subscription["promotional_credits_remaining"], pool_subscription["credits_remaining"]) == (
            100,
            120,
        )

    (entry,) = await _audit_rows(db)
    assert (entry.action, entry.admin_id, entry.target_user_id, entry.reason) == (
        "grant_credits",
        admin["id"],
        None,
        "pilot team",
    )
    assert entry.details == {"grant_id": grant["id"], "credits": 100, "expires_at": _iso(60), "org_id": org_id}

    async with make_client(app) as stranger:
        await register(stranger)
        refused = await stranger.get("/api/credits/grants", params={"org_id": org_id})
        assert (refused.status_code, refused.json()["error"]) == (404, "organization_not_found")
    unknown = await client.post("/api/admin/orgs/999/grants", json={"credits": 1, "reason": "nobody"})
    assert (unknown.status_code, unknown.json()["error"]) == (404, "organization_not_found")


@SQLITE_ONLY
async def test_only_signed_in_customers_read_grants_and_only_admins_give_them(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async with make_client(app) as anonymous:
        assert (await anonymous.get("/api/credits/grants")).json()["error"] == "unauthenticated"
        response = await anonymous.post("/api/admin/users/1/grants", json={"credits": 5, "reason": "free money"})
        assert (response.status_code, response.json()["error"]) == (401, "unauthenticated")
    me = await register(client, "mallory")
    response = await _give(client, me["id"], credits=5, reason="free money")
    assert (response.status_code, response.json()["error"]) == (403, "forbidden")
    response = await client.post("/api/admin/orgs/1/grants", json={"credits": 5, "reason": "free money"})
    assert response.status_code == 403
    assert [g["category"] for g in await _grants(client)] == ["plan"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"credits": 0, "reason": "nothing"}, "credits"),
        ({"credits": -5, "reason": "take some"}, "credits"),
        ({"credits": 1_000_001, "reason": "too generous"}, "credits"),
        ({"credits": "ten", "reason": "not a number"}, "credits"),
        ({"credits": 5}, "reason"),
        ({"credits": 5, "reason": ""}, "reason"),
        ({"credits": 5, "reason": "x", "expires_at": None, "extra": 1}, "extra"),
        ({"credits": 5, "reason": "naive time", "expires_at": "2026-12-31T23:59:59"}, "expires_at"),
        ({"credits": 5, "reason": "not a time", "expires_at": "soon"}, "expires_at"),
    ],
)
@SQLITE_ONLY
async def test_a_body_the_schema_refuses_is_400_invalid_request_naming_the_field(
    app: FastAPI, client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    await make_admin(app, client)
    response = await _give(client, 1, **body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"] == "invalid_request"
    assert field in [d["field"] for d in error["details"]]
    assert error["message"]
    if field == "expires_at" and "naive" in body["reason"]:
        assert "time zone" in error["message"]


async def test_values_the_engine_refuses_are_400_and_change_nothing(
    app: FastAPI, client: httpx.AsyncClient, db: Database
) -> None:
    await make_admin(app, client)
    async with make_client(app) as customer_client:
        customer = await register(customer_client, "customer")
        for body, said in (
            ({"credits": 5, "reason": "    "}, "reason"),
            ({"credits": 5, "reason": "the past", "expires_at": _iso(-1)}, "future"),
            ({"credits": 5, "reason": "right now", "expires_at": T0.isoformat()}, "future"),
        ):
            response = await _give(client, customer["id"], **body)
            assert response.status_code == 400, response.text
            error = response.json()
            assert set(error) == {"error", "message"}
            assert error["error"] == "invalid_request"
            assert said in error["message"]
        unknown = await _give(client, 999, credits=5, reason="nobody")
        assert (unknown.status_code, unknown.json()["error"]) == (404, "user_not_found")
        assert await _audit_rows(db) == []
        assert [g["category"] for g in await _grants(customer_client)] == ["plan"]


@SQLITE_ONLY
def test_openapi_documents_the_grant_routes(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    listed = paths["/api/credits/grants"]["get"]["responses"]
    assert listed["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/GrantsOut")
    for path in ("/api/admin/users/{user_id}/grants", "/api/admin/orgs/{org_id}/grants"):
        responses = paths[path]["post"]["responses"]
        assert responses["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/GrantCreatedOut")
        for status in ("400", "401", "403", "404"):
            assert responses[status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut"), status


# --- the sign-up bonus -----------------------------------------------------------------


@pytest.fixture
def bonus_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The shipped catalog plus a sign-up bonus, named by PRICING_FILE (the engine reads the settings' catalog)."""
    path = tmp_path / "pricing.toml"
    path.write_text(DEFAULT_PRICING_FILE.read_text() + "\n[signup_bonus]\ncredits = 15\nexpires_after_days = 30\n")
    monkeypatch.setenv("PRICING_FILE", str(path))
    get_settings.cache_clear()
    yield path
    get_settings.cache_clear()


async def test_registering_with_a_bonus_in_the_catalog_gives_a_promotional_grant(
    db: Database, tmp_path: Path, bonus_catalog: Path
) -> None:
    app = build_app(db, tmp_path, pricing_file=bonus_catalog)
    async with make_client(app) as client:
        await register(client, "newcomer")
        (bonus, plan) = await _grants(client)  # the bonus expires first (30 days; the plan's month is 31)
        assert (plan["category"], plan["remaining"]) == ("plan", 20)
        assert (bonus["category"], bonus["credits"], bonus["source"], bonus["expires_at"]) == (
            "promotional",
            15,
            "signup_bonus",
            _iso(30),
        )
        subscription = (await client.get("/api/subscription")).json()["subscription"]
        assert (subscription["promotional_credits_remaining"], subscription["credits_remaining"]) == (15, 35)
        entries = (await client.get("/api/credits/ledger")).json()["entries"]
        assert [(e["kind"], e["credits"], e["reason"]) for e in entries] == [
            ("grant", 15, "sign-up bonus"),
            ("monthly_grant", 20, "Free tier: opening grant"),
        ]


async def test_registering_without_a_bonus_gives_none(client: httpx.AsyncClient) -> None:
    await register(client)
    assert [g["category"] for g in await _grants(client)] == ["plan"]
    assert (await client.get("/api/subscription")).json()["subscription"]["promotional_credits_remaining"] == 0
