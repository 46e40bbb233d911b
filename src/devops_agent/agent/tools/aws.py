"""AWS tools (EC2, RDS, S3) through boto3, and the two clouds they run against.

* ``SandboxCloud`` (``CLOUD=sandbox``, the default): an AWS built on ``moto``, one
  moto server shared by every worker (``SANDBOX_URL``) or moto in this process.
  Every user and every team gets an AWS account of their own inside it (a 12-digit
  id derived from the owner, sent as moto's ``x-moto-account-id`` header), so one
  customer's instances are invisible to another, and everything they create stays
  for the life of the sandbox. No request leaves the machine.
* ``AwsCloud`` (``CLOUD=aws``): real AWS, in each customer's own account through the
  IAM role they connected (``sts:AssumeRole`` with their external id); the operator's
  credentials boto3 finds in the environment are used for AssumeRole alone.

The tool names (``get_ec2_instances``, ``create_ec2_instance``, ``create_rds_instance``,
...) are data: the pricing file prices them and usage logs store them, so a rename
needs both changed. Other providers join by adding a module like this
one and listing its tools in ``tools.ALL_TOOLS`` (which the pricing file is checked against).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from .registry import CloudClients, CloudTarget, Tool, ToolError

PROVIDER = "aws"
DEFAULT_REGION = "us-east-1"
# The public SSM parameter naming the current Amazon Linux 2023 AMI (moto knows it too).
DEFAULT_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
BOTO_CONFIG = Config(connect_timeout=5, read_timeout=30, retries={"mode": "standard", "max_attempts": 3})

# Error codes that mean "AWS could not serve the request", not "the request is wrong".
_PROVIDER_FAULTS = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "SlowDown",
    }
)


# --- clouds ---------------------------------------------------------------------------


class _Clients:
    """boto3 clients made once per service (clients are thread-safe, making them is not)."""

    def __init__(
        self,
        session: boto3.session.Session,
        region: str,
        account_id: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self._session = session
        self._region = region
        self._account_id = account_id
        self._endpoint_url = endpoint_url
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = self._session.client(
                    service, region_name=self._region, config=BOTO_CONFIG, endpoint_url=self._endpoint_url
                )
                if self._account_id is not None:
                    client.meta.events.register("before-sign", self._name_account)
                self._clients[service] = client
            return client

    def _name_account(self, request: Any, **_: Any) -> None:
        request.headers["x-moto-account-id"] = self._account_id


class SandboxCloud:
    """A sandbox AWS (moto), one account per user and per team.

    With ``endpoint_url`` it is a moto server that every worker shares (``serve`` starts
    one, see ``sandbox_server``); without, moto runs inside this process, for the life
    of the process.

    moto patches botocore for the whole process, so it is started once, the first
    time any sandbox is used, and never stopped. ``namespace`` keeps sandboxes apart
    inside one process (tests give each module its own).
    """

    name = "sandbox"
    needs_connection = False
    _started = False
    _start_lock = threading.Lock()

    def __init__(
        self, namespace: str = "devops-agent", region: str = DEFAULT_REGION, endpoint_url: str | None = None
    ) -> None:
        self.namespace = namespace
        self.region = region
        self.endpoint_url = endpoint_url  # a moto server every process shares; None: moto in this process
        self._users: dict[int | str, _Clients] = {}
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None

    @classmethod
    def _ensure_started(cls) -> None:
        with cls._start_lock:
            if not cls._started:
                from moto import mock_aws  # imported late: moto is slow to import

                mock_aws().start()
                cls._started = True

    def account_id(self, owner: int | str) -> str:
        """The sandbox AWS account of a user (their id) or a team (``org-<id>``): 12 digits from the namespace."""
        digest = hashlib.sha256(f"{self.namespace}:{owner}".encode()).hexdigest()
        return str(int(digest, 16) % 10**12).zfill(12)

    def verify(self, target: CloudTarget) -> str:
        """The sandbox trusts any role: its account is the one the ARN names."""
        return str(target.role_arn).split(":")[4]

    def clients_for(self, target: CloudTarget) -> CloudClients:
        owner: int | str = target.user_id if target.org_id is None else f"org-{target.org_id}"
        if self.endpoint_url is None:
            self._ensure_started()
        with self._lock:
            if self._session is None:
                # Made after moto started (a session copies botocore's handlers when made, and
                # moto's hook must be among them). Fixed fake keys: the sandbox never sees real ones.
                self._session = boto3.session.Session(
                    aws_access_key_id="sandbox", aws_secret_access_key="sandbox", region_name=self.region
                )
            clients = self._users.get(owner)
            if clients is None:
                clients = _Clients(self._session, self.region, self.account_id(owner), self.endpoint_url)
                self._users[owner] = clients
            return clients


class AwsCloud:
    """Real AWS: each customer's own account, through the role they connected.

    Our own credentials (what boto3 finds in the environment) serve for one call
    only: ``sts:AssumeRole`` on the customer's role, with their external id and a
    session name naming the user. The temporary credentials are cached per role,
    external id and session until ``REFRESH_BEFORE`` before they expire.
    """

    name = "aws"
    needs_connection = True
    DURATION_SECONDS = 3600
    REFRESH_BEFORE = timedelta(minutes=5)

    def __init__(
        self,
        region: str | None = None,
        *,
        session: boto3.session.Session | None = None,
        endpoint_url: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._operator = session or boto3.session.Session()
        self.region = region or self._operator.region_name or DEFAULT_REGION
        self._endpoint_url = endpoint_url
        self._clock = clock
        self._sts: Any = None
        self._cache: dict[tuple[str, str, str, str], tuple[datetime, _Clients]] = {}
        self._lock = threading.Lock()

    def _assume(self, target: CloudTarget, region: str) -> tuple[boto3.session.Session, datetime]:
        """A session with the role's temporary credentials (AssumeRole with the operator's credentials)."""
        with self._lock:
            if self._sts is None:
                self._sts = self._operator.client(
                    "sts", region_name=self.region, config=BOTO_CONFIG, endpoint_url=self._endpoint_url
                )
        reply = _call(
            self._sts,
            "assume_role",
            RoleArn=target.role_arn,
            ExternalId=target.external_id,
            RoleSessionName=target.session_name,
            DurationSeconds=self.DURATION_SECONDS,
        )
        creds = reply["Credentials"]
        session = boto3.session.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name=region,
        )
        return session, creds["Expiration"]

    def verify(self, target: CloudTarget) -> str:
        """Assume the role and ask GetCallerIdentity; the account id, or ``ToolError`` with AWS's reason."""
        session, _ = self._assume(target, target.region or self.region)
        sts = session.client("sts", region_name=target.region or self.region, endpoint_url=self._endpoint_url)
        return str(_call(sts, "get_caller_identity")["Account"])

    def clients_for(self, target: CloudTarget) -> CloudClients:
        if target.role_arn is None or target.external_id is None:
            raise ToolError("No AWS account is connected; connect one on the account page.", our_side=True)
        region = target.region or self.region
        key = (target.role_arn, target.external_id, target.session_name, region)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] - now > self.REFRESH_BEFORE:
            return cached[1]
        try:
            session, expires = self._assume(target, region)
        except ToolError as exc:  # the role is gone or no longer trusts us: not the user's request at fault
            raise ToolError(exc.message, our_side=True) from exc
        clients = _Clients(session, region, endpoint_url=self._endpoint_url)
        with self._lock:
            self._cache[key] = (expires, clients)
        return clients


# --- calling AWS ----------------------------------------------------------------------


def _call(client: Any, operation: str, **params: Any) -> Any:
    """Call one AWS operation; map its failures to ``ToolError`` saying whose fault it was."""
    try:
        return getattr(client, operation)(**params)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400))
        our_side = code in _PROVIDER_FAULTS or status >= 500
        raise ToolError(f"AWS refused {operation}: {code}: {error.get('Message', '')}", our_side=our_side) from exc
    except BotoCoreError as exc:  # no connection, timeout, no credentials
        raise ToolError(f"AWS could not be reached for {operation}: {exc}", our_side=True) from exc


def _tag(tags: list[dict[str, str]] | None, key: str) -> str | None:
    return next((t["Value"] for t in tags or [] if t.get("Key") == key), None)


class _NoInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- EC2 ------------------------------------------------------------------------------


def _instance(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "instance_id": raw["InstanceId"],
        "name": _tag(raw.get("Tags"), "Name"),
        "instance_type": raw.get("InstanceType"),
        "state": raw.get("State", {}).get("Name"),
        "launch_time": raw.get("LaunchTime"),
    }


def get_ec2_instances(clients: CloudClients, _: _NoInput) -> dict[str, Any]:
    pages = clients.client("ec2").get_paginator("describe_instances").paginate()
    try:
        instances = [_instance(i) for page in pages for r in page["Reservations"] for i in r["Instances"]]
    except (ClientError, BotoCoreError) as exc:
        raise ToolError(f"AWS could not list EC2 instances: {exc}", our_side=True) from exc
    return {"instances": instances}


class CreateEc2Input(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    instance_type: str = Field(default="t3.micro", pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
    image_id: str | None = Field(default=None, pattern=r"^ami-[0-9a-f]{8,17}$")


def create_ec2_instance(clients: CloudClients, args: CreateEc2Input) -> dict[str, Any]:
    image_id = args.image_id
    if image_id is None:
        parameter = _call(clients.client("ssm"), "get_parameter", Name=DEFAULT_AMI_PARAMETER)
        image_id = parameter["Parameter"]["Value"]
    reply = _call(
        clients.client("ec2"),
        "run_instances",
        ImageId=image_id,
        InstanceType=args.instance_type,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": args.name}]}],
    )
    return {"instance": _instance(reply["Instances"][0])}


class StopEc2Input(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instance_id: str = Field(pattern=r"^i-[0-9a-f]{8,17}$")


def stop_ec2_instance(clients: CloudClients, args: StopEc2Input) -> dict[str, Any]:
    reply = _call(clients.client("ec2"), "stop_instances", InstanceIds=[args.instance_id])
    change = reply["StoppingInstances"][0]
    return {
        "instance_id": change["InstanceId"],
        "previous_state": change["PreviousState"]["Name"],
        "state": change["CurrentState"]["Name"],
    }


# --- RDS ------------------------------------------------------------------------------


def _database(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "identifier": raw["DBInstanceIdentifier"],
        "engine": raw.get("Engine"),
        "instance_class": raw.get("DBInstanceClass"),
        "status": raw.get("DBInstanceStatus"),
        "allocated_storage_gb": raw.get("AllocatedStorage"),
    }


def get_rds_instances(clients: CloudClients, _: _NoInput) -> dict[str, Any]:
    reply = _call(clients.client("rds"), "describe_db_instances")
    return {"databases": [_database(d) for d in reply["DBInstances"]]}


class CreateRdsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    identifier: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z](?:-?[A-Za-z0-9])*$")
    engine: Literal["postgres", "mysql", "mariadb"] = "postgres"
    instance_class: str = Field(default="db.t3.micro", pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")
    allocated_storage_gb: int = Field(default=20, ge=20, le=1000)


def create_rds_instance(clients: CloudClients, args: CreateRdsInput) -> dict[str, Any]:
    # AWS keeps the master password in Secrets Manager: no secret passes through the chat.
    reply = _call(
        clients.client("rds"),
        "create_db_instance",
        DBInstanceIdentifier=args.identifier,
        Engine=args.engine,
        DBInstanceClass=args.instance_class,
        AllocatedStorage=args.allocated_storage_gb,
        MasterUsername=f"admin_{secrets.token_hex(3)}",
        ManageMasterUserPassword=True,
    )
    return {"database": _database(reply["DBInstance"])}


# --- S3 -------------------------------------------------------------------------------


def get_s3_buckets(clients: CloudClients, _: _NoInput) -> dict[str, Any]:
    reply = _call(clients.client("s3"), "list_buckets")
    return {"buckets": [{"name": b["Name"], "created": b.get("CreationDate")} for b in reply["Buckets"]]}


class CreateBucketInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")


def create_s3_bucket(clients: CloudClients, args: CreateBucketInput) -> dict[str, Any]:
    client = clients.client("s3")
    params: dict[str, Any] = {"Bucket": args.name}
    region = client.meta.region_name
    if region != "us-east-1":  # us-east-1 is the one region that refuses a location constraint
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    _call(client, "create_bucket", **params)
    return {"bucket": {"name": args.name, "region": region}}


# --- the tools ------------------------------------------------------------------------


def _count(key: str, noun: str) -> Any:
    def summary(result: dict[str, Any]) -> str:
        items = result.get(key, [])
        return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"

    return summary


TOOLS: tuple[Tool, ...] = (
    Tool(
        "get_ec2_instances",
        PROVIDER,
        "List the EC2 instances in the user's account with their id, Name tag, type and state.",
        _NoInput,
        get_ec2_instances,
        _count("instances", "EC2 instance"),
    ),
    Tool(
        "create_ec2_instance",
        PROVIDER,
        "Launch one EC2 instance with a Name tag (default type t3.micro, default image Amazon Linux 2023).",
        CreateEc2Input,
        create_ec2_instance,
        lambda r: f"launched {r['instance']['instance_id']} ({r['instance']['instance_type']})",
    ),
    Tool(
        "stop_ec2_instance",
        PROVIDER,
        "Stop a running EC2 instance by its id (i-...).",
        StopEc2Input,
        stop_ec2_instance,
        lambda r: f"{r['instance_id']}: {r['previous_state']} -> {r['state']}",
    ),
    Tool(
        "get_rds_instances",
        PROVIDER,
        "List the RDS database instances in the user's account.",
        _NoInput,
        get_rds_instances,
        _count("databases", "RDS database"),
    ),
    Tool(
        "create_rds_instance",
        PROVIDER,
        "Create an RDS database instance (default postgres, db.t3.micro, 20 GB); AWS manages the password.",
        CreateRdsInput,
        create_rds_instance,
        lambda r: f"creating database {r['database']['identifier']} ({r['database']['engine']})",
    ),
    Tool(
        "get_s3_buckets",
        PROVIDER,
        "List the S3 buckets in the user's account.",
        _NoInput,
        get_s3_buckets,
        _count("buckets", "S3 bucket"),
    ),
    Tool(
        "create_s3_bucket",
        PROVIDER,
        "Create an S3 bucket (the name must be globally unique, lowercase).",
        CreateBucketInput,
        create_s3_bucket,
        lambda r: f"created bucket {r['bucket']['name']}",
    ),
)
