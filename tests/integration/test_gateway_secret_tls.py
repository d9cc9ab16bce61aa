"""The certificate from a Secrets Manager secret (``TLS_SECRET_ARN``, gateway/secret_tls.py):
a rotated secret reaches new connections without a restart; a broken one changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3
from mailcore.accounting import count_requests
from mailcore.aws import Clients

from gateway.config import GatewayConfig
from gateway.functions import FunctionClient
from gateway.secret_tls import SecretCertificate
from gateway.server import Gateway
from gateway.tls import self_signed

HOST = "mx.secret.example"


def pair(directory: Path) -> tuple[dict[str, str], str]:
    """A self-signed certificate as the secret holds it, and its SHA-256 fingerprint."""
    cert, key = self_signed(directory, HOST)
    pem = cert.read_text()
    return {"certificate": pem, "private_key": key.read_text()}, hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def served_fingerprint(address: tuple[str, int]) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(address, timeout=10) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).hexdigest()


def eventually(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_rotated_secret_reaches_new_connections_without_a_restart(local_stack, function_transport, tmp_path, caplog):
    # GIVEN a secret holding certificate A, written to the files the gateway serves
    manager = boto3.client("secretsmanager")
    first, first_print = pair(tmp_path / "a")
    arn = manager.create_secret(Name=f"tls-{secrets.token_hex(4)}", SecretString=json.dumps(first))["ARN"]
    (tmp_path / "files").mkdir()
    secret = SecretCertificate(Clients().get("secretsmanager"), arn, tmp_path / "files")
    assert secret.fetch()
    assert oct(secret.key_file.stat().st_mode & 0o777) == "0o600"
    config = GatewayConfig(
        ports={"imaps": 0},
        hostname=HOST,
        mail_bucket=local_stack.resources["MailBucket"],
        tls_cert_file=str(secret.cert_file),
        tls_key_file=str(secret.key_file),
        tls_reload_seconds=0.05,
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway-secret-tls", daemon=True)
    thread.start()
    gateway = Gateway(config, FunctionClient(function_transport), services={"aws": Clients()})
    asyncio.run_coroutine_threadsafe(gateway.start(), loop).result(timeout=30)
    refresh = asyncio.run_coroutine_threadsafe(secret.refresh(0.05), loop)
    address = gateway.listening["imaps"]
    try:
        assert served_fingerprint(address) == first_print
        # WHEN the secret is rotated to certificate B
        second, second_print = pair(tmp_path / "b")
        manager.put_secret_value(SecretId=arn, SecretString=json.dumps(second))
        # THEN new connections get B, with no restart
        assert eventually(lambda: served_fingerprint(address) == second_print)
        # AND a version that is not a certificate and key is logged, and B stays
        with caplog.at_level(logging.ERROR, logger="gateway.secret_tls"):
            manager.put_secret_value(SecretId=arn, SecretString=json.dumps({"certificate": "no key"}))
            assert eventually(lambda: "not read, the files stay: KeyError" in caplog.text)
        assert served_fingerprint(address) == second_print
    finally:
        refresh.cancel()
        asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def test_an_unchanged_secret_costs_one_read_and_writes_nothing(local_stack, tmp_path):
    first, _ = pair(tmp_path / "a")
    arn = boto3.client("secretsmanager").create_secret(
        Name=f"tls-{secrets.token_hex(4)}", SecretString=json.dumps(first)
    )["ARN"]
    secret = SecretCertificate(Clients().get("secretsmanager"), arn, tmp_path)
    assert secret.fetch()
    stamp = secret.cert_file.stat().st_ino, secret.key_file.stat().st_ino
    with count_requests() as counter:
        assert not secret.fetch()
    assert counter.snapshot() == {"secrets-manager.GetSecretValue": 1}  # botocore names it so
    assert (secret.cert_file.stat().st_ino, secret.key_file.stat().st_ino) == stamp

