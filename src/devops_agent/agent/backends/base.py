"""The contract between the agent loop and an LLM backend, in provider-neutral types.

The loop keeps the transcript of one run as a list of turns: the user's words, the
assistant's turns (text and/or tool calls) and the results of those calls. A backend
takes the transcript and the tool definitions and returns the next assistant turn;
a turn without tool calls ends the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from devops_agent.agent.tools.registry import Tool


@dataclass(frozen=True)
class UserTurn:
    text: str


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class AssistantTurn:
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    # False when the backend knows it did not understand the request (the offline agent's
    # rules matched nothing): such a turn did nothing and is not charged.
    understood: bool = True


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    name: str
    content: str
    is_error: bool = False


@dataclass(frozen=True)
class ToolResults:
    results: tuple[ToolResult, ...] = field(default_factory=tuple)


Turn = UserTurn | AssistantTurn | ToolResults


class BackendError(Exception):
    """The backend could not produce a turn (timeout, provider error): not the user's fault."""


class Backend(Protocol):
    """An LLM (or the offline agent) that produces the next assistant turn."""

    name: str

    async def next_turn(self, transcript: list[Turn], tools: list[Tool]) -> AssistantTurn: ...
