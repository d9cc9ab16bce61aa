"""The client side of the function contracts: one interface, two transports.

``InProcessTransport`` (local runs and tests) imports each handler the way Lambda would,
from the CodeUri and Handler that template.yaml gives it, and calls it with the event
JSON round-tripped and a Lambda context. ``LambdaTransport`` (the cloud) calls
``lambda.invoke``. Either way a failure of the function, the service or the network is a
:class:`TemporaryFailure`, which each protocol answers with its "try again" reply
(SMTP 451 4.3.0, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP]).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import importlib.util
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from mailcore.contracts import Request

log = logging.getLogger(__name__)

#: A synchronous Lambda invoke takes at most 6 MB of payload each way.
MAX_PAYLOAD = 6 * 1024 * 1024


class TemporaryFailure(Exception):
    """The function could not answer now; ``correlation_id`` is in the logs."""

    def __init__(self, function: str, reason: str) -> None:
        self.correlation_id = uuid.uuid4().hex[:12]
        super().__init__(f"{function}: {reason} [{self.correlation_id}]")
        log.error("function %s failed: %s (correlation %s)", function, reason, self.correlation_id)


class Transport(Protocol):
    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]: ...


class FunctionSpecLike(Protocol):
    """What the in-process transport needs of a function declared in template.yaml."""

    @property
    def name(self) -> str: ...
    @property
    def code_uri(self) -> Path: ...
    @property
    def handler(self) -> str: ...
    @property
    def environment(self) -> Mapping[str, str]: ...


@dataclass
class LambdaContext:
    """What a handler can ask of its context (the attributes Powertools reads)."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int = 512
    timeout_ms: int = 30_000

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:local:000000000000:function:{self.function_name}"

    @property
    def function_version(self) -> str:
        return "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_ms


def _encode(function: str, event: dict[str, Any]) -> bytes:
    payload = json.dumps(event).encode()
    if len(payload) > MAX_PAYLOAD:
        raise TemporaryFailure(function, f"payload of {len(payload)} bytes exceeds the invoke limit")
    return payload


class InProcessTransport:
    """Calls the handlers in this process, as Lambda would call them."""

    def __init__(self, specs: Mapping[str, FunctionSpecLike]) -> None:
        self._specs = dict(specs)
        self._handlers: dict[str, Callable[[dict[str, Any], Any], Any]] = {}
        self._lock = threading.Lock()
        # All functions share the process environment, so they must agree on it.
        merged: dict[str, str] = {}
        for logical, spec in self._specs.items():
            for key, value in spec.environment.items():
                if merged.setdefault(key, value) != value:
                    raise ValueError(f"{logical}: environment {key} differs between functions")
        for key, value in merged.items():
            os.environ.setdefault(key, value)

    def _handler(self, function: str) -> Callable[[dict[str, Any], Any], Any]:
        with self._lock:
            if function not in self._handlers:
                spec = self._specs[function]
                module_name, _, attr = spec.handler.rpartition(".")
                path = Path(spec.code_uri) / f"{module_name.replace('.', '/')}.py"
                loader_spec = importlib.util.spec_from_file_location(f"function_{function}", path)
                if loader_spec is None or loader_spec.loader is None:
                    raise ImportError(path)
                module = importlib.util.module_from_spec(loader_spec)
                loader_spec.loader.exec_module(module)
                self._handlers[function] = getattr(module, attr)
            return self._handlers[function]

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        if function not in self._specs:
            raise TemporaryFailure(function, "no such function")
        context = LambdaContext(self._specs[function].name, uuid.uuid4().hex)
        try:
            result = self._handler(function)(json.loads(_encode(function, event)), context)
            return dict(json.loads(json.dumps(result)))
        except TemporaryFailure:
            raise
        except Exception as error:
            log.exception("in-process %s raised", function)
            raise TemporaryFailure(function, f"{type(error).__name__}") from error


class LambdaTransport:
    """Calls the deployed functions with ``lambda.invoke`` (RequestResponse)."""

    def __init__(self, client: Any, names: Mapping[str, str]) -> None:
        self._client = client
        self._names = dict(names)

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        name = self._names.get(function)
        if not name:
            raise TemporaryFailure(function, "no deployed name configured")
        try:
            reply = self._client.invoke(
                FunctionName=name, InvocationType="RequestResponse", Payload=_encode(function, event)
            )
            body = reply["Payload"].read()
        except ClientError as error:  # throttling (TooManyRequestsException), service errors
            raise TemporaryFailure(function, error.response.get("Error", {}).get("Code", "ClientError")) from error
        except BotoCoreError as error:  # timeouts, connection errors
            raise TemporaryFailure(function, type(error).__name__) from error
        if reply.get("FunctionError"):
            raise TemporaryFailure(function, f"function error {reply['FunctionError']}")
        try:
            result = json.loads(body)
        except ValueError as error:
            raise TemporaryFailure(function, "unreadable reply") from error
        if not isinstance(result, dict) or "ok" not in result:
            raise TemporaryFailure(function, "reply outside the contract")
        return result


class FunctionClient:
    """What the protocols call: ``await functions.call("AuthFunction", Authenticate(...))``.

    An invoke blocks a thread until the function answers, so calls run in a pool of
    their own: asyncio's default pool has min(32, CPUs + 4) threads (6 on two cores),
    which would cap the gateway at six calls in flight however many sessions wait, and
    which S3 staging and other blocking work share. ``max_workers`` (default
    ``FUNCTION_CLIENT_THREADS``, else 32: botocore's connection pool per client in
    mailcore.aws) bounds the calls in flight; more wait for a thread.
    """

    def __init__(self, transport: Transport, max_workers: int | None = None) -> None:
        self.transport = transport
        self.max_workers = max_workers or int(os.environ.get("FUNCTION_CLIENT_THREADS") or 32)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(self.max_workers, thread_name_prefix="function")
        return self._executor

    async def call(self, function: str, request: Request) -> dict[str, Any]:
        event = request.to_event()
        context = contextvars.copy_context()  # as asyncio.to_thread does
        call = functools.partial(context.run, self.transport.invoke, function, event)
        return await asyncio.get_running_loop().run_in_executor(self._pool(), call)

    def close(self) -> None:
        """Let the pool's threads end once their calls are done."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
