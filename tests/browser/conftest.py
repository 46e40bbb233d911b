"""The real app on a loopback port and one headless Chromium for the whole session.

The server is the production app (``create_app``) served by uvicorn in a thread, on a
fresh SQLite file, with the offline agent, demo payments and the sandbox cloud: the
browser talks to it over real HTTP exactly as a person's would. Chromium is Debian's
(``/usr/bin/chromium``); Playwright's own browser download does not work here.

Screenshots go to ``test-artifacts/screenshots/`` (the README names it); the copies
kept for the README live in ``docs/screenshots/``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser, Playwright, sync_playwright

from devops_agent.config import Settings
from tests.browser.helpers import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS
from tests.web.conftest import fast_passwords


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder drives a browser: mark it, and skip all when Chromium is missing."""
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason=f"no Chromium at {CHROMIUM} (install Debian's chromium: make browser)")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            if not CHROMIUM.exists():
                item.add_marker(skip)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class LiveServer:
    url: str
    settings: Settings


@contextmanager
def serve(workdir: Path, *, port: int | None = None, **settings: Any) -> Iterator[LiveServer]:
    """The whole app on a loopback port, on a fresh SQLite file in ``workdir``, until the block ends."""
    from devops_agent.web.app import create_app

    # Offline agent, demo payments and sandbox cloud unless the caller says otherwise.
    # Every test signs up its own people from 127.0.0.1: lift the per-address sign-up limit
    # (10 an hour) that a real visitor meets; its own tests are in tests/web.
    values: dict[str, Any] = {
        "anthropic_api_key": None,
        "stripe_secret_key": None,
        "cloud": "sandbox",
        "registration_limit_per_hour": 10_000,
        **settings,
    }
    app_settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{workdir / 'app.db'}",
        secret_key="browser-tests-secret-key",
        log_dir=workdir / "logs",
        **values,
    )
    port = port or _free_port()
    app = create_app(app_settings)
    app.state.passwords = fast_passwords()  # sign-ups in milliseconds, not the production hash cost
    # A short graceful shutdown: at the end of the session nothing is in flight worth waiting for.
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
    )
    thread = threading.Thread(target=server.run, name=f"browser-test-server-{port}", daemon=True)
    thread.start()
    # Wait for uvicorn to say it is serving (or for the thread to die trying): an event, not a sleep.
    while not server.started:
        thread.join(0.05)
        if not thread.is_alive():
            pytest.fail("the app server did not start (see the log above)")
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", settings=app_settings)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app in its default setup: offline agent, demo payments, sandbox cloud."""
    with serve(tmp_path_factory.mktemp("browser-server")) as server:
        yield server


@pytest.fixture(scope="session")
def auto_approve_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app with creates run at once (``AUTO_APPROVE_ACTIONS``): for tests of what replies cost."""
    with serve(tmp_path_factory.mktemp("auto-approve-server"), auto_approve_actions=True) as server:
        yield server


class _SharedChromium:
    """One Playwright and one Chromium per test session, however many suites ask.

    Other suites import the ``browser`` fixture (``from tests.browser.conftest import
    browser``), which makes pytest hold one fixture instance per importing folder; a
    second ``sync_playwright()`` in the same thread would fail, so every instance
    shares this one and the last to finish closes it.
    """

    def __init__(self) -> None:
        self.users = 0
        self.playwright: Playwright | None = None
        self.browser: Browser | None = None

    def acquire(self) -> Browser:
        if self.browser is None:
            self.playwright = sync_playwright().start()
            self.browser = self.playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
        self.users += 1
        return self.browser

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.browser is not None and self.playwright is not None:
            self.browser.close()
            self.playwright.stop()
            self.browser = self.playwright = None


_chromium = _SharedChromium()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the session; each test opens its own context (cookies, viewport)."""
    try:
        yield _chromium.acquire()
    finally:
        _chromium.release()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
