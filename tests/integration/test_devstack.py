"""The local stack: template.yaml read with its short-form tags, its resources on moto, and
``python -m devstack`` (``make run``) as a user runs it.

Expectations come from template.yaml itself, never from a second list of resources.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from mailcore.store import Store

from devstack.intrinsics import NO_VALUE, references
from devstack.stack import DEFAULT_TEMPLATE, LOCAL_CREDENTIALS, EndpointSession, StackInfo, seed_demo
from devstack.template import (
    BUCKET,
    EMULATED_TYPES,
    EVENT_BUS,
    QUEUE,
    TABLE,
    Resolver,
    TemplateError,
    create_resources,
    creation_order,
    emulated_resources,
    function_specs,
    load_template,
)

TEMPLATE = load_template(DEFAULT_TEMPLATE)


def of_type(kind: str) -> list[str]:
    return [rid for rid in emulated_resources(TEMPLATE) if TEMPLATE.resources[rid]["Type"] == kind]


@pytest.fixture(scope="module")
def aws(local_stack: StackInfo) -> EndpointSession:
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=local_stack.region,
    )
    return EndpointSession(session, local_stack.endpoint)


# -- loading and resolving ---------------------------------------------------------

SHORT_FORMS = """
Parameters:
  Env: {Type: String, Default: dev}
  Subnets: {Type: CommaDelimitedList, Default: "a,b"}
Conditions:
  IsProd: !Equals [!Ref Env, prod]
  IsDev: !Not [!Condition IsProd]
  Both: !And [!Condition IsDev, !Or [!Condition IsProd, !Equals [1, 1]]]
Mappings:
  Sizes: {dev: {Memory: 128}}
Resources:
  Q: {Type: AWS::SQS::Queue}
  B: {Type: AWS::S3::Bucket}
  Values:
    Type: Custom::Values
    Properties:
      Ref: !Ref Q
      Arn: !GetAtt Q.Arn
      BucketArn: !GetAtt [B, Arn]
      Sub: !Sub "${AWS::StackName}-${B}-${Q.QueueName}-${!Literal}"
      SubVars: !Sub ["${X}/${AWS::Region}", {X: !Ref AWS::AccountId}]
      If: !If [IsProd, big, small]
      Dropped: !If [IsProd, x, !Ref AWS::NoValue]
      List: [a, !If [IsProd, b, !Ref AWS::NoValue]]
      Both: !Condition Both
      Join: !Join ["-", [a, !Ref Env]]
      Split: !Split [",", "x,y"]
      Select: !Select [1, !Ref Subnets]
      Map: !FindInMap [Sizes, !Ref Env, Memory]
      AZs: !GetAZs ""
      B64: !Base64 hi
      Cidr: !Cidr ["10.0.0.0/24", 2, 6]
      Date: 2010-09-09
"""


@pytest.fixture
def short_forms(tmp_path: Path) -> Any:
    path = tmp_path / "template.yaml"
    path.write_text(SHORT_FORMS)
    return load_template(path)


def test_short_form_tags_become_long_form(short_forms):
    values = short_forms["Resources"]["Values"]["Properties"]
    assert values["Ref"] == {"Ref": "Q"}
    assert values["Arn"] == {"Fn::GetAtt": ["Q", "Arn"]}
    assert values["BucketArn"] == {"Fn::GetAtt": ["B", "Arn"]}
    assert values["Both"] == {"Condition": "Both"}
    assert values["AZs"] == {"Fn::GetAZs": ""}
    # Dates stay text, as CloudFormation reads them.
    assert values["Date"] == "2010-09-09"


def test_intrinsics_resolve_to_local_values(short_forms):
    resolver = Resolver(short_forms, endpoint="http://127.0.0.1:4566")
    values = resolver.resolve(short_forms["Resources"]["Values"]["Properties"])
    assert values == {
        "Ref": "http://127.0.0.1:4566/123456789012/Q",  # Ref of a queue is its URL
        "Arn": "arn:aws:sqs:us-east-1:123456789012:Q",
        "BucketArn": "arn:aws:s3:::b",  # bucket names are lower case
        "Sub": "local-b-Q-${Literal}",
        "SubVars": "123456789012/us-east-1",
        "If": "small",
        "List": ["a"],
        "Both": True,
        "Join": "a-dev",
        "Split": ["x", "y"],
        "Select": "b",
        "Map": 128,
        "AZs": ["us-east-1a", "us-east-1b", "us-east-1c"],
        "B64": "aGk=",
        "Cidr": ["10.0.0.0/26", "10.0.0.64/26"],
        "Date": "2010-09-09",
    }
    assert "Dropped" not in values


def test_parameters_can_be_overridden_and_must_have_a_value(short_forms):
    assert Resolver(short_forms, parameters={"Env": "prod"}).resolve({"Fn::If": ["IsProd", 1, 2]}) == 1
    assert Resolver(short_forms).resolve({"Ref": "AWS::NoValue"}) is NO_VALUE
    with pytest.raises(TemplateError):
        Resolver(TEMPLATE).ref("VpcId")  # no Default in template.yaml
    with pytest.raises(TemplateError):
        Resolver(short_forms).resolve({"Fn::ImportValue": "elsewhere"})


def test_dead_letter_queues_are_created_before_the_queues_that_use_them():
    order = creation_order(TEMPLATE)
    assert sorted(order) == sorted(emulated_resources(TEMPLATE))
    for rid in order:
        for dependency in references(TEMPLATE.resources[rid].get("Properties", {})):
            if dependency in order:
                assert order.index(dependency) < order.index(rid), f"{rid} needs {dependency}"


# -- resources on the emulated AWS ---------------------------------------------------


def test_emulated_aws_holds_exactly_the_templates_resources(local_stack, aws):
    # GIVEN the template's emulated resources, by type, under their local names
    resolver = Resolver(TEMPLATE)
    declared = {kind: {resolver.physical_name(rid) for rid in of_type(kind)} for kind in EMULATED_TYPES}
    assert all(declared.values()), "template.yaml declares every emulated type"
    # WHEN they are created again (creation is idempotent)
    again = create_resources(TEMPLATE, aws, Resolver(TEMPLATE, endpoint=local_stack.endpoint))
    # THEN nothing changes, and the emulated AWS holds what the template declares, no more
    assert again == local_stack.resources
    listed = {
        BUCKET: {b["Name"] for b in aws.client("s3").list_buckets()["Buckets"]},
        TABLE: set(aws.client("dynamodb").list_tables()["TableNames"]),
        QUEUE: {url.rsplit("/", 1)[1] for url in aws.client("sqs").list_queues().get("QueueUrls", [])},
        EVENT_BUS: {b["Name"] for b in aws.client("events").list_event_buses()["EventBuses"]} - {"default"},
    }
    assert listed == declared


def _sorted(items: list[dict[str, Any]], key: str = "AttributeName") -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: item[key])


def _indexes(described: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {i["IndexName"]: (i["KeySchema"], i["Projection"]["ProjectionType"]) for i in described or []}


@pytest.mark.parametrize("table", of_type(TABLE))
def test_table_keys_indexes_and_ttl_are_the_templates(aws, table):
    props = Resolver(TEMPLATE).resolve(TEMPLATE.resources[table]["Properties"])
    ddb = aws.client("dynamodb")
    described = ddb.describe_table(TableName=table)["Table"]
    assert described["KeySchema"] == props["KeySchema"]
    assert _sorted(described["AttributeDefinitions"]) == _sorted(props["AttributeDefinitions"])
    assert described["BillingModeSummary"]["BillingMode"] == props.get("BillingMode", "PROVISIONED")
    assert _indexes(described.get("LocalSecondaryIndexes")) == _indexes(props.get("LocalSecondaryIndexes"))
    assert _indexes(described.get("GlobalSecondaryIndexes")) == _indexes(props.get("GlobalSecondaryIndexes"))
    ttl = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    wanted = props.get("TimeToLiveSpecification", {})
    if wanted.get("Enabled"):
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": wanted["AttributeName"]}
    else:
        assert ttl["TimeToLiveStatus"] == "DISABLED"


@pytest.mark.parametrize("name", of_type(QUEUE))
def test_queue_attributes_and_redrive_are_the_templates(local_stack, aws, name):
    props = TEMPLATE.resources[name].get("Properties", {})
    sqs = aws.client("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=local_stack.resources[name], AttributeNames=["All"])["Attributes"]
    for key in ("VisibilityTimeout", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds"):
        if key in props:
            assert attributes[key] == str(props[key])
    if "RedrivePolicy" in props:
        # The policy names the dead-letter queue by the ARN moto gave it.
        dlq = props["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=local_stack.resources[dlq], AttributeNames=["QueueArn"])
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == dlq_arn["Attributes"]["QueueArn"]
        assert int(redrive["maxReceiveCount"]) == props["RedrivePolicy"]["maxReceiveCount"]


@pytest.mark.parametrize("bucket", of_type(BUCKET))
def test_bucket_lifecycle_and_access_are_the_templates(local_stack, aws, bucket):
    props = Resolver(TEMPLATE).resolve(TEMPLATE.resources[bucket]["Properties"])
    s3 = aws.client("s3")
    name = local_stack.resources[bucket]
    rules = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    assert [r["ID"] for r in rules] == [r["Id"] for r in props["LifecycleConfiguration"]["Rules"]]
    block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    assert block == props["PublicAccessBlockConfiguration"]
    encryption = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"][0]
    wanted = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert encryption["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == wanted["SSEAlgorithm"]


def test_functions_get_the_template_environment_with_local_names(local_stack):
    globals_env = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert set(local_stack.functions) == {
        rid for rid, r in TEMPLATE.resources.items() if r["Type"] == "AWS::Serverless::Function"
    }
    for logical, spec in local_stack.functions.items():
        assert spec.name == logical
        module = spec.handler.rpartition(".")[0]
        assert (spec.code_uri / f"{module}.py").is_file()
        for variable, value in globals_env.items():
            if isinstance(value, dict) and value.get("Ref") in local_stack.resources:
                assert spec.environment[variable] == local_stack.resources[value["Ref"]]
        # in-process functions are quiet unless asked otherwise
        assert spec.environment["POWERTOOLS_METRICS_DISABLED"] == "true"
    # the defaults (no stack running) name the same resources, queue URLs aside
    plain = function_specs(TEMPLATE)
    assert plain.keys() == local_stack.functions.keys()


def test_seed_demo_is_idempotent(store: Store):
    env = {"DEMO_DOMAIN": "seed.test", "DEMO_USER": "Demo"}
    # WHEN the demo account is seeded twice
    first = seed_demo(store, env)
    second = seed_demo(store, env)
    # THEN the first run made it with a generated password, the second left it alone
    assert first.created and first.address == "demo@seed.test" and first.password
    assert not second.created and second.password is None
    assert store.accounts.authenticate("demo@seed.test", first.password) == "demo@seed.test"
    assert store.mailboxes.get("demo@seed.test", "INBOX").name == "INBOX"


# -- python -m devstack -------------------------------------------------------------

LISTENER_PORTS = ("SMTP_PORT", "SUBMISSION_PORT", "SUBMISSIONS_PORT", "IMAP_PORT", "IMAPS_PORT", "POP3_PORT", "POP3S_PORT")
READY = "Press Ctrl-C to stop."


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def clean_environment(local_stack: StackInfo, **extra: str) -> dict[str, str]:
    """This process's environment without the session's local stack in it."""
    ours = set(local_stack.process_environment) | {"MAIL_STACK", "MAIL_STACK_FILE"}
    env = {name: value for name, value in os.environ.items() if name not in ours}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


class Output:
    """A subprocess's stdout, read line by line in a thread."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return "".join(self.seen)
        raise AssertionError(f"no {text!r} within {timeout}s; got:\n{''.join(self.seen)}")


def mailctl(*args: str, cwd: Path, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailctl", *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
        timeout=60,
    )


def test_make_run_serves_and_mailctl_administers_it(local_stack: StackInfo, tmp_path: Path):
    # GIVEN `python -m devstack` on free ports, in a directory of its own
    moto_port, *ports = free_ports(1 + len(LISTENER_PORTS))
    listeners = dict(zip(LISTENER_PORTS, map(str, ports), strict=True))
    env = clean_environment(local_stack, MOTO_PORT=str(moto_port), DEMO_PASSWORD="demo-secret", DEMO_DOMAIN="run.test", **listeners)
    run_dir, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run_dir.mkdir(), elsewhere.mkdir()
    with (tmp_path / "stderr.log").open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devstack"], cwd=run_dir, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        try:
            banner = Output(proc.stdout).wait_for(READY, timeout=90)
            # THEN the banner names the endpoint, the listeners and the demo account
            assert f"http://127.0.0.1:{moto_port}" in banner
            assert f"127.0.0.1:{listeners['IMAP_PORT']}" in banner
            assert "demo@run.test" in banner and "demo-secret" in banner
            stack_file = run_dir / ".local" / "stack.json"
            assert json.loads(stack_file.read_text())["endpoint"] == f"http://127.0.0.1:{moto_port}"

            # WHEN mailctl, in another process, adds a user (it finds .local/stack.json)
            added = mailctl("user", "add", "alice@run.test", "--password-stdin", cwd=run_dir, env=env, stdin="s3cret\n")
            assert added.returncode == 0, added.stderr
            assert "s3cret" not in added.stdout + added.stderr
            # THEN mailctl from elsewhere, given the stack file, sees it next to the demo user
            listed = mailctl("user", "list", "run.test", cwd=elsewhere, env={**env, "MAIL_STACK_FILE": str(stack_file)})
            assert listed.returncode == 0, listed.stderr
            assert listed.stdout.splitlines() == ["alice@run.test", "demo@run.test"]

            # AND the gateway greets on its IMAP port (RFC 3501 §7.1: an untagged greeting)
            with socket.create_connection(("127.0.0.1", int(listeners["IMAP_PORT"])), timeout=10) as imap:
                assert imap.recv(512).startswith(b"* ")
        finally:
            # WHEN it is interrupted (Ctrl-C)
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
    # THEN it stops cleanly, and takes its stack file with it
    log = (tmp_path / "stderr.log").read_text()
    assert code == 0, log
    assert "Traceback" not in log
    assert not (run_dir / ".local" / "stack.json").exists()


def test_sqs_event_sources_come_from_the_template():
    from devstack.eventsource import SqsMapping, sqs_mappings

    assert sqs_mappings(TEMPLATE) == [SqsMapping("RelayFunction", "OutboundQueue", 10)]
