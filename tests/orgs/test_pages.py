"""The organizations' pages render for signed-in users and send others to log in (HTTP only;
the browser test drives them for real)."""

from __future__ import annotations

import httpx
import pytest

from tests.web.conftest import SQLITE_ONLY, register

pytestmark = SQLITE_ONLY


@pytest.mark.parametrize("path", ["/orgs", "/orgs/1", "/orgs/join/some-token"])
async def test_pages_need_a_login(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers={"Accept": "text/html"})
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")


async def test_a_free_user_sees_why_they_cannot_create_a_team(client: httpx.AsyncClient) -> None:
    await register(client)
    page = await client.get("/orgs", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "data-create-gated" in page.text
    assert "Professional, Business" in page.text
    assert "data-create-org" not in page.text
    workspace = await client.get("/orgs/7", headers={"Accept": "text/html"})
    assert workspace.status_code == 200
    assert 'data-org-id="7"' in workspace.text
    billing = await client.get("/billing", headers={"Accept": "text/html"})
    assert "data-billing-teams" in billing.text  # filled by orgs.js when the user is in a team
