"""The agent loop: ask the backend, run the tools it calls (metered), repeat until it answers.

The loop holds no database transaction: the meter opens a short one per charge and
per outcome. It stops when the backend answers without calling a tool, and it is
bounded: at most ``max_tool_calls`` tool calls run per message (later calls are
answered "not run" so the model wraps up), and at most ``max_tool_calls + 2``
backend turns are taken whatever the model does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from . import guardrails
from .backends.base import AssistantTurn, Backend, ToolCall, ToolResult, ToolResults, Turn
from .guardrails import Guard
from .metering import Meter, Refusal
from .proposals import PendingActionOut, Proposer
from .tools.registry import CloudTarget, InvalidToolInput, Toolbox

DEFAULT_MAX_TOOL_CALLS = 8


# The loop records each call as one, the reply carries them, the assistant's message stores their dumps.
class ToolCallOut(BaseModel):
    """The contract's ``tool_calls`` item: one tool call of a reply, what it cost and how it went."""

    model_config = ConfigDict(frozen=True)

    tool: str
    credits_used: int
    success: bool
    summary: str


@dataclass
class AgentRun:
    text: str
    tool_calls: list[ToolCallOut] = field(default_factory=list)
    # Set when the turn could not act (every tool it asked for was refused for credits or by
    # the plan's guardrails, or the request was not understood): its message is not charged.
    no_charge_reason: str | None = None
    pending_actions: list[PendingActionOut] = field(default_factory=list)  # creates awaiting approval


class AgentLoop:
    """One run of the agent for one message."""

    def __init__(
        self,
        *,
        backend: Backend,
        toolbox: Toolbox,
        meter: Meter,
        target: CloudTarget,
        max_tool_calls: int = DEFAULT_MAX_TOOL_CALLS,
        guard: Guard | None = None,
        proposer: Proposer | None = None,
    ) -> None:
        self.backend = backend
        self.toolbox = toolbox
        self.meter = meter
        self.target = target
        self.max_tool_calls = max_tool_calls
        self.guard = guard
        self.proposer = proposer
        self.pending: list[PendingActionOut] = []
        self.calls_run = 0
        self.records: list[ToolCallOut] = []
        self.unable: list[str] = []  # refusals that leave the turn unable to act (credits, guardrails)

    def _done(self, text: str, *, understood: bool = True) -> AgentRun:
        reason = None
        if self.calls_run == 0 and not self.pending:
            if self.unable:
                reason = "could not act: " + "; ".join(self.unable)
            elif not understood:
                reason = "could not act: the request was not understood"
        return AgentRun(text, self.records, reason, self.pending)

    async def run(self, transcript: list[Turn]) -> AgentRun:
        """Drive the backend to a final answer; ``BackendError`` propagates to the caller."""
        transcript = list(transcript)
        tools = self.toolbox.definitions()
        turn = AssistantTurn("")
        for _ in range(self.max_tool_calls + 2):
            turn = await self.backend.next_turn(transcript, tools)
            transcript.append(turn)
            if not turn.tool_calls:
                return self._done(turn.text, understood=turn.understood)
            results = [await self._call(call) for call in turn.tool_calls]
            transcript.append(ToolResults(tuple(results)))
        note = f"(Stopped after {self.max_tool_calls} tool calls, the limit for one message.)"
        return self._done(f"{turn.text}\n\n{note}".strip())

    def _refuse(self, call: ToolCall, reason: str) -> ToolResult:
        self.records.append(ToolCallOut(tool=call.name, credits_used=0, success=False, summary=reason))
        return ToolResult(call.id, call.name, json.dumps({"error": reason}), is_error=True)

    async def _call(self, call: ToolCall) -> ToolResult:
        """Validate, charge, run, settle one tool call; always returns a result for the model."""
        if self.calls_run >= self.max_tool_calls:
            return self._refuse(call, f"not run: the limit of {self.max_tool_calls} tool calls per message is reached")
        try:
            arguments = self.toolbox.validate(call.name, call.arguments)
        except InvalidToolInput as exc:
            return self._refuse(call, f"not run: {exc}")
        if self.guard is not None and (refused := await self.guard.check(call.name, arguments)):
            self.unable.append(refused)
            return self._refuse(call, refused)
        cost = guardrails.cost_of(self.meter.catalog, call.name, arguments)
        if self.proposer is not None and call.name in guardrails.CREATE_TOOLS:
            action = await self.proposer.propose(call.name, arguments.model_dump(mode="json"), cost)
            if action is not None:  # nothing charged: the user approves or declines it
                self.pending.append(action)
                return ToolResult(call.id, call.name, json.dumps({"pending_approval": action.model_dump(mode="json")}))
        paid = await self.meter.charge_tool(call.name, cost)
        if isinstance(paid, Refusal):
            self.unable.append(paid.reason)
            return self._refuse(call, paid.reason)
        self.calls_run += 1
        outcome = await self.toolbox.run(call.name, arguments, target=self.target)
        cost = await self.meter.settle_tool(paid, outcome)
        self.records.append(ToolCallOut(tool=call.name, credits_used=cost, success=outcome.ok, summary=outcome.summary))
        return ToolResult(call.id, call.name, outcome.as_text(), is_error=not outcome.ok)
