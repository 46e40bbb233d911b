"""The offline agent: deterministic answers to plain requests, always saying who it is."""

from __future__ import annotations

import json

import pytest

from devops_agent.agent.backends.base import ToolResult, ToolResults, UserTurn
from devops_agent.agent.backends.offline import OfflineBackend
from devops_agent.agent.tools.aws import TOOLS

TOOL_LIST = list(TOOLS)


@pytest.mark.parametrize(
    ("message", "calls"),
    [
        ("list my EC2 instances", [("get_ec2_instances", {})]),
        (
            "create a t3.micro instance named web-1",
            [("create_ec2_instance", {"name": "web-1", "instance_type": "t3.micro"})],
        ),
        ("launch a server called api", [("create_ec2_instance", {"name": "api"})]),
        ("stop instance i-0abc1234def567890", [("stop_ec2_instance", {"instance_id": "i-0abc1234def567890"})]),
        ("show my RDS databases", [("get_rds_instances", {})]),
        (
            "create a mysql database named orders-db",
            [("create_rds_instance", {"identifier": "orders-db", "engine": "mysql"})],
        ),
        ("list S3 buckets", [("get_s3_buckets", {})]),
        ("create a bucket named my-logs-2026", [("create_s3_bucket", {"name": "my-logs-2026"})]),
        ("show my instances and buckets", [("get_ec2_instances", {}), ("get_s3_buckets", {})]),
    ],
)
async def test_plain_requests_become_tool_calls(message: str, calls: list[tuple[str, dict[str, str]]]) -> None:
    turn = await OfflineBackend().next_turn([UserTurn(message)], TOOL_LIST)
    assert [(c.name, c.arguments) for c in turn.tool_calls] == calls


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("help", "list my EC2 instances"),
        ("hello", "Hello!"),
        ("what is the meaning of life?", "Sorry, I did not understand"),
        ("create an instance", "What should the instance be called?"),
        ("stop my server", "Which instance should I stop?"),
    ],
)
async def test_other_messages_get_a_polite_answer_without_tools(message: str, expected: str) -> None:
    turn = await OfflineBackend().next_turn([UserTurn(message)], TOOL_LIST)
    assert turn.tool_calls == ()
    assert not turn.text.startswith("[")
    assert expected in turn.text


async def test_it_reports_tool_results_and_failures() -> None:
    results = ToolResults(
        (
            ToolResult("1", "get_s3_buckets", json.dumps({"buckets": [{"name": "a-bucket"}]})),
            ToolResult("2", "create_ec2_instance", json.dumps({"error": "not run: no credits"}), is_error=True),
        )
    )
    turn = await OfflineBackend().next_turn([UserTurn("x"), results], TOOL_LIST)
    assert not turn.text.startswith("[")
    assert "- a-bucket" in turn.text
    assert "create_ec2_instance did not succeed: not run: no credits" in turn.text


async def test_it_is_deterministic() -> None:
    backend = OfflineBackend()
    turns = [await backend.next_turn([UserTurn("create a t3.small instance named db-1")], TOOL_LIST) for _ in range(2)]
    assert turns[0] == turns[1]


async def test_counts_read_as_words() -> None:
    one = ToolResults((ToolResult("1", "get_s3_buckets", json.dumps({"buckets": [{"name": "a-bucket"}]})),))
    two = ToolResults((ToolResult("1", "get_s3_buckets", json.dumps({"buckets": [{"name": "a"}, {"name": "b"}]})),))
    assert (await OfflineBackend().next_turn([UserTurn("x"), one], TOOL_LIST)).text.startswith("You have 1 S3 bucket:")
    assert (await OfflineBackend().next_turn([UserTurn("x"), two], TOOL_LIST)).text.startswith("You have 2 S3 buckets:")
