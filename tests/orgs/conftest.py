"""Fixtures borrowed from the web and browser suites: ``app``/``client`` for HTTP, the live server and Chromium."""

from tests.browser.conftest import browser, live_server  # noqa: F401  (fixtures, used by name)
from tests.web.conftest import app, client  # noqa: F401  (fixtures, used by name)
