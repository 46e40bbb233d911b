"""One sandbox AWS (a moto server process) that every worker of the web service talks to.

moto in-process keeps its cloud in each process's memory: with several workers a
customer's instance would exist in one worker and not in the next. ``serve`` therefore
starts one ``moto.server`` process on a loopback port and hands its address to the
workers (``SANDBOX_URL``); each customer keeps their own moto account in it
(``x-moto-account-id``), and it outlives any worker's restart. ``devops-agent sandbox``
runs the same server on its own, so the sandbox also outlives restarts of the service.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

READY_TIMEOUT_SECONDS = 60.0
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def _die_with(parent: int) -> None:
    """In the moto child, before it runs: on Linux, end it when the process that started it
    dies, even by SIGKILL (otherwise a killed ``serve`` leaves its sandbox running forever)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def command(host: str, port: int) -> list[str]:
    """The moto server, run by this interpreter."""
    return [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]


def wait_ready(url: str, process: subprocess.Popen[bytes] | None = None) -> None:
    """Block until the server answers (moto's ``/moto-api/`` page); ``RuntimeError`` if it never does."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the sandbox server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):  # noqa: S310 - our own loopback URL
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox server at {url} did not answer") from None
            time.sleep(0.1)


def start(host: str = "127.0.0.1", port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start a moto server process and wait until it answers; the process and its URL."""
    port = port or free_port(host)
    parent = os.getpid()
    process = subprocess.Popen(  # noqa: S603
        command(host, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=(lambda: _die_with(parent)) if sys.platform.startswith("linux") else None,  # noqa: PLW1509
    )
    url = f"http://{host}:{port}"
    try:
        wait_ready(url, process)
    except RuntimeError:
        process.kill()
        raise
    return process, url


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
