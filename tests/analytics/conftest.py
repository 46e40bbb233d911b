"""The web fixtures (``app``, ``client``) for the admin and customer analytics API tests."""

from tests.web.conftest import app, client  # noqa: F401 (pytest fixtures, found by name)
