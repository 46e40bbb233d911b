"""The sandbox is one cloud per customer whatever worker answers: ``serve --workers 2`` on PostgreSQL.

``serve`` starts one moto server that both workers talk to. A customer creates an
instance (approved in the chat), then lists ten times on fresh connections (so the
requests spread over the workers): every list sees it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devops_agent.agent.tools.sandbox_server import free_port
from devops_agent.db import Database


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            pytest.fail(f"serve exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"serve did not become ready:\n{log.read_text()}")
        time.sleep(0.2)


def _fresh(url: str, cookies: httpx.Cookies, csrf: str) -> httpx.Client:
    """A client on a new connection: uvicorn's workers share the socket, so each may answer."""
    headers = {"X-CSRF-Token": csrf, "Connection": "close"}
    # Generous: the first call of each AWS service starts it in moto, on a machine others share.
    return httpx.Client(base_url=url, cookies=cookies, headers=headers, timeout=120)


# Several workers run on PostgreSQL only (serve refuses them on SQLite).
@pytest.mark.postgres
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_two_workers_share_one_sandbox(db: Database, database_url: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "LOG_DIR": str(tmp_path / "logs"),
        "SECRET_KEY": "workers-test-secret",
        "CLOUD": "sandbox",
        "REGISTRATION_LIMIT_PER_HOUR": "0",
    }
    for name in ("SANDBOX_URL", "ANTHROPIC_API_KEY", "STRIPE_SECRET_KEY", "AUTO_APPROVE_ACTIONS"):
        env.pop(name, None)
    log = tmp_path / "serve.out"
    with log.open("w") as out:
        serve = subprocess.Popen(
            [str(Path(sys.executable).parent / "devops-agent"), "serve", "--workers", "2"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(serve, url, log)
        with httpx.Client(base_url=url, timeout=60) as client:
            user = {"username": "twoworkers", "email": "two@example.com", "password": "correct horse battery"}
            assert client.post("/api/auth/register", json=user).status_code == 201
            cookies, csrf = client.cookies, client.cookies["csrf_token"]
            # Demo payments: 100 more credits, for the create and the ten lists.
            bought = client.post("/api/credits/purchase", json={"pack_size": 100}, headers={"X-CSRF-Token": csrf})
            assert bought.status_code == 200, bought.text
        with _fresh(url, cookies, csrf) as c:
            proposed = c.post("/api/chat", json={"message": "create a t3.micro instance named web-1"}).json()
        [action] = proposed["pending_actions"]
        with _fresh(url, cookies, csrf) as c:
            approved = c.post(f"/api/chat/actions/{action['id']}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["tool_calls"][0]["success"] is True
        for _ in range(10):
            with _fresh(url, cookies, csrf) as c:
                listed = c.post("/api/chat", json={"message": "list my EC2 instances"})
                assert listed.status_code == 200, listed.text
                assert "web-1" in listed.json()["response"], listed.json()["response"]
        assert "Sandbox AWS (moto) at http://127.0.0.1:" in log.read_text()
    finally:
        serve.terminate()
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
