"""The local stack: moto's server in a thread, holding the resources of template.yaml.

``LocalStack(...).start()`` starts ``moto.server.ThreadedMotoServer`` on loopback,
creates the template's S3, DynamoDB, SQS and EventBridge resources on it, and returns a
:class:`StackInfo`: the endpoint, the resource names, the functions as the in-process
transport loads them, and the environment a process needs to use all of it. It also
writes a stack file (``.local/stack.json``) so that ``mailctl`` in another shell finds
the running stack. Nothing here changes ``os.environ``: callers apply
:attr:`StackInfo.process_environment` themselves (``python -m devstack`` does; tests
use ``monkeypatch``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import boto3
from mailcore.errors import AlreadyExists
from mailcore.store import Store
from moto.server import ThreadedMotoServer

from devstack import moto_tuning
from devstack.template import (
    FunctionSpec,
    Resolver,
    create_resources,
    function_specs,
    load_template,
    shared_environment,
)

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"
DEFAULT_MOTO_PORT = 4566
DEFAULT_REGION = "us-east-1"
#: moto accepts any credentials; these are the ones its documentation uses.
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
#: In-process functions are quiet unless the caller's environment says otherwise:
#: no EMF metrics on stdout, no X-Ray, warnings only.
LOCAL_FUNCTION_DEFAULTS = {
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "LOG_LEVEL": "WARNING",
}


def stack_file_path(env: Mapping[str, str] | None = None) -> Path:
    """Where the running local stack describes itself: ``$MAIL_STACK_FILE`` or ``./.local/stack.json``."""
    env = os.environ if env is None else env
    return Path(env.get("MAIL_STACK_FILE") or Path.cwd() / ".local" / "stack.json")


def local_function_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    env = os.environ if env is None else env
    return {key: env.get(key, default) for key, default in LOCAL_FUNCTION_DEFAULTS.items()}


class EndpointSession:
    """A boto3 Session whose clients all talk to one endpoint (the emulated AWS)."""

    def __init__(self, session: Any, endpoint_url: str) -> None:
        self.session = session
        self.endpoint_url = endpoint_url

    def client(self, service: str, **kwargs: Any) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint_url, **kwargs)


@dataclass(frozen=True)
class StackInfo:
    endpoint: str
    region: str
    #: logical ID -> physical name (a queue's URL), as created on the emulated AWS.
    resources: dict[str, str]
    #: logical ID -> what gateway.functions.InProcessTransport loads.
    functions: dict[str, FunctionSpec]
    #: The environment all functions share (template Globals, resolved, plus local defaults).
    environment: dict[str, str]
    stack_file: Path | None = None

    @property
    def aws_environment(self) -> dict[str, str]:
        """What makes boto3 talk to the emulated AWS (botocore reads ``AWS_ENDPOINT_URL`` itself)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": self.region, **LOCAL_CREDENTIALS}

    @property
    def process_environment(self) -> dict[str, str]:
        """Everything a process running the functions in-process needs in its environment."""
        return {**self.environment, **self.aws_environment}

    def describe(self) -> dict[str, Any]:
        """The stack file's content: enough for ``mailctl`` to find and use the stack."""
        return {
            "endpoint": self.endpoint,
            "region": self.region,
            "credentials": {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"},
            "resources": self.resources,
            "environment": self.environment,
            "pid": os.getpid(),
        }


def _check_port_free(host: str, port: int) -> None:
    """ThreadedMotoServer waits forever if its thread cannot bind: find that out first."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            probe.bind((host, port))
        except OSError as error:
            raise OSError(
                f"cannot listen on {host}:{port} for the emulated AWS ({error.strerror}); "
                "is another local stack running? Set MOTO_PORT to use another port."
            ) from error


@dataclass
class LocalStack:
    """moto on loopback with the resources of ``template``; use as a context manager or start/stop."""

    template: Path = DEFAULT_TEMPLATE
    host: str = "127.0.0.1"
    #: None: ``$MOTO_PORT`` or 4566. 0: any free port.
    port: int | None = None
    #: Where to describe the running stack for other processes; None writes nothing.
    stack_file: Path | None = None
    #: Template parameter values overriding the Defaults.
    parameters: Mapping[str, Any] = field(default_factory=dict)
    region: str = DEFAULT_REGION
    #: Added to every function's environment (default: :data:`LOCAL_FUNCTION_DEFAULTS`
    #: unless the caller's environment sets them).
    function_environment: Mapping[str, str] = field(default_factory=local_function_environment)
    info: StackInfo | None = field(default=None, init=False)
    _server: ThreadedMotoServer | None = field(default=None, init=False, repr=False)

    def start(self) -> StackInfo:
        port = int(os.environ.get("MOTO_PORT", DEFAULT_MOTO_PORT)) if self.port is None else self.port
        _check_port_free(self.host, port)
        # moto's server logs every request at INFO through werkzeug.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        moto_tuning.apply()
        self._server = ThreadedMotoServer(ip_address=self.host, port=port, verbose=False)
        self._server.start()
        host, bound = self._server.get_host_and_port()
        endpoint = f"http://{host}:{bound}"
        try:
            self.info = self._provision(endpoint)
        except BaseException:
            self.stop()
            raise
        log.info("emulated AWS at %s with %d resources", endpoint, len(self.info.resources))
        return self.info

    def _provision(self, endpoint: str) -> StackInfo:
        template = load_template(self.template)
        session = boto3.session.Session(
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=self.region,
        )
        resolver = Resolver(template, parameters=self.parameters, region=self.region, endpoint=endpoint)
        resources = create_resources(template, EndpointSession(session, endpoint), resolver)
        specs = {
            logical: replace(spec, environment={**spec.environment, **self.function_environment})
            for logical, spec in function_specs(template, resolver).items()
        }
        info = StackInfo(
            endpoint=endpoint,
            region=self.region,
            resources=resources,
            functions=specs,
            environment=shared_environment(specs.values()),
            stack_file=self.stack_file,
        )
        if self.stack_file is not None:
            self.stack_file.parent.mkdir(parents=True, exist_ok=True)
            self.stack_file.write_text(json.dumps(info.describe(), indent=2) + "\n", encoding="utf-8")
        return info

    def stop(self) -> None:
        if self.info is not None and self.info.stack_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.info.stack_file.unlink()
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.info = None

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- demo account ------------------------------------------------------------------


@dataclass(frozen=True)
class DemoAccount:
    address: str
    #: None when the user existed already (its password is not ours to know).
    password: str | None
    created: bool


def seed_demo(store: Store, env: Mapping[str, str] | None = None) -> DemoAccount:
    """The demo domain and user (``DEMO_DOMAIN``, ``DEMO_USER``, ``DEMO_PASSWORD``); existing ones are kept."""
    env = os.environ if env is None else env
    domain = env.get("DEMO_DOMAIN") or "example.test"
    address = f"{env.get('DEMO_USER') or 'demo'}@{domain}"
    password = env.get("DEMO_PASSWORD") or secrets.token_urlsafe(12)
    with contextlib.suppress(AlreadyExists):
        store.accounts.add_domain(domain)
    try:
        address = store.add_user(address, password)
    except AlreadyExists:
        return DemoAccount(address, None, created=False)
    return DemoAccount(address, password, created=True)
