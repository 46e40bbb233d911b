"""Each tier's guardrails, in ``GET /api/subscription/tiers`` and on the pages that list the plans."""

from __future__ import annotations

import httpx

from tests.web.conftest import register

HTML = {"Accept": "text/html,application/xhtml+xml"}


async def test_the_tiers_endpoint_shows_each_tiers_limits(client: httpx.AsyncClient) -> None:
    tiers = {t["name"]: t for t in (await client.get("/api/subscription/tiers")).json()["tiers"]}
    free, business = tiers["free"]["limits"], tiers["business"]["limits"]
    assert free == {
        "instance_types": ["t3.micro", "t4g.micro"],
        "rds_classes": ["db.t3.micro", "db.t4g.micro"],
        "rds_max_storage_gb": 20,
        "regions": ["us-east-1", "eu-west-1"],
        "creates_per_month": 5,
        "auto_approve": False,
    }
    assert "m7i.2xlarge" in business["instance_types"]
    assert business["rds_max_storage_gb"] > free["rds_max_storage_gb"]


async def test_the_landing_and_billing_pages_list_the_limits(client: httpx.AsyncClient) -> None:
    landing = await client.get("/", headers=HTML)
    assert landing.text.count("data-tier-limits") == 4
    assert "EC2 instance types: t3.micro, t4g.micro" in landing.text
    await register(client)
    billing = await client.get("/billing", headers=HTML)
    assert "m7i.2xlarge" in billing.text
