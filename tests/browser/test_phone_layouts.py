"""Every page on a 390 x 844 phone, signed out, as a customer, a team owner and an admin.

No page scrolls sideways (``document.documentElement.scrollWidth <= innerWidth``) and no
text runs out of its box: an element whose own text is wider than it is (and which does
not scroll), or that reaches past the right edge of the screen outside a scrolling
table, is a defect a person sees as cut or hidden words.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import LiveServer
from tests.browser.helpers import PASSWORD, PHONE, sign_up, unique_name

OVERFLOWS = """
() => {
  const found = [];
  const width = window.innerWidth;
  const scrolls = (el) => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  const inScroller = (el) => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) if (scrolls(p)) return true;
    return false;
  };
  const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    [...el.classList].map((c) => '.' + c).join('') + ' "' + el.textContent.trim().slice(0, 40) + '"';
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('.visually-hidden, .skip-link, script, style, dialog:not([open]), [hidden]')) continue;
    const rect = el.getBoundingClientRect();
    if (rect.width === 0 && rect.height === 0) continue;
    const ownText = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!ownText) continue;
    const style = getComputedStyle(el);
    if (style.display !== 'inline' && el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1 && !scrolls(el)) {
      found.push('text wider than its box: ' + name(el));
    } else if (rect.right > width + 1 && !inScroller(el)) {
      found.push('past the right edge: ' + name(el));
    }
  }
  return { scrollWidth: document.documentElement.scrollWidth, innerWidth: width, found };
}
"""


def check_page(page: Page, path: str, shots: Path | None = None) -> list[str]:
    page.goto(path)
    page.wait_for_load_state("networkidle")
    result: dict[str, Any] = page.evaluate(OVERFLOWS)
    problems = [f"{path}: {p}" for p in result["found"]]
    if result["scrollWidth"] > result["innerWidth"]:
        problems.append(f"{path}: scrolls sideways ({result['scrollWidth']} > {result['innerWidth']})")
    if shots is not None:
        slug = path.strip("/").replace("/", "-").replace("?", "-").replace("=", "-") or "home"
        page.screenshot(path=str(shots / f"phone-{slug}.png"), full_page=True)
    return problems


def _csrf(context: BrowserContext) -> dict[str, str]:
    return {"X-CSRF-Token": next(c["value"] for c in context.cookies() if c["name"] == "csrf_token")}


@pytest.fixture
def phone(browser: Browser, live_server: LiveServer) -> Any:
    context = browser.new_context(base_url=live_server.url, viewport=PHONE)
    yield context
    context.close()


def test_pages_signed_out_fit_a_phone(phone: BrowserContext, screenshots: Path) -> None:
    page = phone.new_page()
    problems: list[str] = []
    for path in ("/", "/login", "/register", "/no-such-page"):
        problems += check_page(page, path, screenshots)
    assert problems == [], "\n".join(problems)


def test_pages_of_a_customer_fit_a_phone(phone: BrowserContext, screenshots: Path) -> None:
    page = phone.new_page()
    sign_up(page, unique_name("phonecustomer_with_a_long_name"))
    # A long message makes a long conversation title (the list and the chat's heading show it).
    long = "create a t3.micro instance named web-1 and tell me everything about it please"
    assert page.request.post("/api/chat", data={"message": long}, headers=_csrf(phone)).ok
    problems: list[str] = []
    for path in ("/chat", "/billing", "/account", "/orgs", "/logout"):
        problems += check_page(page, path, screenshots)
    assert problems == [], "\n".join(problems)


def test_pages_of_a_team_owner_fit_a_phone(browser: Browser, live_server: LiveServer, screenshots: Path) -> None:
    owner = browser.new_context(base_url=live_server.url, viewport=PHONE)
    member = browser.new_context(base_url=live_server.url, viewport=PHONE)
    try:
        page = owner.new_page()
        sign_up(page, unique_name("phoneowner"))
        tiers = page.request.get("/api/subscription/tiers").json()["tiers"]
        pro = next(t for t in tiers if t["name"] == "professional")
        assert page.request.post("/api/subscription/upgrade", data={"tier_id": pro["id"]}, headers=_csrf(owner)).ok
        created = page.request.post("/api/orgs", data={"name": "Platform team of Example Corp"}, headers=_csrf(owner))
        assert created.ok, created.text()
        org_id = created.json()["organization"]["id"]
        joiner = member.new_page()
        name = unique_name("phonemember_longer_name")
        sign_up(joiner, name)
        invite = page.request.post(
            f"/api/orgs/{org_id}/invitations",
            data={"email": f"{name}@example.com", "role": "member"},
            headers=_csrf(owner),
        )
        assert invite.ok, invite.text()
        accepted = joiner.request.post(
            "/api/orgs/invitations/accept", data={"token": invite.json()["token"]}, headers=_csrf(member)
        )
        assert accepted.ok, accepted.text()
        pending = page.request.post(
            f"/api/orgs/{org_id}/invitations",
            data={"email": "someone.with.a.long.address@example.com", "role": "admin"},
            headers=_csrf(owner),
        )
        assert pending.ok
        problems: list[str] = []
        for path in ("/orgs", f"/orgs/{org_id}", "/billing", f"/chat?org={org_id}"):
            problems += check_page(page, path, screenshots if path.startswith("/orgs/") else None)
        expect(page.locator("body")).to_be_visible()
        assert problems == [], "\n".join(problems)
    finally:
        owner.close()
        member.close()


def test_pages_of_an_admin_fit_a_phone(phone: BrowserContext, live_server: LiveServer, screenshots: Path) -> None:
    page = phone.new_page()
    username = unique_name("phoneadmin")
    sign_up(page, username)
    database = live_server.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE users SET is_admin = 1 WHERE username = ?", (username,))
    problems = check_page(page, "/admin", screenshots)
    assert problems == [], "\n".join(problems)
    assert PASSWORD
