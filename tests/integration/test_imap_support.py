"""Fixtures and helpers for the IMAP conversation tests (no tests here).

The IMAP tests drive the session-scoped gateway over real sockets with the standard
library's ``imaplib``, ``imapclient`` and a raw line client (for what the libraries will
not send: broken syntax, literals, pipelining). Messages are put into mailboxes with the
mailbox function's own ``append`` operation, the path APPEND takes.
"""

from __future__ import annotations

import contextlib
import imaplib
import secrets
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from mailcore.contracts import Append

from gateway.imap.settings import ImapSettings

PASSWORD = "correct horse"
#: Short delays and fast polls keep the suite quick; limits as in production.
TEST_SETTINGS = ImapSettings(auth_failure_delay=0.01, poll_interval=0.25, poll_min_gap=0.01, max_bad_commands=20)


@pytest.fixture(scope="module")
def module_store(local_stack):
    """The storage, for fixtures shared by a module's tests."""
    from mailcore.settings import Settings
    from mailcore.store import Store

    return Store.build(Settings.from_env(local_stack.environment))


@pytest.fixture(scope="module")
def module_user(module_store) -> str:
    """A user shared by one module's read-only tests (faster than one per test)."""
    domain = module_store.accounts.add_domain(f"m{secrets.token_hex(6)}.test")
    return module_store.add_user(f"u{secrets.token_hex(4)}@{domain}", PASSWORD)


@pytest.fixture
def imap_gateway(gateway):
    """The running gateway with test IMAP settings (new sessions pick them up)."""
    services = gateway.gateway.services
    if services.get("imap") is not TEST_SETTINGS:
        services["imap"] = TEST_SETTINGS
        services.pop("imap.shared", None)
    return gateway


def message(subject: str = "Hello", body: str = "Hi there.\r\n", sender: str = "alice@example.org", to: str = "bob@example.org", extra: str = "") -> bytes:
    return (
        f"From: Alice <{sender}>\r\nTo: Bob <{to}>\r\nSubject: {subject}\r\n"
        f"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\nMessage-ID: <{secrets.token_hex(6)}@example.org>\r\n{extra}"
        f"\r\n{body}"
    ).encode()


def deliver(store, function_transport, user: str, raw: bytes, mailbox: str = "INBOX", flags: list[str] | None = None, internaldate: int = 0) -> int:
    """Index ``raw`` in ``mailbox`` as APPEND would (staging object, then ``append``)."""
    key = f"staging/test-{secrets.token_hex(8)}"
    store.blobs.s3.put_object(Bucket=store.blobs.bucket, Key=key, Body=raw)
    result = function_transport.invoke("MailboxFunction", Append(user, mailbox, key, flags or [], internaldate).to_event())
    assert result["ok"], result
    return int(result["uid"])


def connect(gw, listener: str = "imap") -> imaplib.IMAP4:
    host, port = gw.address(listener)
    if listener == "imaps":
        context = ssl.create_default_context(cafile=str(gw.cert_file))
        context.check_hostname = False
        return imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=15)
    return imaplib.IMAP4(host, port, timeout=15)


@pytest.fixture
def imap(imap_gateway, user) -> Iterator[imaplib.IMAP4]:
    """A logged-in imaplib session of a fresh user."""
    client = connect(imap_gateway)
    client.login(user, PASSWORD)
    yield client
    with contextlib.suppress(imaplib.IMAP4.abort, OSError):
        client.logout()


@dataclass
class Raw:
    """A line-level IMAP client: send exactly these octets, read replies as lines."""

    sock: socket.socket
    buffer: bytes = b""

    @classmethod
    def open(cls, gw, listener: str = "imap") -> Raw:
        sock = socket.create_connection(gw.address(listener), timeout=15)
        raw = cls(sock)
        greeting = raw.line()
        assert greeting.startswith(b"* OK"), greeting
        return raw

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def until_tagged(self, tag: bytes) -> list[bytes]:
        """Lines up to and including the tagged response for ``tag`` (literals inline)."""
        lines = []
        while True:
            line = self.line()
            while line.endswith(b"}") and b"{" in line:
                size = int(line[line.rindex(b"{") + 1 : -1])
                while len(self.buffer) < size:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("closed")
                    self.buffer += chunk
                line += b"\r\n" + self.buffer[:size]
                self.buffer = self.buffer[size:]
                line += self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def command(self, tag: bytes, text: bytes) -> list[bytes]:
        self.send(tag + b" " + text + b"\r\n")
        return self.until_tagged(tag)

    def closed(self, timeout: float = 5.0) -> bool:
        """Whether the server closes the connection (reading what is left)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionError, OSError):
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(imap_gateway) -> Iterator[Raw]:
    client = Raw.open(imap_gateway)
    yield client
    client.close()


def login_raw(client: Raw, user: str) -> None:
    reply = client.command(b"L", b'LOGIN "' + user.encode() + b'" "' + PASSWORD.encode() + b'"')
    assert reply[-1].startswith(b"L OK"), reply
