"""Structured request logs: one JSON line per request, to stdout and ``logs/devops_agent.log``.

The file under ``logs/`` is for reading on the machine; operators collect stdout. A line carries
method, path (never the query string, which may carry tokens), status, duration,
the client address and the user id when known. Headers, bodies, cookies, API keys
and password hashes are never logged, and secrets that travel in a path (an
invitation's token) are replaced by ``[redacted]`` in every line the formatter
writes, whichever logger wrote it and wherever in the line the path appears.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from devops_agent.web.instrumentation import observe_request

LOGGER = "devops_agent"
LOG_FILE = "devops_agent.log"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
REDACTED = "[redacted]"
# Paths whose next segment is a secret: an invitation's token (the API's preview and
# the join page). ``/api/orgs/invitations/accept`` takes its token in the body.
SECRET_PATH_SEGMENT = re.compile(r"(/api/orgs/invitations/|/orgs/join/)(?!accept(?![^/?#\s\"\\]))[^/?#\s\"\\]+")
# Other loggers whose lines may carry a request's path (uvicorn's errors, its access log).
_FOREIGN_LOGGERS = ("uvicorn.error", "uvicorn.access")


def redact(text: str) -> str:
    """``text`` with every secret path segment replaced by ``[redacted]``."""
    return SECRET_PATH_SEGMENT.sub(lambda m: m.group(1) + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Redacts a record of another library's logger before any of its handlers formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    """A log record as one JSON object; ``extra=`` fields become keys.

    The line is made once per record and kept on it: the stdout and file handlers share
    this formatter, and each would otherwise encode the same record again.
    """

    def format(self, record: logging.LogRecord) -> str:
        done: str | None = getattr(record, "_devops_agent_json", None)
        if done is not None:
            return done
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        line = redact(json.dumps(entry, default=str))
        record._devops_agent_json = line
        return line


def configure_logging(log_dir: Path, *, level: int = logging.INFO) -> None:
    """Send ``devops_agent.*`` logs as JSON to stdout and to a rotating file in ``log_dir``.

    Idempotent: a second call (a second app in the same process) adds no handlers.
    """
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    for name in _FOREIGN_LOGGERS:
        foreign = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in foreign.filters):
            foreign.addFilter(RedactSecrets())
    if any(getattr(h, "_devops_agent", False) for h in logger.handlers):
        return
    formatter = JsonFormatter()
    stream = logging.StreamHandler(sys.stdout)
    handlers: list[logging.Handler] = [stream]
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(
            logging.handlers.RotatingFileHandler(
                log_dir / LOG_FILE, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"
            )
        )
    except OSError as exc:  # a read-only checkout still serves, logging to stdout only
        print(f"cannot write logs to {log_dir}: {exc}", file=sys.stderr)  # noqa: T201
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._devops_agent = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False


class RequestLogMiddleware:
    """Logs each HTTP request once it has been answered, and observes its latency for the
    metrics (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = logging.getLogger(f"{LOGGER}.request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            observe_request(scope, status, elapsed)
            state = scope.get("state") or {}
            client = scope.get("client")
            self.log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "client": client[0] if client else None,
                    "user_id": state.get("user_id"),
                },
            )
