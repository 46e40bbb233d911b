"""Fixtures for the Stripe tests: localstripe and the edge server, a Stripe-configured app, signed events.

The servers start once per test session (about a second); each test makes its own
customers and objects, so tests never see each other's Stripe data.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from fastapi import FastAPI

from devops_agent.db import Database
from tests.payments.edge import SECRET_KEY, WEBHOOK_SECRET, Edge, running_edge
from tests.web.conftest import build_app, make_client


@pytest.fixture(scope="session")
def edge() -> Iterator[Edge]:
    with running_edge() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_edge_memory(request: pytest.FixtureRequest) -> None:
    """Forget the edge's recorded requests and idempotency keys between tests.

    Our keys derive from row ids, which restart in every test database; Stripe keeps
    keys for a day per account, so without this one test would replay another's answers.
    """
    if "edge" in request.fixturenames:
        server: Edge = request.getfixturevalue("edge")
        server.requests.clear()
        server.forget_keys()
        # localstripe pickles its whole store to disk after every write: keep it small.
        httpx.delete(f"{server.upstream}/_config/data", timeout=10).raise_for_status()


def stripe_settings(edge: Edge) -> dict[str, Any]:
    return {
        "stripe_secret_key": SECRET_KEY,
        "stripe_publishable_key": "pk_test_devops_agent_local",
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "stripe_api_base": edge.url,
        "public_base_url": "http://testserver",
    }


@pytest.fixture
def stripe_app(db: Database, tmp_path: Path, edge: Edge) -> FastAPI:
    return build_app(db, tmp_path, **stripe_settings(edge))


@pytest.fixture
async def stripe_client(stripe_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(stripe_app) as c:
        yield c


def make_event(event_type: str, obj: dict[str, Any], *, created: int | None = None) -> dict[str, Any]:
    """A Stripe event envelope around ``obj`` (the shape Stripe posts)."""
    return {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "type": event_type,
        "created": created if created is not None else int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


def signed(event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> tuple[str, str]:
    """The body and the ``Stripe-Signature`` header, signed by the SDK's own helper."""
    body = json.dumps(event)
    return body, stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)


async def deliver(client: httpx.AsyncClient, event: dict[str, Any], **sign: Any) -> httpx.Response:
    """POST ``event`` to the webhook as Stripe does."""
    body, header = signed(event, **sign)
    return await client.post(
        "/api/stripe/webhook", content=body, headers={"Stripe-Signature": header, "Content-Type": "application/json"}
    )
