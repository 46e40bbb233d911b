"""The real server process: `python app.py` on a free port with a fresh SQLite file.

One server is started for this module. Over real HTTP it registers and buys a pack
(``python app.py`` works on a fresh machine), serves the schemathesis run
over ``/openapi.json`` (authenticated; no 5xx, no response that breaks the schema),
and stops gracefully on SIGTERM with its JSON request log written and free of secrets.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis import checks

from devops_agent.config import Settings
from devops_agent.web.server import check_workers, run_server

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a-real-password-123"
pytestmark = pytest.mark.slow


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    workdir: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("server")
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'devops_agent.db'}",
        "PORT": str(port),
        "LOG_DIR": str(workdir / "logs"),
    }
    env.pop("SECRET_KEY", None)
    # Output goes to a file: a pipe nobody reads fills up and blocks the server's logging.
    output = (workdir / "server.out").open("w")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py")], cwd=workdir, env=env, stdout=output, stderr=subprocess.STDOUT
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:  # wait until it answers (a fresh database is migrated first)
        if process.poll() is not None:
            pytest.fail(f"server exited early:\n{(workdir / 'server.out').read_text()}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("server did not become ready within 60 s")
        time.sleep(0.1)
    yield Server(process, base_url, workdir)
    if process.poll() is None:
        process.kill()
        process.wait()
    output.close()


def test_the_real_server_registers_and_sells_a_pack_over_http(server: Server) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        assert client.get("/healthz").json() == {"status": "ok", "checks": None}
        registered = client.post(
            "/api/auth/register", json={"username": "realuser", "email": "real@example.com", "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        client.headers["X-CSRF-Token"] = client.cookies["csrf_token"]
        assert client.get("/api/subscription").json()["subscription"]["credits_remaining"] == 20
        bought = client.post("/api/credits/purchase", json={"pack_size": 100}, headers={"Idempotency-Key": "k1"})
        assert bought.status_code == 200, bought.text
        assert bought.json()["credits_remaining"] == 120
        assert bought.json()["purchase"]["payment_status"] == "completed"
    assert (server.workdir / ".secret_key").exists()  # generated on first start, kept for restarts


@pytest.fixture(scope="module")
def auth_headers(server: Server) -> dict[str, str]:
    """A logged-in browser session: the cookie plus its CSRF token."""
    with httpx.Client(base_url=server.base_url) as client:
        response = client.post(
            "/api/auth/register", json={"username": "fuzzer", "email": "fuzz@example.com", "password": PASSWORD}
        )
        assert response.status_code == 201
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        return {"Cookie": cookie, "X-CSRF-Token": client.cookies["csrf_token"]}


def _openapi() -> dict[str, object]:
    """The server's schema, built without a database (the same code the server runs)."""
    from devops_agent.web.app import create_app

    config = Settings(_env_file=None, secret_key="schema-only", database_url="sqlite:///unused.db")  # type: ignore[call-arg]
    return create_app(config).openapi()


schema = schemathesis.openapi.from_dict(_openapi())
# The contract's endpoints get more examples; the rest of the app (chat, teams, admin,
# Stripe, analytics) is fuzzed too, lightly, to keep the run inside the time budget.
CONTRACT_PATHS = r"^/(healthz|readyz|api/(auth|keys|subscription|credits|usage)(/|$))"
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
FUZZ = {"deadline": None, "derandomize": True, "suppress_health_check": list(HealthCheck)}
# Logging out ends the fuzzer's session on the server: every later case would only see 401.
# Their behaviour has its own tests (tests/web/test_sessions.py).
SESSION_ENDING = r"^/api/auth/logout"


@schema.include(path_regex=CONTRACT_PATHS).exclude(path_regex=SESSION_ENDING).parametrize()
@settings(max_examples=6, phases=[Phase.explicit, Phase.generate], **FUZZ)
def test_fuzz_the_contract_endpoints(case: schemathesis.Case, server: Server, auth_headers: dict[str, str]) -> None:
    case.call_and_validate(base_url=server.base_url, headers=auth_headers, checks=CHECKS)


@schema.exclude(path_regex=CONTRACT_PATHS).parametrize()
@settings(max_examples=2, phases=[Phase.generate], **FUZZ)
def test_fuzz_the_other_endpoints(case: schemathesis.Case, server: Server, auth_headers: dict[str, str]) -> None:
    case.call_and_validate(base_url=server.base_url, headers=auth_headers, checks=CHECKS)


def test_sigterm_stops_gracefully_and_the_log_holds_no_secrets(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=30)
    output = (server.workdir / "server.out").read_text()
    # uvicorn finishes its graceful shutdown, then re-raises the signal: -15 is a clean stop.
    assert server.process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert f"listening on {server.base_url}" in output
    log_file = server.workdir / "logs" / "devops_agent.log"
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    requests = [line for line in lines if line["message"] == "request"]
    assert any(r["path"] == "/api/credits/purchase" and r["status"] == 200 for r in requests)
    text = log_file.read_text() + output
    secret_key = (server.workdir / ".secret_key").read_text().strip()
    for secret in (PASSWORD, "$argon2", secret_key, "csrf_token="):
        assert secret not in text


def test_sqlite_refuses_several_workers() -> None:
    sqlite = Settings(_env_file=None, database_url="sqlite:///x.db")  # type: ignore[call-arg]
    postgres = Settings(_env_file=None, database_url="postgresql://u@h/db")  # type: ignore[call-arg]
    assert "SQLite serves one process only" in (check_workers(sqlite, 2) or "")
    assert check_workers(sqlite, 1) is None
    assert check_workers(postgres, 4) is None
    with pytest.raises(SystemExit) as exit_info:
        run_server(workers=2)  # the default settings are SQLite
    assert exit_info.value.code == 2
