"""The HTTP fixtures of the web suite (``app``, ``client``), for the organizations' endpoints."""

from tests.web.conftest import app, client  # noqa: F401  (fixtures, used by name)
