"""One SMTP session for many transactions (RFC 5321 §3.3): the relay's client keeps a
connection per server address for the records of one batch (mailcore.smtpclient.Sessions).

A real SMTP server (aiosmtpd, STARTTLS offered) on a loopback port of its own notes which
connection each message came over; a script makes it close a connection or answer 421.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from mailcore.mx import MxHost, MxResolver, MxResult, make_resolver
from mailcore.smtpclient import ClientConfig, Envelope, Sessions, deliver

from tests.loopback import free_port, tls_context

ADDRESS = "127.0.0.26"


@dataclass
class Server:
    """Which connection (by its peer port) each message came over; what to do after DATA."""

    messages: list[tuple[int, bool]] = field(default_factory=list)  # (client port, over TLS)
    close_after_data: bool = False
    busy_after: int = 0  # answer 421 to MAIL after this many messages on one connection (0: never)
    port: int = 0
    closed: threading.Event = field(default_factory=threading.Event)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        done = sum(1 for peer, _ in self.messages if peer == session.peer[1])
        if self.busy_after and done >= self.busy_after:
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.7.0 too many messages on one connection"
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((session.peer[1], session.ssl is not None))
        if self.close_after_data:  # the TCP connection itself, under the TLS layer, once the reply is out
            tcp = server._original_transport or server.transport
            asyncio.get_running_loop().call_later(0.05, lambda: (tcp.close(), self.closed.set()))
        return "250 2.0.0 OK queued"

    @property
    def connections(self) -> int:
        return len({peer for peer, _ in self.messages})


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    handler = Server(port=free_port(ADDRESS))
    controller = Controller(
        handler, hostname=ADDRESS, port=handler.port, server_hostname="mx.kept.test", tls_context=tls_context(tmp_path)
    )
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


def relay_to(server: Server, count: int, sessions: Sessions | None, host: str = "mx{n}.kept.test") -> list[str]:
    """``count`` messages to the server (each under its own MX host name); their statuses."""
    resolver = MxResolver(make_resolver("127.0.0.1:9"))  # never asked: the hosts come with addresses
    config = ClientConfig(hostname="relay.ours.test", port=server.port)
    statuses = []
    for n in range(count):
        mx = MxResult(f"d{n}.test", hosts=(MxHost(10, host.format(n=n), (ADDRESS,)),))
        envelope = Envelope("a@ours.test", [f"r{n}@d{n}.test"], b"Subject: kept\r\n\r\nbody\r\n")
        attempt = deliver(envelope, mx, resolver, config, sessions)
        statuses += [r.status for r in attempt.results]
    return statuses


def test_one_connection_carries_the_batch_over_tls(server):
    # GIVEN the relay keeps connections for a batch
    sessions = Sessions()
    # WHEN five messages go to five domains whose MX hosts share one address
    statuses = relay_to(server, 5, sessions)
    sessions.close()
    # THEN all were delivered, over one connection, encrypted once (RFC 5321 §3.3)
    assert statuses == ["2.0.0"] * 5
    assert len(server.messages) == 5 and server.connections == 1
    assert all(tls for _, tls in server.messages)


def test_without_kept_sessions_each_message_has_its_own_connection(server):
    assert relay_to(server, 3, None) == ["2.0.0"] * 3
    assert server.connections == 3


def test_a_kept_connection_the_server_closed_is_replaced(server):
    # GIVEN a server that closes each connection after one message
    server.close_after_data = True
    sessions = Sessions()
    # WHEN three messages follow one another, each after the server closed the last connection
    statuses = []
    for _ in range(3):
        statuses += relay_to(server, 1, sessions)
        assert server.closed.wait(5)
        server.closed.clear()
    sessions.close()
    # THEN none is lost or deferred: each stale connection was replaced by a new one
    assert statuses == ["2.0.0"] * 3
    assert server.connections == 3


def test_421_to_mail_on_a_kept_connection_means_a_new_one(server):
    # GIVEN a server that takes two messages per connection, then answers MAIL with 421
    server.busy_after = 2
    sessions = Sessions()
    statuses = relay_to(server, 5, sessions)
    sessions.close()
    # THEN every message was delivered, two per connection (RFC 5321 §3.8)
    assert statuses == ["2.0.0"] * 5
    assert server.connections == 3
