"""What the browser tests share: signing up through the form, and the axe-core check."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

from playwright.sync_api import ConsoleMessage, Page, expect

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
AXE_JS = ROOT / "src" / "devops_agent" / "web" / "static" / "vendor" / "axe-core" / "axe.min.js"
AXE_URL = "/static/vendor/axe-core/axe.min.js"

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

PASSWORD = "correct horse battery"
_names = itertools.count(1)

# WCAG 2.1 A and AA plus axe's best practices; only serious and critical findings fail.
AXE_OPTIONS = {
    "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]},
    "resultTypes": ["violations"],  # skip collecting passes: several times faster
}
FAILING_IMPACTS = {"serious", "critical"}


def unique_name(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


def sign_up(page: Page, username: str) -> None:
    """Create an account through the sign-up form, as a person would, and land on the chat."""
    page.goto("/register")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Email").fill(f"{username}@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url("**/chat")


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Run axe-core (vendored) in the page; return its serious and critical violations."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        # From /static like the pages' own scripts: the pages' CSP refuses inline code.
        page.add_script_tag(url=AXE_URL)
    result: dict[str, Any] = page.evaluate("options => axe.run(document, options)", AXE_OPTIONS)
    return [v for v in result["violations"] if v["impact"] in FAILING_IMPACTS]


def assert_accessible(page: Page) -> None:
    """No serious or critical axe finding; the message lists each rule and where it failed."""
    violations = axe_violations(page)
    report = "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}" for v in violations
    )
    assert not violations, f"accessibility violations on {page.url}:\n{report}"


def expect_counter(page: Page, credits: int) -> None:
    """The header's credit counter shows ``credits``."""
    expect(page.locator("[data-credit-counter] [data-credits-remaining]")).to_have_text(str(credits))


def uncaught_errors(page: Page) -> list[str]:
    """Collect uncaught script errors and Content-Security-Policy refusals from now on.

    A test asserts the list stays empty: either means part of a page silently broke.
    """
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            errors.append(f"{page.url}: {message.text}")

    page.on("console", on_console)
    return errors
