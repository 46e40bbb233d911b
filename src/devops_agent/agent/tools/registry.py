"""What a tool is, and the toolbox the agent loop calls tools through.

A tool is a plain, synchronous function of a cloud provider's clients and validated
arguments (boto3 is synchronous); the toolbox validates the arguments the model sent
(before anything is charged), runs the function in a worker thread so the event loop
keeps serving, and turns every way it can fail into a ``ToolOutcome`` that says whose
fault it was: the metering decides from that whether the credits come back.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError


class CloudClients(Protocol):
    """The clients of one user's cloud account (boto3 clients for AWS)."""

    def client(self, service: str) -> Any: ...


@dataclass(frozen=True)
class CloudTarget:
    """Whose cloud account a call acts in: a user's own, or a team's (``org_id``), and through which role."""

    user_id: int  # who acts: names the AWS session
    org_id: int | None = None
    role_arn: str | None = None
    external_id: str | None = None
    region: str | None = None

    @property
    def session_name(self) -> str:
        """The RoleSessionName, which the customer's CloudTrail shows: it names the user (and team)."""
        team = f"-org-{self.org_id}" if self.org_id is not None else ""
        return f"devops-agent-user-{self.user_id}{team}"


class Cloud(Protocol):
    """A place tools run against: the sandbox or a real provider account."""

    name: str
    region: str
    needs_connection: bool  # True: a customer must connect an account before tools run

    def clients_for(self, target: CloudTarget) -> CloudClients: ...

    def verify(self, target: CloudTarget) -> str:
        """Check the target's role can be assumed; its account id, or ``ToolError`` with the reason."""
        ...


class ToolError(Exception):
    """A tool call that did not do what was asked.

    ``our_side`` is true when the failure is ours or the provider's (network, outage,
    throttling, a bug): the user is not to pay for it. It is false when the cloud
    answered that the request itself is wrong (no such instance, a taken name).
    """

    def __init__(self, message: str, *, our_side: bool) -> None:
        super().__init__(message)
        self.message = message
        self.our_side = our_side


class InvalidToolInput(ValueError):
    """The model asked for a tool that does not exist or sent arguments it does not take."""


@dataclass(frozen=True)
class Tool:
    """One action the agent may take; ``provider`` groups tools by cloud (``aws``, ...)."""

    name: str
    provider: str
    description: str
    input_model: type[BaseModel]
    run: Callable[[CloudClients, Any], dict[str, Any]]
    summarize: Callable[[dict[str, Any]], str]

    @property
    def input_schema(self) -> dict[str, Any]:
        schema = self.input_model.model_json_schema()
        schema.pop("title", None)
        return schema


@dataclass(frozen=True)
class ToolOutcome:
    """What came of running a tool: a result, or an error and whose fault it was."""

    ok: bool
    result: dict[str, Any]
    summary: str
    our_side: bool = False

    def as_text(self) -> str:
        """The result as the model reads it (JSON)."""
        return json.dumps(self.result, default=str, sort_keys=True)


class Toolbox:
    """The tools of every provider, bound to one cloud."""

    def __init__(self, tools: Iterable[Tool], cloud: Cloud) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.cloud = cloud

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def definitions(self) -> list[Tool]:
        return list(self.tools.values())

    def validate(self, name: str, arguments: dict[str, Any]) -> BaseModel:
        """Parse the model's arguments; raise ``InvalidToolInput`` with a readable reason."""
        tool = self.tools.get(name)
        if tool is None:
            raise InvalidToolInput(f"there is no tool named {name!r}")
        try:
            return tool.input_model.model_validate(arguments)
        except ValidationError as exc:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors())
            raise InvalidToolInput(f"{name}: {reasons}") from exc

    async def run(self, name: str, arguments: BaseModel, *, target: CloudTarget) -> ToolOutcome:
        """Run a validated call in ``target``'s account in a worker thread; never raises for a failed call."""
        tool = self.tools[name]

        def call() -> dict[str, Any]:
            return tool.run(self.cloud.clients_for(target), arguments)

        try:
            result = await asyncio.to_thread(call)
        except ToolError as exc:
            return ToolOutcome(False, {"error": exc.message}, exc.message, our_side=exc.our_side)
        except Exception as exc:  # a bug or an unexpected library failure: ours, not the user's
            message = f"{name} failed: {type(exc).__name__}: {exc}"
            return ToolOutcome(False, {"error": message}, message, our_side=True)
        return ToolOutcome(True, result, tool.summarize(result))
