"""Fixtures of the world outside, on loopback (a pytest plugin: ``pytest_plugins =
["tests.outbound"]`` in a test module).

- ``dns_server``: :class:`tests.dnsserver.DnsServer` with an empty zone; each test adds
  the records of its own domains (session-wide, a free port on 127.0.0.1).
- ``remote_mx``: :class:`tests.loopback.RemoteMx`, real SMTP servers as remote MXs.
- ``relay_env``: the relay pointed at them (``RELAY_DNS_SERVER``, ``RELAY_SMTP_PORT``),
  retries due at once. Every test that runs the relay needs it: without it the relay
  would ask the system's DNS.
- ``pump``: :class:`tests.loopback.QueuePump` on the session's OutboundQueue.
- ``relay_service``: the :class:`mailcore.relay.RelayService` that the in-process
  RelayFunction keeps (its AWS clients), for tests that hook its requests.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.dnsserver import DnsServer
from tests.loopback import BUSY, SINKS, BusyServer, QueuePump, RemoteMx, Sink, free_port, tls_context


@pytest.fixture(scope="session")
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture(scope="session")
def remote_mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteMx]:
    """127.0.0.21 offers STARTTLS (a self-signed certificate), 127.0.0.22 plain text only."""
    port = free_port(SINKS[0])
    tls = tls_context(tmp_path_factory.mktemp("mx-tls"))
    sinks = {address: Sink(address) for address in SINKS}
    controllers = []
    for address, sink in sinks.items():
        kwargs: dict[str, Any] = {"tls_context": tls} if address == SINKS[0] else {}
        controller = Controller(
            sink, hostname=address, port=port, server_hostname=f"mx-{address}", enable_SMTPUTF8=True, **kwargs
        )
        controller.start()
        controllers.append(controller)
    busy = BusyServer(BUSY, port)
    try:
        yield RemoteMx(port, sinks, busy)
    finally:
        busy.stop()
        for controller in controllers:
            controller.stop()


@pytest.fixture
def relay_env(monkeypatch: pytest.MonkeyPatch, dns_server: DnsServer, remote_mx: RemoteMx) -> RemoteMx:
    """The relay asks the test DNS server and connects to the test MXs' port; retries are due at once."""
    monkeypatch.setenv("RELAY_DNS_SERVER", dns_server.address)
    monkeypatch.setenv("RELAY_SMTP_PORT", str(remote_mx.port))
    monkeypatch.setenv("RELAY_RETRY_MIN_SECONDS", "0")
    monkeypatch.setenv("RELAY_RETRY_MAX_SECONDS", "0")
    remote_mx.reset()
    return remote_mx


@pytest.fixture
def pump(local_stack: Any, function_transport: Any, relay_env: RemoteMx) -> QueuePump:
    """Drives the RelayFunction from the session's OutboundQueue (drained first), with
    the relay pointed at the loopback world (``relay_env``)."""
    queue = QueuePump(local_stack.resources["OutboundQueue"], lambda e: function_transport.invoke("RelayFunction", e))
    queue.run()
    return queue


@pytest.fixture
def relay_service(function_transport: Any) -> Any:
    """The RelayFunction container's RelayService (the module global its handler uses)."""
    handler = function_transport._handler("RelayFunction")
    return inspect.unwrap(handler).__globals__["service"]
