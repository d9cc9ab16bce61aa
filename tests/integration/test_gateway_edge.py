"""The gateway at the edge, over real sockets: the PROXY protocol on every listener (the
client's address reaches the Received field and the limits), connection limits per client,
in total and per IMAP user with each protocol's refusal, the TLS policy, and a certificate
replaced on disk taking effect without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import shutil
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from mailcore.aws import Clients

from gateway.config import IMPLICIT_TLS, LISTENERS, GatewayConfig
from gateway.connlimits import ConnectionLimits
from gateway.functions import FunctionClient
from gateway.proxy import SIGNATURE
from gateway.server import Gateway
from gateway.tls import ServerTls, self_signed

from .test_imap_support import PASSWORD
from .test_smtp import MESSAGE, Wire, inbox, split_trace

HOST = "mx.edge.example"
LIMITS = ConnectionLimits(total=8, per_client=3, per_user=2)
TRY_LATER = b"Too many connections, try again later"


def proxy_header(source: str, version: int = 2, port: int = 51000) -> bytes:
    """What the load balancer sends first: ``source`` connected to 198.51.100.1:25."""
    if version == 1:
        return f"PROXY TCP4 {source} 198.51.100.1 {port} 25\r\n".encode()
    block = ipaddress.ip_address(source).packed + ipaddress.ip_address("198.51.100.1").packed
    block += struct.pack("!HH", port, 25)
    return SIGNATURE + b"\x21\x11" + struct.pack("!H", len(block)) + block  # v2 PROXY, TCP over IPv4


def client_context(configure: Callable[[ssl.SSLContext], None] | None = None) -> ssl.SSLContext:
    """A client that takes any certificate: these tests look at the certificate, not trust it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if configure is not None:
        configure(context)
    return context


@dataclass
class Edge:
    gateway: Gateway
    tls_dir: Path

    def open(self, listener: str, source: str, *, version: int = 2, context: ssl.SSLContext | None = None) -> Wire:
        """A connection that starts with a PROXY header for ``source``; on an implicit-TLS
        listener, then the handshake."""
        wire = Wire(self.gateway.listening[listener])
        wire.send(proxy_header(source, version))
        if listener in IMPLICIT_TLS:
            wire.sock = (context or client_context()).wrap_socket(wire.sock)
        return wire

    def settle(self) -> None:
        """Wait until the connections of earlier tests are gone from the counts."""
        deadline = time.monotonic() + 10
        while self.gateway.connections.open and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.gateway.connections.open == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def edge(local_stack, function_transport, tmp_path_factory) -> Iterator[Edge]:
    """A gateway of its own: PROXY protocol on every listener, small connection limits,
    and its certificate files looked at every 50 ms."""
    tls_dir = tmp_path_factory.mktemp("tls-edge")
    config = GatewayConfig(
        bind="127.0.0.1",
        ports={name: 0 for name in LISTENERS},
        hostname=HOST,
        mail_bucket=local_stack.resources["MailBucket"],
        proxy_protocol=frozenset(LISTENERS),
        proxy_header_timeout=1.0,
        tls_reload_seconds=0.05,
        connection_limits=LIMITS,
        health_port=free_port(),
    )
    gw = Gateway(config, FunctionClient(function_transport), tls_dir=tls_dir, services={"aws": Clients()})
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway-edge", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(gw.start(), loop).result(timeout=30)
    yield Edge(gw, tls_dir)
    asyncio.run_coroutine_threadsafe(gw.stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def greeted(wire: Wire) -> bytes:
    line = wire.line()
    assert line.startswith((b"220 ", b"* OK", b"+OK")), line
    return line


# -- PROXY protocol ------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_received_field_names_the_address_from_the_header(edge, store, user, version):
    # GIVEN the load balancer's header for 203.0.113.7 WHEN that client delivers a message
    edge.settle()
    wire = edge.open("smtp", "203.0.113.7", version=version)
    greeted(wire)
    for command, expected in [
        (b"EHLO client.example", 250),
        (b"MAIL FROM:<alice@example.org>", 250),
        (f"RCPT TO:<{user}>".encode(), 250),
        (b"DATA", 354),
    ]:
        wire.send(command + b"\r\n")
        assert wire.code()[0] == expected, command
    wire.send(MESSAGE + b".\r\n")
    assert wire.code() == (250, "2.0.0")
    wire.close()
    # THEN the trace field names the client, not the balancer (RFC 5321 §4.4)
    (stored,) = inbox(store, user)
    assert split_trace(stored)[1].startswith(b"Received: from client.example ([203.0.113.7])\r\n")


def test_throttle_counts_the_address_from_the_header(edge, local_stack, user):
    # GIVEN the header for 198.51.100.77 WHEN that client fails a login (over TLS: it is
    # not on loopback, so no credentials in the clear)
    edge.settle()
    source = "198.51.100.77"
    imap = edge.open("imaps", source)
    greeted(imap)
    imap.send(f"a LOGIN {user} wrong-password\r\n".encode())
    assert imap.line().startswith(b"a NO [AUTHENTICATIONFAILED]")
    imap.close()
    # THEN the AuthFunction's failure counter is the client's, not the balancer's
    dynamodb, table = Clients().dynamodb, local_stack.resources["ThrottleTable"]
    key = {"pk": {"S": f"ADDR#{source}"}}
    try:
        item = dynamodb.get_item(TableName=table, Key=key)["Item"]
        assert item["failures"] == {"N": "1"}
        assert "Item" not in dynamodb.get_item(TableName=table, Key={"pk": {"S": "ADDR#127.0.0.1"}})
    finally:
        dynamodb.delete_item(TableName=table, Key=key)
        dynamodb.delete_item(TableName=table, Key={"pk": {"S": f"ACCT#{user}"}})


@pytest.mark.parametrize(
    ("listener", "first_octets"),
    [
        ("smtp", b"EHLO client.example\r\n"),  # a client that bypasses the balancer
        ("imap", b"a LOGIN someone secret\r\n"),
        ("smtp", b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 25\n"),  # bare LF
        ("pop3", SIGNATURE + b"\x11\x11\x00\x0c" + b"\x00" * 12),  # v2 with version 1
        ("imaps", b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + b"\x00" * 32),  # a ClientHello
        ("smtp", b""),  # silence: nothing within the header timeout
    ],
)
def test_connection_without_a_valid_header_is_dropped_unanswered(edge, listener, first_octets, caplog):
    wire = Wire(edge.gateway.listening[listener])
    with caplog.at_level(logging.WARNING, logger="gateway.server"):
        wire.send(first_octets)
        # no greeting, no reply: the connection is closed (proxy-protocol.txt §2.1)
        assert wire.sock.recv(100) == b""
        wire.close()
        deadline = time.monotonic() + 5
        while "dropped" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
    assert f"{listener} " in caplog.text and "dropped" in caplog.text


@pytest.mark.parametrize(("listener", "greeting"), [("imaps", b"* OK"), ("pop3s", b"+OK"), ("submissions", b"220 ")])
def test_implicit_tls_follows_the_header(edge, listener, greeting):
    wire = edge.open(listener, "203.0.113.8")
    assert wire.line().startswith(greeting)
    assert wire.sock.version() in ("TLSv1.2", "TLSv1.3")
    wire.close()


def test_implicit_tls_when_the_client_hello_arrives_with_the_header(edge):
    """The balancer sends the header and the client's first octets together: the
    ClientHello already read with the header must reach the TLS layer."""
    sock = socket.create_connection(edge.gateway.listening["imaps"], timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing)

    def step(operation: Callable[[], bytes | None]) -> bytes | None:
        while True:
            try:
                return operation()
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                assert data, "closed during the handshake"
                incoming.write(data)

    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    sock.sendall(proxy_header("203.0.113.9") + outgoing.read())  # one write, one segment
    step(tls.do_handshake)
    sock.sendall(outgoing.read())
    assert step(lambda: tls.read(1024)).startswith(b"* OK")
    sock.close()


def test_health_port_accepts_and_closes_without_a_header(edge):
    # the NLB's TCP health check: connect, and the gateway closes at once
    with socket.create_connection(("127.0.0.1", edge.gateway.config.health_port), timeout=10) as probe:
        assert probe.recv(10) == b""


# -- connection limits ---------------------------------------------------------------------


def refused(wire: Wire) -> bytes:
    """The one line a refused connection gets, after which it is closed."""
    line = wire.line()
    assert wire.closed()
    wire.close()
    return line


def still_working(wire: Wire, listener: str) -> None:
    """An open session answers (SMTP NOOP, IMAP NOOP, POP3 CAPA before login)."""
    command, ok = {"smtp": (b"NOOP", b"250 "), "imap": (b"n NOOP", b"n OK"), "pop3": (b"CAPA", b"+OK")}[listener]
    wire.send(command + b"\r\n")
    assert wire.line().startswith(ok)


def test_flood_from_one_address_is_refused_per_protocol_while_open_sessions_go_on(edge):
    edge.settle()
    flooder = "203.0.113.66"
    # GIVEN the client at its limit of three connections
    held = [edge.open("smtp", flooder) for _ in range(LIMITS.per_client)]
    for wire in held:
        greeted(wire)
    try:
        # WHEN it opens more, on any listener THEN each is refused with its protocol's reply
        assert refused(edge.open("smtp", flooder)) == b"421 4.7.0 " + HOST.encode() + b" " + TRY_LATER  # RFC 5321 §3.8
        assert refused(edge.open("imap", flooder)) == b"* BYE [UNAVAILABLE] " + TRY_LATER  # RFC 5530
        assert refused(edge.open("pop3", flooder, version=1)) == b"-ERR [SYS/TEMP] " + TRY_LATER  # RFC 3206
        assert refused(edge.open("imaps", flooder)) == b"* BYE [UNAVAILABLE] " + TRY_LATER  # in TLS
        # AND another client still gets in, and the flooder's open sessions still answer
        other = edge.open("smtp", "198.51.100.20")
        greeted(other)
        other.close()
        for wire in held:
            still_working(wire, "smtp")
        # AND once one of them ends, the client may connect again
        held.pop().close()
        deadline = time.monotonic() + 5
        while edge.gateway.connections.clients.get(flooder, 0) >= LIMITS.per_client and time.monotonic() < deadline:
            time.sleep(0.02)
        again = edge.open("smtp", flooder)
        greeted(again)
        again.close()
    finally:
        for wire in held:
            wire.close()


def test_flood_beyond_the_gateway_total_is_refused_while_open_sessions_go_on(edge):
    edge.settle()
    listeners = ["smtp", "imap", "pop3"] * 3
    held = [(edge.open(listener, f"192.0.2.{n}"), listener) for n, listener in enumerate(listeners[: LIMITS.total])]
    try:
        for wire, _ in held:
            greeted(wire)
        assert edge.gateway.connections.open == LIMITS.total
        # WHEN clients not seen before connect THEN the gateway is full for them
        assert refused(edge.open("smtp", "192.0.2.100")).startswith(b"421 4.7.0 ")
        assert refused(edge.open("imap", "192.0.2.101")) == b"* BYE [UNAVAILABLE] " + TRY_LATER
        assert refused(edge.open("pop3", "192.0.2.102")) == b"-ERR [SYS/TEMP] " + TRY_LATER
        # AND every session already open keeps working
        for wire, listener in held:
            still_working(wire, listener)
    finally:
        for wire, _ in held:
            wire.close()


def test_connections_awaiting_their_header_count_in_the_total(edge, monkeypatch):
    edge.settle()
    # GIVEN a header timeout long enough for the test, and the gateway's total reached by
    # connections that never send their PROXY header
    monkeypatch.setattr(edge.gateway, "config", replace(edge.gateway.config, proxy_header_timeout=30.0))
    silent = [Wire(edge.gateway.listening["smtp"]) for _ in range(LIMITS.total)]
    try:
        deadline = time.monotonic() + 10
        while edge.gateway.connections.awaiting < LIMITS.total and time.monotonic() < deadline:
            time.sleep(0.02)
        assert edge.gateway.connections.awaiting == LIMITS.total
        # WHEN a client with a valid header connects THEN it is dropped unanswered (§2.1;
        # its header unread, so the close may come as a reset)
        late = edge.open("smtp", "192.0.2.150")
        with contextlib.suppress(ConnectionResetError):
            assert late.sock.recv(100) == b""
        late.close()
        # AND once the silent ones are gone, the same client gets in
        for wire in silent[:2]:
            wire.close()
        while edge.gateway.connections.awaiting > LIMITS.total - 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        again = edge.open("smtp", "192.0.2.150")
        greeted(again)
        again.close()
    finally:
        for wire in silent:
            wire.close()


def login(wire: Wire, user: str) -> list[bytes]:
    wire.send(b'L LOGIN "' + user.encode() + b'" "' + PASSWORD.encode() + b'"\r\n')
    lines = [wire.line()]
    while not lines[-1].startswith(b"L "):
        lines.append(wire.line())
    return lines


def test_imap_sessions_per_user_are_limited(edge, user):
    edge.settle()
    # GIVEN the user logged in twice (the limit), from two addresses, over implicit TLS
    sessions = [edge.open("imaps", f"198.51.100.{n}") for n in (31, 32)]
    try:
        for wire in sessions:
            greeted(wire)
            assert login(wire, user)[-1].startswith(b"L OK")
        # WHEN a third session logs in THEN BYE [LIMIT] and the connection closes (RFC 5530 §3)
        third = edge.open("imaps", "198.51.100.33")
        greeted(third)
        reply = login(third, user)
        assert reply[0] == b"* BYE [LIMIT] Too many connections for this user"
        assert reply[-1].startswith(b"L NO [LIMIT]")
        assert third.closed()
        third.close()
        # AND the two sessions go on
        for wire in sessions:
            still_working(wire, "imap")
        # AND when one logs out, a new login is let in
        sessions.pop().send(b"o LOGOUT\r\n")
        deadline = time.monotonic() + 5
        while edge.gateway.connections.users.get(user, 0) >= LIMITS.per_user and time.monotonic() < deadline:
            time.sleep(0.02)
        fresh = edge.open("imaps", "198.51.100.34")
        greeted(fresh)
        assert login(fresh, user)[-1].startswith(b"L OK")
        sessions.append(fresh)
    finally:
        for wire in sessions:
            wire.close()


def test_limits_from_the_environment():
    assert ConnectionLimits.from_env({}) == ConnectionLimits(total=5000, per_client=50, per_user=20)
    env = {"GATEWAY_MAX_CONNECTIONS": "100", "GATEWAY_MAX_CONNECTIONS_PER_CLIENT": "7", "IMAP_MAX_CONNECTIONS_PER_USER": "3"}
    assert GatewayConfig.from_env(env).connection_limits == ConnectionLimits(total=100, per_client=7, per_user=3)


# -- TLS policy ------------------------------------------------------------------------------


def tls11_only(context: ssl.SSLContext) -> None:
    with pytest.warns(DeprecationWarning):
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all


def tls12_with(cipher: str) -> Callable[[ssl.SSLContext], None]:
    def configure(context: ssl.SSLContext) -> None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(cipher)

    return configure


def handshake_refused(edge: Edge, context: ssl.SSLContext, caplog: pytest.LogCaptureFixture) -> str:
    """The gateway's log line for a refused handshake (asyncio closes without an alert)."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gateway.server"):
        with pytest.raises(ssl.SSLError):
            edge.open("imaps", "203.0.113.40", context=context)
        deadline = time.monotonic() + 5
        while "TLS handshake" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
    return caplog.text


def test_tls_1_1_and_weak_tls_1_2_ciphers_are_refused(edge, caplog):
    edge.settle()
    # RFC 8996: TLS 1.0 and 1.1 are refused
    assert "UNSUPPORTED_PROTOCOL" in handshake_refused(edge, client_context(tls11_only), caplog)
    # TLS 1.2 without AEAD (or without forward secrecy): no cipher in common
    assert "NO_SHARED_CIPHER" in handshake_refused(edge, client_context(tls12_with("ECDHE-ECDSA-AES128-SHA")), caplog)
    # TLS 1.2 with ECDHE and AES-GCM, and TLS 1.3 by default, are fine
    wire = edge.open("imaps", "203.0.113.40", context=client_context(tls12_with("ECDHE-ECDSA-AES128-GCM-SHA256")))
    assert wire.sock.version() == "TLSv1.2"
    wire.close()
    wire = edge.open("imaps", "203.0.113.40")
    assert wire.sock.version() == "TLSv1.3"
    wire.close()


def starttls(edge: Edge, context: ssl.SSLContext) -> ssl.SSLSocket:
    """SMTP STARTTLS (RFC 3207) on the ``smtp`` listener, behind a PROXY header."""
    wire = edge.open("smtp", "203.0.113.41")
    greeted(wire)
    wire.send(b"EHLO client.example\r\n")
    wire.reply()
    wire.send(b"STARTTLS\r\n")
    assert wire.code() == (220, "2.0.0")
    return context.wrap_socket(wire.sock)


def test_starttls_shares_the_policy(edge):
    with pytest.raises(ssl.SSLError):
        starttls(edge, client_context(tls11_only))
    tls = starttls(edge, client_context())
    assert tls.version() == "TLSv1.3"
    tls.close()


# -- certificate reload ------------------------------------------------------------------------


def fingerprint(sock: socket.socket) -> str:
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def current_fingerprint(edge: Edge) -> str:
    wire = edge.open("imaps", "203.0.113.50")
    try:
        return fingerprint(wire.sock)
    finally:
        wire.close()


def replace_file(source: Path, target: Path) -> None:
    """As an operator's tool would: a new file renamed over the old one."""
    staged = target.with_suffix(".new")
    shutil.copyfile(source, staged)
    os.replace(staged, target)


def test_a_renewed_certificate_is_used_without_a_restart(edge, tmp_path):
    old = current_fingerprint(edge)
    cert, key = self_signed(tmp_path, HOST)
    new = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()
    assert new != old
    # WHEN the files are replaced on disk
    replace_file(key, edge.tls_dir / "gateway-key.pem")
    replace_file(cert, edge.tls_dir / "gateway-cert.pem")
    # THEN new connections get the new certificate (polled: the gateway looks every 50 ms)
    deadline = time.monotonic() + 10
    while current_fingerprint(edge) != new and time.monotonic() < deadline:
        time.sleep(0.05)
    assert current_fingerprint(edge) == new
    # AND STARTTLS too: one configuration for both
    tls = starttls(edge, client_context())
    assert fingerprint(tls) == new
    tls.close()


def test_a_broken_pair_is_logged_and_the_working_one_kept(tmp_path, caplog):
    cert, key = self_signed(tmp_path / "a", "mx.example")
    other_cert, other_key = self_signed(tmp_path / "b", "mx.example")
    server = ServerTls(cert, key)
    working = server.context
    assert not server.reload_if_changed()  # nothing changed
    # WHEN the key no longer matches the certificate THEN the error is logged, the context kept
    replace_file(other_key, key)
    with caplog.at_level(logging.ERROR, logger="gateway.tls"):
        assert not server.reload_if_changed()
    assert server.context is working
    assert "not reloaded" in caplog.text
    # WHEN the certificate follows THEN the new pair is in use
    replace_file(other_cert, cert)
    assert server.reload_if_changed()
    assert server.context is not working
