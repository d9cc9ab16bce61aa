"""``python -m gateway``: the container's entry point in the cloud (Fargate).

Functions are called by their deployed names (``AUTH_FUNCTION`` ...) with boto3; the TLS
certificate and key come from files, or from the Secrets Manager secret ``TLS_SECRET_ARN``
(a JSON object with ``certificate`` and ``private_key`` PEM strings).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import tempfile
from dataclasses import replace
from pathlib import Path

import boto3

from gateway.config import GatewayConfig
from gateway.functions import FunctionClient, LambdaTransport
from gateway.server import Gateway


def _certificate_from_secret(config: GatewayConfig, secret_arn: str) -> GatewayConfig:
    secret = json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"])
    directory = Path(tempfile.mkdtemp(prefix="tls-"))
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_text(secret["certificate"])
    key.write_text(secret["private_key"])
    key.chmod(0o600)
    return replace(config, tls_cert_file=str(cert), tls_key_file=str(key))


async def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    config = GatewayConfig.from_env()
    if os.environ.get("TLS_SECRET_ARN") and not config.tls_cert_file:
        config = _certificate_from_secret(config, os.environ["TLS_SECRET_ARN"])
    gateway = Gateway(config, FunctionClient(LambdaTransport(boto3.client("lambda"), config.function_names)))
    await gateway.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    await gateway.stop()


if __name__ == "__main__":
    asyncio.run(main())
