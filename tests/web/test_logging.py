"""Secrets that travel in a path (invitation tokens) never reach a log line."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from devops_agent.web.logging import LOGGER, REDACTED, JsonFormatter, configure_logging, redact
from tests.web.conftest import SQLITE_ONLY, make_client, register

HTML = {"Accept": "text/html"}


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """What the app's loggers write, through the formatter of the real log handlers."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)


@SQLITE_ONLY
async def test_an_invitation_token_in_the_path_is_redacted_in_the_request_log(
    app: FastAPI, client: httpx.AsyncClient, log_output: io.StringIO
) -> None:
    await register(client)
    token = secrets.token_urlsafe(32)

    preview = await client.get(f"/api/orgs/invitations/{token}")
    page = await client.get(f"/orgs/join/{token}", headers=HTML)
    async with make_client(app) as visitor:
        signed_out = await visitor.get(f"/orgs/join/{token}", headers=HTML)

    assert (preview.status_code, page.status_code, signed_out.status_code) == (404, 200, 303)
    text = log_output.getvalue()
    assert token not in text
    paths = [json.loads(line)["path"] for line in text.splitlines() if '"message": "request"' in line]
    assert f"/api/orgs/invitations/{REDACTED}" in paths
    assert paths.count(f"/orgs/join/{REDACTED}") == 2


def test_any_logger_line_and_traceback_is_redacted(log_output: io.StringIO) -> None:
    token = secrets.token_urlsafe(32)
    log = logging.getLogger(f"{LOGGER}.web")
    try:
        raise RuntimeError(f"failed on /api/orgs/invitations/{token}/x")
    except RuntimeError:
        log.exception("unhandled error on page %s", f"/orgs/join/{token}")
    assert token not in log_output.getvalue()
    assert f"unhandled error on page /orgs/join/{REDACTED}" in log_output.getvalue()
    assert f"RuntimeError: failed on /api/orgs/invitations/{REDACTED}/x" in log_output.getvalue()


def test_uvicorns_own_lines_are_redacted(tmp_path) -> None:
    configure_logging(tmp_path / "logs")
    token = secrets.token_urlsafe(32)
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "in %s", (f"/orgs/join/{token}",), None)
    logging.getLogger("uvicorn.error").filter(record)
    assert record.getMessage() == f"in /orgs/join/{REDACTED}"


def _route_paths(routes: Iterable[Any]) -> Iterator[str]:
    """Every route's full path; FastAPI keeps included routers as branches (``effective_candidates``)."""
    for route in routes:
        if hasattr(route, "effective_candidates"):
            yield from _route_paths(route.effective_candidates())
        elif isinstance(getattr(route, "path", None), str):
            yield route.path


@SQLITE_ONLY
def test_every_route_with_a_token_in_its_path_is_redacted(app: FastAPI) -> None:
    """A new route that takes a secret in its path must be added to the redaction."""
    token = secrets.token_urlsafe(32)
    with_tokens = [path for path in _route_paths(app.routes) if "{token}" in path]
    assert with_tokens, "the invitation routes take their token in the path"
    for template in with_tokens:
        path = template.replace("{token}", token)
        while "{" in path:  # other parameters: any value
            start = path.index("{")
            path = path[:start] + "1" + path[path.index("}", start) + 1 :]
        assert token not in redact(path), template
