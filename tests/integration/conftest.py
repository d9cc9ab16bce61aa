"""Fixtures for tests on the emulated AWS: users made fresh for each test."""

from __future__ import annotations

import secrets

import pytest
from mailcore.store import Store


def new_user(store: Store, domain: str, password: str = "correct horse") -> str:
    return store.add_user(f"u{secrets.token_hex(4)}@{domain}", password)


@pytest.fixture
def user(store: Store, domain: str) -> str:
    """A new user with INBOX and the special-use mailboxes; password ``correct horse``."""
    return new_user(store, domain)


# -- a running gateway over the emulated AWS ---------------------------------------------

import asyncio  # noqa: E402
import threading  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from gateway.config import LISTENERS, GatewayConfig  # noqa: E402
from gateway.functions import FunctionClient, InProcessTransport  # noqa: E402
from gateway.server import Gateway  # noqa: E402


@pytest.fixture(scope="session")
def function_transport(local_stack) -> InProcessTransport:
    """The functions of template.yaml, called in-process as Lambda would call them."""
    return InProcessTransport(local_stack.functions)


@dataclass
class RunningGateway:
    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    cert_file: Path

    @property
    def listening(self) -> dict[str, tuple[str, int]]:
        return self.gateway.listening

    def address(self, listener: str) -> tuple[str, int]:
        return self.gateway.listening[listener]


@pytest.fixture(scope="session")
def gateway(local_stack, function_transport, tmp_path_factory) -> Iterator[RunningGateway]:
    """Every listener of the gateway on a free loopback port, in a thread of its own."""
    tls_dir = tmp_path_factory.mktemp("tls")
    config = GatewayConfig(
        bind="127.0.0.1",
        ports={name: 0 for name in LISTENERS},
        hostname="mx.test.example",
        mail_bucket=local_stack.resources["MailBucket"],
    )
    gw = Gateway(config, FunctionClient(function_transport), tls_dir=tls_dir)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(gw.start(), loop).result(timeout=30)
    yield RunningGateway(gw, loop, tls_dir / "gateway-cert.pem")
    asyncio.run_coroutine_threadsafe(gw.stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
