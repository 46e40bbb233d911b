"""The offline agent: a deterministic, rule-based stand-in for an LLM.

It is the default when no ``ANTHROPIC_API_KEY`` is set, so that DevOps Agent works
(and is metered exactly like Claude) on a machine without network or key. It
understands plain requests ("list my EC2 instances", "create a t3.micro instance
named web-1", "show my RDS databases", "list S3 buckets", "create a bucket named
logs-1", "stop instance i-...", "help"), calls the same tools Claude would, and
answers anything else politely. Replies are stored with the backend's name
(``offline``), which the chat shows as a label.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from devops_agent.agent.tools.registry import Tool

from .base import AssistantTurn, ToolCall, ToolResults, Turn, UserTurn

HELP = (
    "I am the offline agent (no AI model is connected), and I understand requests like:\n"
    "- list my EC2 instances\n"
    "- create a t3.micro instance named web-1\n"
    "- stop instance i-0123456789abcdef0\n"
    "- show my RDS databases\n"
    "- create a postgres database named orders-db\n"
    "- list S3 buckets\n"
    "- create a bucket named my-logs-2026\n"
    "Each message costs 1 credit; each cloud action costs its own credits (creating an "
    "instance or a database costs 5)."
)

NOT_UNDERSTOOD = (
    "Sorry, I did not understand that. I am the offline agent and only know a few cloud chores; say 'help' to see them."
)

_NAME = r"(?:named|called)\s+[\"']?([A-Za-z0-9][A-Za-z0-9._-]*)"
_CREATE = r"\b(?:create|launch|start up|spin up|make|provision|new)\b"
_LIST = r"\b(?:list|show|get|what|which|describe|display|see)\b"


def _intent(text: str) -> tuple[list[ToolCall], str | None]:
    """Tool calls for a request, or a direct answer when no tool is needed."""
    t = text.strip()
    low = t.lower()
    if not low or re.fullmatch(r"(?:help|\?|what can you do\??|commands)", low):
        return [], HELP
    if re.search(r"\b(?:stop|halt|shut ?down)\b", low):
        match = re.search(r"\b(i-[0-9a-f]{8,17})\b", low)
        if match:
            return [ToolCall("offline-1", "stop_ec2_instance", {"instance_id": match.group(1)})], None
        return [], "Which instance should I stop? Give me its id, like: stop instance i-0123456789abcdef0."
    name = re.search(_NAME, t, re.IGNORECASE)
    if re.search(_CREATE, low):
        if re.search(r"\bbucket\b|\bs3\b", low):
            if name:
                return [ToolCall("offline-1", "create_s3_bucket", {"name": name.group(1)})], None
            return [], "What should the bucket be called? Try: create a bucket named my-logs-2026."
        if re.search(r"\b(?:rds|database|db|postgres|mysql|mariadb)\b", low):
            if not name:
                return [], "What should the database be called? Try: create a database named orders-db."
            engine = next((e for e in ("mysql", "mariadb", "postgres") if e in low), "postgres")
            return [ToolCall("offline-1", "create_rds_instance", {"identifier": name.group(1), "engine": engine})], None
        if re.search(r"\b(?:instance|ec2|server|vm|machine)\b", low):
            if not name:
                return [], "What should the instance be called? Try: create a t3.micro instance named web-1."
            args: dict[str, Any] = {"name": name.group(1)}
            itype = re.search(r"\b([a-z][a-z0-9-]*\d[a-z0-9-]*\.(?:nano|micro|small|medium|large|\d*xlarge))\b", low)
            if itype:
                args["instance_type"] = itype.group(1)
            return [ToolCall("offline-1", "create_ec2_instance", args)], None
    if re.search(_LIST, low) or re.search(r"\bmy\b", low):
        calls: list[ToolCall] = []
        if re.search(r"\b(?:ec2|instances?|servers?|vms?|machines?)\b", low):
            calls.append(ToolCall(f"offline-{len(calls) + 1}", "get_ec2_instances", {}))
        if re.search(r"\b(?:rds|databases?|dbs?)\b", low):
            calls.append(ToolCall(f"offline-{len(calls) + 1}", "get_rds_instances", {}))
        if re.search(r"\b(?:s3|buckets?)\b", low):
            calls.append(ToolCall(f"offline-{len(calls) + 1}", "get_s3_buckets", {}))
        if calls:
            return calls, None
    if re.match(r"^(?:hi|hello|hey|good (?:morning|afternoon|evening))\b", low):
        return [], "Hello! I can list and create EC2 instances, RDS databases and S3 buckets. Say 'help'."
    if re.search(r"\b(?:thanks|thank you)\b", low):
        return [], "You're welcome."
    return [], NOT_UNDERSTOOD


def describe_result(name: str, result: dict[str, Any], is_error: bool) -> str:
    """One paragraph about one tool result."""
    if "pending_approval" in result:
        action = result["pending_approval"]
        return (
            f"{name} needs your approval: it costs {action['credits']} credits and starts something billed "
            f"on your cloud. Approve or decline it (action {action['id']}, open until {action['expires_at']})."
        )
    if is_error or "error" in result:
        return f"{name} did not succeed: {result.get('error', 'unknown error')}"
    if name in _LISTINGS:
        key, noun, line = _LISTINGS[name]
        items = result[key]
        if not items:
            return f"You have no {noun}s."
        return f"You have {_count(len(items), noun)}:\n" + "\n".join(line(item) for item in items)
    if name == "create_ec2_instance":
        i = result["instance"]
        return f"Launched EC2 instance {i['instance_id']} named {i['name']} ({i['instance_type']}, {i['state']})."
    if name == "stop_ec2_instance":
        return f"Instance {result['instance_id']} is {result['state']} (it was {result['previous_state']})."
    if name == "create_rds_instance":
        d = result["database"]
        return f"Creating RDS database {d['identifier']} ({d['engine']}, {d['instance_class']}): {d['status']}."
    if name == "create_s3_bucket":
        return f"Created S3 bucket {result['bucket']['name']}."
    return f"{name}: {json.dumps(result, default=str)}"


# The listing tools: the result's key, what one item is called, and its line.
_LISTINGS: dict[str, tuple[str, str, Callable[[dict[str, Any]], str]]] = {
    "get_ec2_instances": (
        "instances",
        "EC2 instance",
        lambda i: f"- {i['instance_id']} {i['name'] or '(no name)'} {i['instance_type']} {i['state']}",
    ),
    "get_rds_instances": (
        "databases",
        "RDS database",
        lambda d: f"- {d['identifier']} {d['engine']} {d['instance_class']} {d['status']}",
    ),
    "get_s3_buckets": ("buckets", "S3 bucket", lambda b: f"- {b['name']}"),
}


def _count(n: int, noun: str) -> str:
    """ "1 S3 bucket", "2 S3 buckets"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class OfflineBackend:
    """Deterministic rules instead of a model; same tools, same metering."""

    name = "offline"

    async def next_turn(self, transcript: list[Turn], tools: list[Tool]) -> AssistantTurn:
        last = transcript[-1]
        if isinstance(last, ToolResults):
            parts = []
            for r in last.results:
                try:
                    result = json.loads(r.content)
                except ValueError:
                    result = {"error": r.content} if r.is_error else {"output": r.content}
                parts.append(describe_result(r.name, result if isinstance(result, dict) else {}, r.is_error))
            return AssistantTurn("\n\n".join(parts))
        text = last.text if isinstance(last, UserTurn) else ""
        calls, answer = _intent(text)
        available = {t.name for t in tools}
        if calls and all(c.name in available for c in calls):
            return AssistantTurn("", tuple(calls))
        if answer == NOT_UNDERSTOOD:
            return AssistantTurn(answer, understood=False)
        return AssistantTurn(answer or "That tool is not available here.")
