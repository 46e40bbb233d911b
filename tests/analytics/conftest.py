"""The web fixtures (``app``, ``client``) for the API tests, and the suite's shared Chromium (``browser``)."""

from tests.browser.conftest import browser  # noqa: F401 (pytest fixture, found by name)
from tests.web.conftest import app, client  # noqa: F401 (pytest fixtures, found by name)
