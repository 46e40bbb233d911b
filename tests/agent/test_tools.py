"""Every AWS tool against the moto sandbox: what one creates, the matching list sees."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from devops_agent.agent.tools import build_toolbox, sandbox_server
from devops_agent.agent.tools.aws import SandboxCloud
from devops_agent.agent.tools.registry import CloudClients, CloudTarget, InvalidToolInput, Toolbox


def _box(sandbox: SandboxCloud) -> Toolbox:
    return build_toolbox(sandbox)


async def _run(box: Toolbox, tool: str, user_id: int = 1, **arguments: object) -> dict[str, object]:
    outcome = await box.run(tool, box.validate(tool, dict(arguments)), target=CloudTarget(user_id))
    assert outcome.ok, outcome.summary
    return outcome.result


async def test_ec2_create_list_stop(sandbox: SandboxCloud) -> None:
    box = _box(sandbox)
    created = await _run(box, "create_ec2_instance", name="web-1", instance_type="t3.small")
    instance = created["instance"]
    assert isinstance(instance, dict)
    assert (instance["name"], instance["instance_type"], instance["state"]) == ("web-1", "t3.small", "pending")

    listed = await _run(box, "get_ec2_instances")
    assert [(i["instance_id"], i["name"]) for i in listed["instances"]] == [(instance["instance_id"], "web-1")]  # type: ignore[attr-defined]

    stopped = await _run(box, "stop_ec2_instance", instance_id=instance["instance_id"])
    assert (stopped["previous_state"], stopped["state"]) == ("running", "stopping")


async def test_rds_create_then_list(sandbox: SandboxCloud) -> None:
    box = _box(sandbox)
    created = await _run(box, "create_rds_instance", identifier="orders-db", engine="mysql")
    assert created["database"]["identifier"] == "orders-db"  # type: ignore[index]
    listed = await _run(box, "get_rds_instances")
    assert [(d["identifier"], d["engine"]) for d in listed["databases"]] == [("orders-db", "mysql")]  # type: ignore[attr-defined]


async def test_s3_create_then_list(sandbox: SandboxCloud) -> None:
    box = _box(sandbox)
    name = f"logs-{uuid.uuid4().hex[:12]}"
    await _run(box, "create_s3_bucket", name=name)
    listed = await _run(box, "get_s3_buckets")
    assert [b["name"] for b in listed["buckets"]] == [name]  # type: ignore[attr-defined]


async def test_each_user_has_an_account_of_their_own(sandbox: SandboxCloud) -> None:
    box = _box(sandbox)
    await _run(box, "create_ec2_instance", user_id=1, name="mine")
    assert (await _run(box, "get_ec2_instances", user_id=2))["instances"] == []
    assert sandbox.account_id(1) != sandbox.account_id(2)


async def test_a_team_has_a_sandbox_account_of_its_own(sandbox: SandboxCloud) -> None:
    box = _box(sandbox)
    made = await box.run(
        "create_ec2_instance", box.validate("create_ec2_instance", {"name": "team-box"}), target=CloudTarget(1, 7)
    )
    assert made.ok, made.summary
    teammate = await box.run("get_ec2_instances", box.validate("get_ec2_instances", {}), target=CloudTarget(2, 7))
    assert [i["name"] for i in teammate.result["instances"]] == ["team-box"]
    assert (await _run(box, "get_ec2_instances", user_id=1))["instances"] == []


async def test_a_request_aws_refuses_is_the_callers_failure(sandbox: SandboxCloud) -> None:
    box = _box(sandbox)
    outcome = await box.run(
        "stop_ec2_instance",
        box.validate("stop_ec2_instance", {"instance_id": "i-0123456789abcdef0"}),
        target=CloudTarget(1),
    )
    assert not outcome.ok
    assert not outcome.our_side
    assert "InvalidInstanceID.NotFound" in outcome.summary


class UnreachableCloud:
    """Real boto3 clients aimed at a closed loopback port: AWS is down, as far as we can tell."""

    name = "unreachable"
    region = "us-east-1"
    needs_connection = False

    def verify(self, target: CloudTarget) -> str:
        raise AssertionError("not used")

    def clients_for(self, target: CloudTarget) -> CloudClients:
        session = boto3.session.Session(aws_access_key_id="x", aws_secret_access_key="y", region_name="us-east-1")
        config = Config(retries={"max_attempts": 1}, connect_timeout=1)

        class Clients:
            def client(self, service: str) -> object:
                return session.client(service, endpoint_url="http://127.0.0.1:9", config=config)

        return Clients()


async def test_an_unreachable_cloud_is_our_failure() -> None:
    box = build_toolbox(UnreachableCloud())
    outcome = await box.run("get_s3_buckets", box.validate("get_s3_buckets", {}), target=CloudTarget(1))
    assert not outcome.ok
    assert outcome.our_side
    assert "could not be reached" in outcome.summary


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("create_ec2_instance", {}),
        ("create_ec2_instance", {"name": "web 1; rm"}),
        ("stop_ec2_instance", {"instance_id": "not-an-id"}),
        ("create_s3_bucket", {"name": "UPPER"}),
        ("create_rds_instance", {"identifier": "x", "engine": "oracle"}),
        ("get_ec2_instances", {"surprise": 1}),
        ("no_such_tool", {}),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(sandbox: SandboxCloud, name: str, arguments: dict) -> None:
    with pytest.raises(InvalidToolInput):
        _box(sandbox).validate(name, arguments)


def test_tool_definitions_carry_json_schemas(sandbox: SandboxCloud) -> None:
    tools = {t.name: t for t in _box(sandbox).definitions()}
    assert set(tools) >= {"get_ec2_instances", "create_ec2_instance", "create_rds_instance", "get_s3_buckets"}
    assert tools["create_ec2_instance"].input_schema["required"] == ["name"]
    assert all(t.provider == "aws" for t in tools.values())


async def test_a_shared_sandbox_server_keeps_each_customers_cloud_across_restarts() -> None:
    process, url = sandbox_server.start()
    try:
        namespace = uuid.uuid4().hex
        before = build_toolbox(SandboxCloud(namespace=namespace, endpoint_url=url))
        made = await before.run(
            "create_ec2_instance", before.validate("create_ec2_instance", {"name": "kept"}), target=CloudTarget(1)
        )
        assert made.ok, made.summary
        # Another worker, or the service after a restart: a new cloud object, the same server.
        after = build_toolbox(SandboxCloud(namespace=namespace, endpoint_url=url))
        listed = await after.run("get_ec2_instances", after.validate("get_ec2_instances", {}), target=CloudTarget(1))
        assert [i["name"] for i in listed.result["instances"]] == ["kept"]
        other = await after.run("get_ec2_instances", after.validate("get_ec2_instances", {}), target=CloudTarget(2))
        assert other.result["instances"] == []
    finally:
        sandbox_server.stop(process)
    # It really was that server: with it gone, the sandbox cannot be reached.
    gone = await after.run("get_ec2_instances", after.validate("get_ec2_instances", {}), target=CloudTarget(1))
    assert (gone.ok, gone.our_side) == (False, True)


def test_the_sandbox_server_ends_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    """A SIGKILLed ``serve`` cannot stop its sandbox itself: the sandbox must not outlive it."""
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from devops_agent.agent.tools import sandbox_server\n"
            "process, url = sandbox_server.start()\n"
            "print(process.pid, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert starter.stdout is not None
        sandbox_pid = int(starter.stdout.readline())
        assert _alive(sandbox_pid)
        starter.kill()
        starter.wait()
        for _ in range(200):  # an event, not a duration: wait until the sandbox is gone (20 s at most)
            if not _alive(sandbox_pid):
                break
            time.sleep(0.1)
        assert not _alive(sandbox_pid), "the sandbox server outlived the process that started it"
    finally:
        starter.kill()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for init to reap counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
