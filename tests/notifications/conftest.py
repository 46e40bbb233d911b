"""A real SMTP server (aiosmtpd) on a free loopback port, and notifiers that send to it."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from devops_agent.db import Database
from devops_agent.notifications import Notifier


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Inbox:
    """What the SMTP server received; ``replies`` scripts answers to the next DATA commands."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.replies: list[str] = []
        self.data_commands = 0

    def reset(self) -> None:
        self.messages.clear()
        self.replies.clear()
        self.data_commands = 0

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's name)
        self.data_commands += 1
        if self.replies:
            return self.replies.pop(0)
        self.messages.append(message_from_bytes(envelope.original_content or envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


@pytest.fixture
def inbox(smtp_server: tuple[Inbox, int]) -> Inbox:
    smtp_server[0].reset()
    return smtp_server[0]


class ManualClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def make_notifier(smtp_server: tuple[Inbox, int]) -> Callable[..., Notifier]:
    """A notifier that sends to the test SMTP server, with no waiting between retries."""

    def make(db: Database, **overrides: Any) -> Notifier:
        options: dict[str, Any] = {
            "smtp_url": f"smtp://127.0.0.1:{smtp_server[1]}",
            "sender": "DevOps Agent <billing@devops-agent.test>",
            "base_url": "http://agent.test",
            "smtp_backoff": 0.0,
        }
        options.update(overrides)
        return Notifier(db, **options)

    return make
