"""One error convention: every domain error declares its code and status, and every body is its schema.

Errors raised on purpose (billing, agent, payments, the web layer's own) are all
``DomainError``s answered by one handler in ``web.errors``; a 402's body is built by
the schema that documents it, and OpenAPI documents every 402 code a route can answer.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

import devops_agent
from devops_agent.agent.service import ConversationNotFound
from devops_agent.billing.errors import MemberCapReached, SeatLimitReached
from devops_agent.errors import DomainError
from devops_agent.payments.stripe_client import PaymentProviderError
from devops_agent.web.errors import ApiError
from devops_agent.web.schemas import (
    PAYMENT_REQUIRED,
    InsufficientCreditsOut,
    MemberCapReachedOut,
    SeatLimitReachedOut,
)
from tests.web.conftest import SQLITE_ONLY, register
from tests.web.test_errors import add_spend_route


def _domain_errors() -> set[type[DomainError]]:
    """Every ``DomainError`` subclass of the package (every module imported first)."""
    for module in pkgutil.walk_packages(devops_agent.__path__, "devops_agent."):
        importlib.import_module(module.name)
    found: set[type[DomainError]] = set()
    todo = [DomainError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("devops_agent.") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def test_every_domain_error_declares_its_code_and_status_once() -> None:
    errors = _domain_errors() - {ApiError}  # the web layer's own: status and code per instance
    assert {"BillingError", "AgentError", "PaymentProviderError", "OrgForbidden", "ActionExpired"} <= {
        e.__name__ for e in errors
    }
    for error in errors:
        assert {"code", "status"} <= set(vars(error)), f"{error.__qualname__} must declare its code and status"
        assert re.fullmatch(r"[a-z_]+", error.code), error
        assert 400 <= error.status < 600, error
        if error.status == 402:  # a 402 body is built and documented by its own schema
            assert error.code in PAYMENT_REQUIRED, error


def _raising(app: FastAPI, path: str, error: Exception) -> None:
    async def fail() -> None:
        raise error

    app.add_api_route(path, fail, methods=["POST"])


@SQLITE_ONLY
async def test_every_family_of_errors_is_answered_by_the_one_handler(app: FastAPI, client) -> None:
    cases: list[tuple[Exception, int, dict[str, Any]]] = [
        (
            ConversationNotFound("There is no conversation 7."),
            404,
            {"error": "conversation_not_found", "message": "There is no conversation 7."},
        ),
        (
            PaymentProviderError("Stripe could not start the checkout: down"),
            502,
            {"error": "payment_provider_error", "message": "Stripe could not start the checkout: down"},
        ),
        (
            MemberCapReached(cap=30, used=30),
            402,
            {
                "error": "member_cap_reached",
                "message": "You have used 30 of your 30 monthly credits in this organization. "
                "Ask an owner or admin of the organization to raise your cap.",
                "cap": 30,
                "used": 30,
            },
        ),
        (
            ApiError(429, "rate_limited", "Slow down.", headers={"Retry-After": "9"}, retry_after=9),
            429,
            {"error": "rate_limited", "message": "Slow down.", "retry_after": 9},
        ),
    ]
    for i, (error, status, body) in enumerate(cases):
        _raising(app, f"/api/test-error-{i}", error)
        response = await client.post(f"/api/test-error-{i}")
        assert (response.status_code, response.json()) == (status, body), type(error).__name__
    assert (await client.post("/api/test-error-3")).headers["Retry-After"] == "9"


def _is_its_schemas_dump(body: dict[str, Any], schema: type[BaseModel]) -> None:
    assert set(body) == set(schema.model_fields)
    assert schema.model_validate(body).model_dump(mode="json") == body


async def test_the_402_bodies_are_their_schemas_dump(app: FastAPI, client) -> None:
    add_spend_route(app)
    _raising(app, "/api/test-cap", MemberCapReached(cap=3, used=3))
    _raising(app, "/api/test-seats", SeatLimitReached(included=5, used=5, tier="Free"))
    await register(client)
    short = await client.post("/api/test-spend")
    capped = await client.post("/api/test-cap")
    full = await client.post("/api/test-seats")
    assert [r.status_code for r in (short, capped, full)] == [402, 402, 402]
    _is_its_schemas_dump(short.json(), InsufficientCreditsOut)
    _is_its_schemas_dump(capped.json(), MemberCapReachedOut)
    _is_its_schemas_dump(full.json(), SeatLimitReachedOut)
    assert (full.json()["included"], full.json()["used"]) == (5, 5)


@SQLITE_ONLY
async def test_openapi_documents_each_402_code_a_route_can_answer(client) -> None:
    spec = (await client.get("/openapi.json")).json()
    pool = {"InsufficientCreditsOut": "insufficient_credits", "MemberCapReachedOut": "member_cap_reached"}
    expected = {
        ("post", "/api/chat"): pool,
        ("post", "/api/templates/{template_id}/run"): pool,
        ("post", "/api/chat/actions/{action_id}/approve"): pool,
        ("post", "/api/admin/users/{user_id}/adjust"): {"InsufficientCreditsOut": "insufficient_credits"},
        ("post", "/api/orgs/{org_id}/invitations"): {"SeatLimitReachedOut": "seat_limit_reached"},
        ("post", "/api/orgs/invitations/accept"): {"SeatLimitReachedOut": "seat_limit_reached"},
    }
    for (method, path), schemas in expected.items():
        documented = spec["paths"][path][method]["responses"]["402"]
        content = documented["content"]["application/json"]
        schema = content["schema"]
        refs = [s["$ref"] for s in schema.get("oneOf", [schema])]
        assert [ref.rsplit("/", 1)[-1] for ref in refs] == list(schemas), (method, path)
        if len(schemas) > 1:
            assert schema["discriminator"]["propertyName"] == "error"
        assert set(content["examples"]) == set(schemas.values()), (method, path)
        for name, code in schemas.items():
            assert f"`{code}`" in documented["description"]
            example = content["examples"][code]["value"]
            assert example["error"] == code
            PAYMENT_REQUIRED[code].model_validate(example)  # the example is a valid body
            component = spec["components"]["schemas"][name]
            assert component["properties"]["error"]["const"] == code
    # A route that charges nothing documents no 402.
    assert "402" not in spec["paths"]["/api/conversations"]["get"]["responses"]
