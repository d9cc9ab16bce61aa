"""The gateway's function client: both transports, and the failures that must become
temporary ones (SMTP 451, IMAP NO [UNAVAILABLE], POP3 -ERR [SYS/TEMP])."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import Stubber
from mailcore.contracts import Authenticate, Resolve

from gateway.functions import MAX_PAYLOAD, FunctionClient, InProcessTransport, LambdaTransport, TemporaryFailure


def _payload(obj: object) -> StreamingBody:
    raw = json.dumps(obj).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


@pytest.fixture
def lambda_client():
    return boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_lambda_transport_returns_the_functions_result(lambda_client):
    # GIVEN a deployed AuthFunction that answers
    transport = LambdaTransport(lambda_client, {"AuthFunction": "stack-AuthFunction-abc"})
    with Stubber(lambda_client) as stub:
        stub.add_response(
            "invoke",
            {"StatusCode": 200, "Payload": _payload({"ok": True, "user": "bob@example.com"})},
            {
                "FunctionName": "stack-AuthFunction-abc",
                "InvocationType": "RequestResponse",
                "Payload": json.dumps(Authenticate("bob@example.com", "pw").to_event()).encode(),
            },
        )
        # WHEN the gateway calls it
        result = transport.invoke("AuthFunction", Authenticate("bob@example.com", "pw").to_event())
    # THEN it gets the function's JSON
    assert result == {"ok": True, "user": "bob@example.com"}


@pytest.mark.parametrize(
    "error_code",
    ["TooManyRequestsException", "ServiceException", "ResourceNotReadyException", "EC2ThrottledException"],
)
def test_lambda_service_errors_are_temporary(lambda_client, error_code):
    transport = LambdaTransport(lambda_client, {"IngestFunction": "ingest"})
    with Stubber(lambda_client) as stub:
        stub.add_client_error("invoke", service_error_code=error_code, http_status_code=429)
        with pytest.raises(TemporaryFailure) as caught:
            transport.invoke("IngestFunction", Resolve("a@b.example").to_event())
    assert error_code in str(caught.value)
    assert caught.value.correlation_id


def test_function_error_is_temporary_and_hides_the_traceback(lambda_client):
    transport = LambdaTransport(lambda_client, {"IngestFunction": "ingest"})
    with Stubber(lambda_client) as stub:
        stub.add_response(
            "invoke",
            {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": _payload({"errorMessage": "boom", "stackTrace": ["..."]}),
            },
        )
        with pytest.raises(TemporaryFailure) as caught:
            transport.invoke("IngestFunction", Resolve("a@b.example").to_event())
    assert "boom" not in str(caught.value)


def test_timeout_is_temporary(lambda_client, monkeypatch):
    transport = LambdaTransport(lambda_client, {"IngestFunction": "ingest"})

    def time_out(**_):
        raise ReadTimeoutError(endpoint_url="https://lambda.example")

    monkeypatch.setattr(lambda_client, "invoke", time_out)
    with pytest.raises(TemporaryFailure):
        transport.invoke("IngestFunction", Resolve("a@b.example").to_event())


def test_reply_outside_the_contract_is_temporary(lambda_client):
    transport = LambdaTransport(lambda_client, {"IngestFunction": "ingest"})
    with Stubber(lambda_client) as stub:
        stub.add_response("invoke", {"StatusCode": 200, "Payload": _payload(["not", "an", "object"])})
        with pytest.raises(TemporaryFailure):
            transport.invoke("IngestFunction", Resolve("a@b.example").to_event())


def test_oversized_payload_is_refused_before_sending(lambda_client):
    transport = LambdaTransport(lambda_client, {"AuthFunction": "auth"})
    with Stubber(lambda_client), pytest.raises(TemporaryFailure):  # no response queued: nothing may be sent
        transport.invoke("AuthFunction", {"op": "authenticate", "username": "x" * MAX_PAYLOAD, "password": ""})


@dataclass(frozen=True)
class Spec:
    name: str
    code_uri: Path
    handler: str
    environment: dict[str, str] = field(default_factory=dict)


def test_in_process_transport_calls_the_handler_like_lambda(tmp_path):
    # GIVEN a handler that echoes what it was given
    (tmp_path / "app.py").write_text(
        "def lambda_handler(event, context):\n"
        "    return {'ok': True, 'event': event, 'name': context.function_name,\n"
        "            'remaining': context.get_remaining_time_in_millis() > 0}\n"
    )
    transport = InProcessTransport({"EchoFunction": Spec("EchoFunction", tmp_path, "app.lambda_handler")})
    # WHEN it is invoked through the client
    import asyncio

    result = asyncio.run(FunctionClient(transport).call("EchoFunction", Resolve("a@b.example")))
    # THEN the event arrived JSON round-tripped, with a Lambda context
    assert result == {
        "ok": True,
        "event": {"op": "resolve", "recipient": "a@b.example"},
        "name": "EchoFunction",
        "remaining": True,
    }


def test_in_process_exception_becomes_temporary_failure(tmp_path):
    (tmp_path / "app.py").write_text("def lambda_handler(event, context):\n    raise RuntimeError('secret detail')\n")
    transport = InProcessTransport({"BadFunction": Spec("BadFunction", tmp_path, "app.lambda_handler")})
    with pytest.raises(TemporaryFailure) as caught:
        transport.invoke("BadFunction", {"op": "x"})
    assert "secret detail" not in str(caught.value)


def test_functions_must_agree_on_shared_environment(tmp_path):
    specs = {
        "A": Spec("A", tmp_path, "app.lambda_handler", {"TABLE": "one"}),
        "B": Spec("B", tmp_path, "app.lambda_handler", {"TABLE": "two"}),
    }
    with pytest.raises(ValueError, match="TABLE"):
        InProcessTransport(specs)
