"""Where mailctl finds the mail system's tables and bucket.

In this order:

1. ``--stack NAME`` on the command line: the Outputs of that CloudFormation stack
   (what ``sam deploy`` created);
2. the functions' own environment variables (``ACCOUNTS_TABLE``, ``MAILBOXES_TABLE``,
   ``MESSAGES_TABLE``, ``MAIL_BUCKET``, ...), as template.yaml gives them to each function;
3. ``$MAIL_STACK``: a CloudFormation stack name, as with ``--stack``;
4. the stack file of a running local stack (``python -m devstack``): ``$MAIL_STACK_FILE``,
   else ``.local/stack.json`` in this directory or one above it. It also names the
   endpoint of the emulated AWS.

The code is the same for AWS and for the local stack: only where the endpoint comes from
differs (``AWS_ENDPOINT_URL``, botocore's own setting, or the stack file).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from mailcore.aws import Clients
from mailcore.settings import Settings

#: What Settings.from_env needs at least.
RESOURCE_VARIABLES = ("ACCOUNTS_TABLE", "MAILBOXES_TABLE", "MESSAGES_TABLE", "MAIL_BUCKET")
#: template.yaml Outputs -> the function environment variable holding the same name.
STACK_OUTPUTS = {
    "AccountsTableName": "ACCOUNTS_TABLE",
    "MailboxesTableName": "MAILBOXES_TABLE",
    "MessagesTableName": "MESSAGES_TABLE",
    "MailBucketName": "MAIL_BUCKET",
    "MailEventBusName": "EVENT_BUS_NAME",
    "OutboundQueueUrl": "OUTBOUND_QUEUE_URL",
    "DkimParameterPath": "DKIM_PARAMETER_PATH",
}
STACK_FILE = Path(".local") / "stack.json"


class StackNotFound(Exception):
    """No mail system to talk to: the message says where mailctl looked."""


@dataclass
class Target:
    """The resources to administer and the clients to reach them."""

    settings: Settings
    clients: Clients
    #: Where they were found, for error messages ("stack file /x/.local/stack.json").
    source: str


class EndpointSession:
    """A boto3 Session whose clients all talk to one endpoint (the local stack's)."""

    def __init__(self, session: Any, endpoint_url: str) -> None:
        self.session = session
        self.endpoint_url = endpoint_url

    def client(self, service: str, **kwargs: Any) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url, **kwargs)


def locate(stack: str | None, env: Mapping[str, str], cwd: Path | None = None) -> Target:
    if stack:
        return from_cloudformation(stack)
    if any(env.get(name) for name in RESOURCE_VARIABLES):
        return Target(Settings.from_env(dict(env)), Clients(), "environment")
    if env.get("MAIL_STACK"):
        return from_cloudformation(env["MAIL_STACK"])
    path = find_stack_file(env, cwd or Path.cwd())
    if path is None:
        raise StackNotFound(
            "no mail system found: give --stack NAME (or MAIL_STACK), set ACCOUNTS_TABLE, MAILBOXES_TABLE, "
            f"MESSAGES_TABLE and MAIL_BUCKET, or start the local stack (make run) and run mailctl where {STACK_FILE} is"
        )
    return from_stack_file(path)


def from_cloudformation(stack: str) -> Target:
    """The Outputs of a deployed stack (one DescribeStacks)."""
    described = boto3.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    missing = [key for key, var in STACK_OUTPUTS.items() if var in RESOURCE_VARIABLES and key not in outputs]
    if missing:
        raise StackNotFound(f"stack {stack} has no output {', '.join(missing)}: is it a mail stack?")
    env = {var: outputs[key] for key, var in STACK_OUTPUTS.items() if key in outputs}
    return Target(Settings.from_env(env), Clients(), f"stack {stack}")


def find_stack_file(env: Mapping[str, str], cwd: Path) -> Path | None:
    if env.get("MAIL_STACK_FILE"):
        path = Path(env["MAIL_STACK_FILE"])
        if not path.is_file():
            raise StackNotFound(f"no local stack: {path} does not exist (is `make run` running?)")
        return path
    for directory in (cwd, *cwd.parents):
        if (directory / STACK_FILE).is_file():
            return directory / STACK_FILE
    return None


def from_stack_file(path: Path) -> Target:
    """The local stack's description, written by devstack when it started."""
    try:
        described = json.loads(path.read_text(encoding="utf-8"))
        endpoint, region = described["endpoint"], described["region"]
        environment = described["environment"]
    except (OSError, ValueError, KeyError) as error:
        raise StackNotFound(f"unreadable stack file {path}: {error}") from None
    session = boto3.session.Session(region_name=region, **described.get("credentials", {}))
    clients = Clients(session=EndpointSession(session, endpoint))
    return Target(Settings.from_env(environment), clients, f"local stack at {endpoint} (stack file {path})")
