"""The page routes over HTTP: who is sent where, and HTML error pages only for browsers on pages.

What the pages do once loaded is tested in a real browser (``tests/browser``); these
are the server-side rules a browser test would only see indirectly.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.web.conftest import BASE_URL, SQLITE_ONLY, register

pytestmark = SQLITE_ONLY
HTML = {"Accept": "text/html,application/xhtml+xml"}


async def test_visitors_see_the_landing_page_with_every_tier_and_pack(client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers=HTML)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"].startswith("default-src 'self';")  # no inline scripts
    assert response.headers["x-content-type-options"] == "nosniff"
    for text in ("Free", "Starter", "Professional", "Business", "$19", "250 credits", "Popular"):
        assert text in response.text


@pytest.mark.parametrize("path", ["/chat", "/billing", "/account"])
async def test_signed_out_visitors_are_sent_to_log_in_and_back(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, headers=HTML)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next={path}"


async def test_signed_in_users_go_from_home_and_login_to_the_chat(client: httpx.AsyncClient) -> None:
    await register(client)
    home = await client.get("/", headers=HTML)
    login = await client.get("/login", headers=HTML)
    assert (home.status_code, home.headers["location"]) == (303, "/chat")
    assert (login.status_code, login.headers["location"]) == (303, "/chat")


# Each leaves the site in a browser: tabs and newlines are dropped from URLs, "\\" reads as "/".
OFF_SITE_NEXT = [
    "/\t/evil.com",
    "/\n/evil.com",
    "/\r/evil.com",
    "//evil",
    "/\\evil",
    "https://evil",
    "//evil.example/phish",
    "https://evil.example/",
    "/\\evil.example",
    " //evil.example",
    "\t//evil.example",
    "/\t\\evil.example",
]


@pytest.mark.parametrize("target", OFF_SITE_NEXT)
async def test_login_only_returns_to_paths_on_this_site(client: httpx.AsyncClient, target: str) -> None:
    response = await client.get("/login", params={"next": target}, headers=HTML)
    assert response.status_code == 200
    assert 'data-next="/chat"' in response.text
    await register(client)
    signed_in = await client.get("/login", params={"next": target}, headers=HTML)
    assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/chat")


@pytest.mark.parametrize("target", ["/billing", "/orgs/3?tab=members#caps", "/a/../account"])
async def test_login_returns_to_a_path_on_this_site(client: httpx.AsyncClient, target: str) -> None:
    expected = target.replace("/a/..", "")
    response = await client.get("/login", params={"next": target}, headers=HTML)
    assert f'data-next="{expected}"' in response.text
    await register(client)
    signed_in = await client.get("/login", params={"next": target}, headers=HTML)
    assert (signed_in.status_code, signed_in.headers["location"]) == (303, expected)


async def test_api_key_creation_is_offered_only_where_the_plan_has_api_access(client: httpx.AsyncClient) -> None:
    await register(client)
    free = await client.get("/account", headers=HTML)
    assert "data-keys-gated" in free.text
    assert "data-key-form" not in free.text
    tiers = (await client.get("/api/subscription/tiers")).json()["tiers"]
    starter = next(t for t in tiers if t["name"] == "starter")
    assert (await client.post("/api/subscription/upgrade", json={"tier_id": starter["id"]})).status_code == 200
    paid = await client.get("/account", headers=HTML)
    assert "data-key-form" in paid.text
    assert "data-keys-gated" not in paid.text


async def test_unknown_pages_get_the_html_404_but_the_api_keeps_json(client: httpx.AsyncClient) -> None:
    page = await client.get("/no/such/page", headers=HTML)
    api = await client.get("/api/no/such/endpoint", headers=HTML)
    script = await client.get("/no/such/page", headers={"Accept": "application/json"})
    assert page.status_code == 404
    assert "Page not found" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert api.status_code == 404
    assert api.json()["error"] == "not_found"
    assert script.json()["error"] == "not_found"


async def test_a_crash_on_a_page_shows_the_html_500_and_on_the_api_the_json_500(app: FastAPI) -> None:
    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/broken-page", boom)
    app.add_api_route("/api/broken", boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        page = await client.get("/broken-page", headers=HTML)
        api = await client.get("/api/broken", headers=HTML)
    assert page.status_code == 500
    assert "Something went wrong" in page.text
    assert "a bug" not in page.text
    assert api.status_code == 500
    assert api.json() == {"error": "internal_error", "message": "Something went wrong on our side."}


async def test_the_404_page_keeps_a_signed_in_users_navigation(client: httpx.AsyncClient) -> None:
    await register(client)
    page = await client.get("/no/such/page", headers=HTML)
    assert page.status_code == 404
    assert "data-logout" in page.text
    assert 'href="/billing"' in page.text


async def test_logout_is_a_page_with_a_button_never_a_plain_get(client: httpx.AsyncClient) -> None:
    signed_out = await client.get("/logout", headers=HTML)
    assert (signed_out.status_code, signed_out.headers["location"]) == (303, "/")
    await register(client)
    page = await client.get("/logout", headers=HTML)
    assert page.status_code == 200
    assert page.text.count("data-logout") == 2  # the header's button and the page's
    assert (await client.get("/api/auth/me")).status_code == 200  # still signed in
