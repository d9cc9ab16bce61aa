"""``python -m gateway``: the container's entry point in the cloud (Fargate).

Functions are called by their deployed names (``AUTH_FUNCTION`` ...) with boto3; the TLS
certificate and key come from files, or from the Secrets Manager secret ``TLS_SECRET_ARN``
(a JSON object with ``certificate`` and ``private_key`` PEM strings), read again every
``TLS_SECRET_REFRESH_SECONDS`` (gateway/secret_tls.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from dataclasses import replace
from pathlib import Path

import boto3

from gateway.config import GatewayConfig
from gateway.functions import FunctionClient, LambdaTransport
from gateway.secret_tls import SecretCertificate
from gateway.server import Gateway, drain_seconds


async def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # botocore's DEBUG log holds request bodies, and a Lambda invoke's holds the password
    # (Authenticate): its AWS libraries never log below INFO, whatever LOG_LEVEL says.
    for name in ("botocore", "boto3", "urllib3"):
        logging.getLogger(name).setLevel(max(logging.getLogger().level, logging.INFO))
    config = GatewayConfig.from_env()
    secret: SecretCertificate | None = None
    if os.environ.get("TLS_SECRET_ARN") and not config.tls_cert_file:
        secret = SecretCertificate(
            boto3.client("secretsmanager"), os.environ["TLS_SECRET_ARN"], Path(tempfile.mkdtemp(prefix="tls-"))
        )
        secret.fetch()
        config = replace(config, tls_cert_file=str(secret.cert_file), tls_key_file=str(secret.key_file))
    gateway = Gateway(config, FunctionClient(LambdaTransport(boto3.client("lambda"), config.function_names)))
    await gateway.start()
    refresh = None
    if secret is not None and config.tls_secret_refresh_seconds > 0:
        refresh = asyncio.create_task(secret.refresh(config.tls_secret_refresh_seconds))
    try:
        await serve_until_signalled(gateway, drain_seconds())
    finally:
        if refresh is not None:
            refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresh


async def serve_until_signalled(gateway: Gateway, drain: float) -> None:
    """Serve until SIGTERM (ECS stopping the task) or SIGINT, then drain for up to
    ``drain`` seconds (``GATEWAY_DRAIN_SECONDS``). A second signal during the drain
    gets the default action: the process ends at once."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    await gateway.drain(drain)


if __name__ == "__main__":
    asyncio.run(main())
