"""Claude through the official ``anthropic`` SDK (Messages API with tool use).

Transient failures (connection errors, timeouts, 408/409/429/5xx and 529
"overloaded") are retried by the SDK itself with exponential backoff, honouring the
provider's ``retry-after`` headers; what still fails after that is a
``BackendError``, which the service answers with a refund.
"""

from __future__ import annotations

from typing import Any

import anthropic

from devops_agent.agent.tools.registry import Tool

from .base import AssistantTurn, BackendError, ToolCall, ToolResults, Turn, UserTurn

SYSTEM_PROMPT = (
    "You are DevOps Agent, an assistant that runs cloud chores on the user's AWS account "
    "with the tools you are given. Each tool call costs the user credits, so call a tool "
    "only when the request needs it, never repeat a call whose result you already have, "
    "and ask before creating anything the user did not clearly ask for. When a tool "
    "reports an error or says it was not run, tell the user plainly. Answer briefly."
)
MAX_TOKENS = 1024


def to_messages(transcript: list[Turn]) -> list[dict[str, Any]]:
    """The transcript as Messages API ``messages`` (tool results ride in a user turn)."""
    messages: list[dict[str, Any]] = []
    for turn in transcript:
        if isinstance(turn, UserTurn):
            messages.append({"role": "user", "content": turn.text})
        elif isinstance(turn, ToolResults):
            blocks = [
                {"type": "tool_result", "tool_use_id": r.call_id, "content": r.content, "is_error": r.is_error}
                for r in turn.results
            ]
            messages.append({"role": "user", "content": blocks})
        else:
            content: list[dict[str, Any]] = []
            if turn.text:
                content.append({"type": "text", "text": turn.text})
            content.extend(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in turn.tool_calls
            )
            messages.append({"role": "assistant", "content": content or [{"type": "text", "text": "(no reply)"}]})
    return messages


def to_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    return [{"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in tools]


class ClaudeBackend:
    """Claude as the agent's brain."""

    name = "claude"

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
    ) -> None:
        self.model = model
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )

    async def next_turn(self, transcript: list[Turn], tools: list[Tool]) -> AssistantTurn:
        try:
            reply = await self.client.messages.create(
                model=self.model,
                max_tokens=MAX_TOKENS,
                system=SYSTEM_PROMPT,
                messages=to_messages(transcript),  # type: ignore[arg-type]
                tools=to_tools(tools),  # type: ignore[arg-type]
            )
        except anthropic.APIStatusError as exc:
            raise BackendError(f"Claude answered {exc.status_code}: {exc.message}") from exc
        except anthropic.APIError as exc:  # connection error, timeout, malformed response
            raise BackendError(f"Claude could not be reached: {exc}") from exc
        text = "\n".join(block.text for block in reply.content if block.type == "text").strip()
        calls = tuple(
            ToolCall(block.id, block.name, dict(block.input) if isinstance(block.input, dict) else {})
            for block in reply.content
            if block.type == "tool_use"
        )
        return AssistantTurn(text, calls)

    async def close(self) -> None:
        await self.client.close()
