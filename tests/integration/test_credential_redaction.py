"""Credentials never reach a log (issue #7): every way a password crosses the wire, right,
wrong and malformed, with every logger at DEBUG, and then the marker searched for in every
form a log line could hold it.

Submission AUTH PLAIN (initial response and continuation) and AUTH LOGIN; IMAP LOGIN
(quoted and literal) and AUTHENTICATE PLAIN; POP3 USER/PASS and AUTH PLAIN. The captured
records (message, arguments and traceback) and the functions' own output (Powertools
writes to stdout) must hold neither the password nor its base64, nor the base64 of the
PLAIN string, at any alignment.
"""

from __future__ import annotations

import base64
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from gateway.imap.settings import ImapSettings
from gateway.pop3.settings import Pop3Settings
from gateway.smtp.auth import SASL_LINE_LIMIT
from gateway.smtp.submission import SubmissionService, SubmissionSettings

from .conftest import new_user
from .test_smtp import Wire

MARKER = "Marker-Pw-7f3a9c"
WRONG = MARKER + "-wrong"


def b64(text: str | bytes) -> bytes:
    return base64.b64encode(text.encode() if isinstance(text, str) else text)


def plain(user: str, password: str) -> bytes:
    return b64(f"\0{user}\0{password}")


def forms(user: str) -> set[str]:
    """The marker as a log could hold it: plain, and base64 of it at each of the three
    alignments inside a longer string (the PLAIN message ``\\0user\\0pass`` among them)."""
    found = {MARKER, plain(user, MARKER).decode(), plain(user, WRONG).decode()}
    for offset in range(3):
        encoded = b64(b"\0" * offset + MARKER.encode()).decode()
        found.add(encoded[4:-4] if offset else encoded[:-4])
    return found


#: A loopback address of this module's own: the throttle's failure counters for the
#: wrong passwords here are not other tests' (they connect from 127.0.0.1).
SOURCE = f"127.{secrets.randbelow(254) + 1}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def connect(gateway, listener: str) -> socket.socket:
    return socket.create_connection(gateway.address(listener), timeout=15, source_address=(SOURCE, 0))


class Line(Wire):
    """test_smtp's raw client over any socket (TLS too), for all three protocols."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.buffer = b""

    def ask(self, data: bytes) -> bytes:
        self.send(data + b"\r\n")
        return self.line()

    def smtp(self, data: bytes) -> bytes:
        """The last line of an SMTP reply."""
        self.send(data + b"\r\n")
        line = self.line()
        while line[3:4] == b"-":
            line = self.line()
        return line

    def until(self, tag: bytes) -> bytes:
        """The IMAP tagged response for ``tag``."""
        line = self.line()
        while not line.startswith(tag + b" "):
            line = self.line()
        return line


@pytest.fixture(autouse=True)
def fast_failures(gateway, monkeypatch) -> Iterator[None]:
    """Short failure delays and room for many bad commands, on the session's gateway."""
    services = gateway.gateway.services
    monkeypatch.setitem(services, "submission", SubmissionService(settings=SubmissionSettings(0.01)))
    monkeypatch.setitem(
        services, "pop3", Pop3Settings(auth_failure_delay=0.01, max_bad_commands=100, max_commands_before_login=100)
    )
    monkeypatch.setitem(
        services, "imap", ImapSettings(auth_failure_delay=0.01, max_bad_commands=100, max_commands_before_login=100)
    )
    services.pop("imap.shared", None)
    yield
    services.pop("imap.shared", None)


@pytest.fixture
def account(store, domain) -> str:
    return new_user(store, domain, password=MARKER)


@pytest.fixture
def captured(caplog) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG, AWS libraries included (they log request bodies there)."""
    caplog.set_level(logging.DEBUG)
    for name in ("gateway", "mailcore", "botocore", "boto3", "urllib3", "auth", "mailbox"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def assert_no_marker(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], user: str, last: str) -> None:
    """Wait for the ``last`` command's log line (the gateway runs in a thread), then search."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(last in r.getMessage() for r in caplog.records):
        time.sleep(0.05)
    records = list(caplog.records)
    assert any(last in r.getMessage() for r in records), "the command log line never came"
    text = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in records)
    output = "".join(capfd.readouterr())
    assert not [r for r in records if "session failed" in r.getMessage()]
    for form in forms(user):
        assert form not in text, form
        assert form not in output, form


def submission(gateway) -> Line:
    context = ssl.create_default_context(cafile=str(gateway.cert_file))
    context.check_hostname = False
    sock = context.wrap_socket(connect(gateway, "submissions"))
    client = Line(sock)
    assert client.line().startswith(b"220")
    assert client.smtp(b"EHLO client.example").startswith(b"250")
    return client


def test_smtp_auth_never_logs_the_password(gateway, account, captured, capfd):
    client = submission(gateway)
    assert client.smtp(b"AUTH PLAIN " + plain(account, WRONG)).startswith(b"535")
    assert client.smtp(b"AUTH PLAIN").startswith(b"334")
    assert client.smtp(plain(account, WRONG)).startswith(b"535")
    assert client.smtp(b"AUTH LOGIN").startswith(b"334")
    assert client.smtp(b64(account)).startswith(b"334")
    assert client.smtp(b64(WRONG)).startswith(b"535")
    assert client.smtp(b"AUTH PLAIN " + MARKER.encode() + b"!!").startswith(b"501")  # bad base64
    assert client.smtp(b"AUTH LOGIN " + b64(account)).startswith(b"334")
    assert client.smtp(MARKER.encode() + b"!!").startswith(b"501")
    assert client.smtp(b"AUTH PLAIN").startswith(b"334")
    assert client.smtp(b"x" * SASL_LINE_LIMIT + MARKER.encode()).startswith(b"500")  # too long
    assert client.smtp(MARKER.encode()).startswith(b"500")  # a password sent out of turn
    assert client.smtp(b"AUTH " + MARKER.encode()).startswith(b"504")  # credentials without a mechanism
    assert client.smtp(b"NOOP " + MARKER.encode() * 100).startswith(b"500")  # over the line limit
    assert client.smtp(b"AUTH PLAIN " + plain(account, MARKER)).startswith(b"235")
    assert client.smtp(b"QUIT").startswith(b"221")
    client.close()
    client = submission(gateway)
    assert client.smtp(b"AUTH LOGIN").startswith(b"334")
    assert client.smtp(b64(account)).startswith(b"334")
    assert client.smtp(b64(MARKER)).startswith(b"235")
    assert client.smtp(b"QUIT").startswith(b"221")
    client.close()
    assert_no_marker(captured, capfd, account, "command=QUIT")


def imap(gateway) -> Line:
    client = Line(connect(gateway, "imap"))
    assert client.line().startswith(b"* OK")
    return client


def test_imap_login_and_authenticate_never_log_the_password(gateway, account, captured, capfd):
    user = account.encode()
    wrong, marker = WRONG.encode(), MARKER.encode()
    client = imap(gateway)
    client.send(b'a LOGIN "' + user + b'" "' + wrong + b'"\r\n')
    assert client.until(b"a").startswith(b"a NO")
    client.send(b"b LOGIN " + user + b" {%d}\r\n" % len(wrong))
    assert client.line().startswith(b"+")
    client.send(wrong + b"\r\n")
    assert client.until(b"b").startswith(b"b NO")
    client.send(b"c LOGIN " + user + b" {%d+}\r\n" % len(wrong) + wrong + b"\r\n")  # LITERAL+
    assert client.until(b"c").startswith(b"c NO")
    client.send(b"d AUTHENTICATE PLAIN\r\n")
    assert client.line().startswith(b"+")
    client.send(plain(account, WRONG) + b"\r\n")
    assert client.until(b"d").startswith(b"d NO")
    client.send(b"e AUTHENTICATE PLAIN " + plain(account, WRONG) + b"\r\n")
    assert client.until(b"e").startswith(b"e NO")
    client.send(b"f AUTHENTICATE PLAIN " + marker + b"!!\r\n")  # bad base64
    assert client.until(b"f").startswith(b"f BAD")
    client.send(b"g AUTHENTICATE PLAIN\r\n")
    assert client.line().startswith(b"+")
    client.send(marker + b"!!\r\n")
    assert client.until(b"g").startswith(b"g BAD")
    client.send(b"h LOGIN " + user + b" " + marker + b"x" * 70_000 + b"\r\n")  # over max_line
    assert client.until(b"h").startswith(b"h BAD")
    client.send(marker + b"\r\n")  # a password sent out of turn: a tag without a command
    assert b"BAD" in client.line()
    client.send(b"n AUTHENTICATE " + marker + b"\r\n")  # credentials without a mechanism
    assert client.until(b"n").startswith(b"n NO")
    client.send(b'i LOGIN "' + user + b'" "' + marker + b'"\r\n')
    assert client.until(b"i").startswith(b"i OK")
    client.send(b"j LOGOUT\r\n")
    assert client.until(b"j").startswith(b"j OK")
    client.close()
    client = imap(gateway)
    client.send(b"k LOGIN " + user + b" {%d}\r\n" % len(marker))
    assert client.line().startswith(b"+")
    client.send(marker + b"\r\n")
    assert client.until(b"k").startswith(b"k OK")
    client.close()
    client = imap(gateway)
    client.send(b"l AUTHENTICATE PLAIN " + plain(account, MARKER) + b"\r\n")
    assert client.until(b"l").startswith(b"l OK")
    client.send(b"m LOGOUT\r\n")
    assert client.until(b"m").startswith(b"m OK")
    client.close()
    assert_no_marker(captured, capfd, account, "command=LOGOUT")


def pop3(gateway) -> Line:
    client = Line(connect(gateway, "pop3"))
    assert client.line().startswith(b"+OK")
    return client


def test_pop3_user_pass_and_auth_never_log_the_password(gateway, account, captured, capfd):
    user = account.encode()
    client = pop3(gateway)
    assert client.ask(b"USER " + user).startswith(b"+OK")
    assert client.ask(b"PASS " + WRONG.encode()).startswith(b"-ERR")
    assert client.ask(b"PASS " + MARKER.encode()).startswith(b"-ERR")  # no USER before it
    assert client.ask(b"AUTH PLAIN " + plain(account, WRONG)).startswith(b"-ERR")
    assert client.ask(b"AUTH PLAIN").startswith(b"+")
    assert client.ask(plain(account, WRONG)).startswith(b"-ERR")
    assert client.ask(b"AUTH PLAIN " + MARKER.encode() + b"!!").startswith(b"-ERR")  # bad base64
    assert client.ask(b"AUTH PLAIN").startswith(b"+")
    assert client.ask(MARKER.encode() + b"!!").startswith(b"-ERR")
    assert client.ask(b"AUTH PLAIN").startswith(b"+")
    assert client.ask(b"x" * 9000 + MARKER.encode()).startswith(b"-ERR")  # over the SASL limit
    assert client.ask(MARKER.encode()).startswith(b"-ERR")  # a password sent out of turn
    assert client.ask(b"AUTH " + MARKER.encode()).startswith(b"-ERR")  # credentials without a mechanism
    assert client.ask(b"PASS " + MARKER.encode() * 20).startswith(b"-ERR")  # over the line limit
    assert client.ask(b"USER " + user).startswith(b"+OK")
    assert client.ask(b"PASS " + MARKER.encode()).startswith(b"+OK")
    assert client.ask(b"QUIT").startswith(b"+OK")
    client.close()
    client = pop3(gateway)
    assert client.ask(b"AUTH PLAIN " + plain(account, MARKER)).startswith(b"+OK")
    assert client.ask(b"QUIT").startswith(b"+OK")
    client.close()
    assert_no_marker(captured, capfd, account, "command=QUIT")


def test_http_headers_sent_to_smtp_are_not_logged(gateway, account, captured, capfd):
    """A browser's request to port 25 (cross-protocol) may carry credentials in its headers."""
    client = Line(connect(gateway, "smtp"))
    assert client.line().startswith(b"220")
    assert client.smtp(b"Authorization: Basic " + b64(f"{account}:{MARKER}")).startswith(b"221")
    client.close()
    assert_no_marker(captured, capfd, account, "command=HEADER:")
