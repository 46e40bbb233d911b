"""A small HTTP server that speaks Anthropic's Messages API, for the real ``anthropic`` client.

Tests script its answers in order (a reply, a tool call, an error with its status, or
``hang()``: no answer until the test calls ``release()``) and read back the requests it
received. It runs in a thread on a free loopback port.
"""

from __future__ import annotations

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ids = itertools.count(1)


def _message(content: list[dict[str, Any]], stop_reason: str) -> dict[str, Any]:
    return {
        "id": f"msg_{next(_ids)}",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }


def text_reply(text: str) -> tuple[int, dict[str, Any]]:
    return 200, _message([{"type": "text", "text": text}], "end_turn")


def tool_use(name: str, arguments: dict[str, Any], text: str = "") -> tuple[int, dict[str, Any]]:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content.append({"type": "tool_use", "id": f"toolu_{next(_ids)}", "name": name, "input": arguments})
    return 200, _message(content, "tool_use")


def api_error(status: int, kind: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"type": "error", "error": {"type": kind, "message": message}}


HANG_STATUS = 0


def hang(then: str = "An answer nobody waited for.") -> tuple[int, dict[str, Any]]:
    """No answer until ``release()`` (a provider that never answers); then a text reply."""
    return HANG_STATUS, {"text": then}


class FakeAnthropic:
    """The server; ``script`` queues answers, ``requests`` holds what came in."""

    def __init__(self) -> None:
        self._answers: list[tuple[int, dict[str, Any]]] = []
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body})
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                    status, answer = (
                        fake._answers.pop(0)
                        if fake._answers
                        else api_error(500, "api_error", "the test scripted no answer")
                    )
                if status == HANG_STATUS:
                    fake._released.wait()
                    status, answer = text_reply(answer["text"])
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("retry-after-ms", "1")  # keep the SDK's retries instant
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, *answers: tuple[int, dict[str, Any]]) -> None:
        with self._lock:
            self._answers = list(answers)
            self.requests.clear()
            self.headers.clear()
            self._released.clear()

    def release(self) -> None:
        """Let every hanging request answer."""
        self._released.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
