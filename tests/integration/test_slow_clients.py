"""Slow clients (slow-loris) cannot hold a slot: the minimum data rate once a line, the
DATA, a BDAT chunk or a literal has begun (gateway/wire/lines.py), the junk-command
limit on port 25, and the deadline for logging in; while a client at normal speed, and
the RFCs' waits for the next command, are untouched.

The gateway of this module has small settings: a grace of half a second, then a rate the
trickle (one octet every 50 ms) cannot meet. Replies and outcomes are asserted, never
elapsed time.
"""

from __future__ import annotations

import asyncio
import select
import smtplib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from mailcore.aws import Clients

from gateway.config import LISTENERS, GatewayConfig
from gateway.functions import FunctionClient
from gateway.imap.settings import ImapSettings
from gateway.pop3.settings import Pop3Settings
from gateway.server import Gateway
from gateway.smtp import SmtpService, replies
from gateway.smtp.limits import SmtpLimits
from gateway.smtp.submission import SubmissionService

from .test_pop3 import deliver_to, inbox_uids, message
from .test_smtp import MESSAGE, Wire, expect, inbox

HOST = "mx.slow.example"
PASSWORD = "correct horse"
MIN_RATE, GRACE = 1000.0, 0.5
JUNK_LIMIT = 10
SMTP_LIMITS = SmtpLimits(junk_commands=JUNK_LIMIT, min_data_rate=MIN_RATE, rate_grace=GRACE)
SUBMISSION_LIMITS = SmtpLimits(login_deadline=2.0, min_data_rate=MIN_RATE, rate_grace=GRACE)
IMAP = ImapSettings(login_deadline=2.0, auth_failure_delay=0.05, min_data_rate=MIN_RATE, rate_grace=GRACE)
POP3 = Pop3Settings(login_deadline=2.0, auth_failure_delay=0.05, min_data_rate=MIN_RATE, rate_grace=GRACE)
#: One octet per step; the rate of the steps (about 20 octets/s) is far below RATE.
STEP = 0.05
#: A trickle that is never cut off ends the test rather than hanging it.
MAX_STEPS = 600


@pytest.fixture(scope="module")
def slow(local_stack, function_transport, tmp_path_factory) -> Iterator[Gateway]:
    """A gateway of its own with the small settings above on every protocol."""
    config = GatewayConfig(
        bind="127.0.0.1",
        ports={name: 0 for name in LISTENERS},
        hostname=HOST,
        mail_bucket=local_stack.resources["MailBucket"],
    )
    services = {
        "aws": Clients(),
        "smtp": SmtpService(SMTP_LIMITS),
        "submission": SubmissionService(SUBMISSION_LIMITS),
        "imap": IMAP,
        "pop3": POP3,
    }
    gw = Gateway(
        config, FunctionClient(function_transport), tls_dir=tmp_path_factory.mktemp("tls-slow"), services=services
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway-slow", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(gw.start(), loop).result(timeout=30)
    yield gw
    asyncio.run_coroutine_threadsafe(gw.stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


def trickle(sock: socket.socket, octet: bytes = b"x") -> bytes:
    """Send ``octet`` again and again, one at a time, until the server speaks; then
    return all it says until it closes."""
    for _ in range(MAX_STEPS):
        readable, _, _ = select.select([sock], [], [], STEP)
        if readable:
            break
        sock.sendall(octet)
    else:
        raise AssertionError("the trickle was never cut off")
    return until_closed(sock)


def until_closed(sock: socket.socket) -> bytes:
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def line_client(gw: Gateway, listener: str) -> tuple[socket.socket, bytes]:
    """A raw connection and the server's greeting line."""
    sock = socket.create_connection(gw.listening[listener], timeout=10)
    greeting = b""
    while not greeting.endswith(b"\r\n"):
        greeting += sock.recv(1)
    return sock, greeting


def smtp_in_data(gw: Gateway, user: str) -> Wire:
    wire = Wire(gw.listening["smtp"])
    assert wire.code() == (220, "")
    wire.send(f"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<{user}>\r\nDATA\r\n".encode())
    assert wire.code()[0] == 250
    assert wire.code() == expect(replies.S250_SENDER_OK)
    assert wire.code() == expect(replies.S250_RECIPIENT_OK)
    assert wire.code() == (354, "")
    return wire


# -- SMTP -----------------------------------------------------------------------------------


def test_smtp_command_line_trickled_gets_421_timeout(slow):
    sock, greeting = line_client(slow, "smtp")
    assert greeting.startswith(b"220 ")
    sock.sendall(b"EHLO ")
    said = trickle(sock)
    assert said.startswith(b"421 4.4.2 ")  # RFC 3463 4.4.2: timeout; RFC 5321 §3.8: then close


def test_smtp_data_trickled_gets_421_and_nothing_is_stored(slow, store, user):
    wire = smtp_in_data(slow, user)
    wire.send(b"Subject: slow\r\n\r\n")
    said = trickle(wire.sock, b"y")
    assert said.startswith(b"421 4.4.2 ")
    assert inbox(store, user) == []


def test_smtp_bdat_chunk_trickled_gets_421(slow, store, user):
    wire = Wire(slow.listening["smtp"])
    assert wire.code() == (220, "")
    wire.send(f"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<{user}>\r\n".encode())
    for _ in range(3):
        assert wire.code()[0] == 250
    wire.send(b"BDAT 100000 LAST\r\n")
    said = trickle(wire.sock, b"z")
    assert said.startswith(b"421 4.4.2 ")
    assert inbox(store, user) == []


def test_smtp_noop_spinner_hits_the_junk_limit(slow):
    wire = Wire(slow.listening["smtp"])
    assert wire.code() == (220, "")
    for _ in range(JUNK_LIMIT):
        wire.send(b"NOOP\r\n")
        assert wire.code() == expect(replies.S250_OK)
    wire.send(b"NOOP\r\n")
    assert wire.code() == expect(replies.S421_TOO_MANY_ERRORS)  # Postfix: junk counts as errors
    assert wire.closed()


def test_smtp_an_accepted_message_resets_the_junk_count(slow, store, user):
    with smtplib.SMTP(*slow.listening["smtp"], local_hostname="client.example", timeout=30) as client:
        for _ in range(JUNK_LIMIT - 2):
            assert client.noop()[0] == 250
        assert client.sendmail("a@example.org", [user], MESSAGE) == {}  # EHLO, then a message
        for _ in range(JUNK_LIMIT - 1):
            assert client.noop()[0] == 250
    assert len(inbox(store, user)) == 1


def test_submission_without_login_in_time_gets_421(slow):
    wire = Wire(slow.listening["submission"])
    assert wire.code() == (220, "")
    wire.send(b"EHLO c.example\r\n")
    assert wire.code()[0] == 250
    # No AUTH: the wait for the next command ends with the login deadline.
    assert wire.code() == expect(replies.S421_TIMEOUT)
    assert wire.closed()


def test_normal_smtp_client_is_unaffected(slow, store, user):
    with smtplib.SMTP(*slow.listening["smtp"], local_hostname="client.example", timeout=30) as client:
        assert client.sendmail("a@example.org", [user], MESSAGE) == {}
        assert client.sendmail("a@example.org", [user], MESSAGE + b"Again.\r\n") == {}
    assert len(inbox(store, user)) == 2


# -- IMAP -----------------------------------------------------------------------------------


def test_imap_command_line_trickled_gets_bye(slow):
    sock, greeting = line_client(slow, "imap")
    assert greeting.startswith(b"* OK ")
    sock.sendall(b"a1 CAPA")
    said = trickle(sock, b"B")
    assert said.startswith(b"* BYE Too slow")  # RFC 3501 §7.1.5


def test_imap_literal_trickled_gets_bye(slow, user):
    sock, _ = line_client(slow, "imap")
    sock.sendall(f'a1 LOGIN "{user}" {{100}}\r\n'.encode())
    assert sock.recv(100).startswith(b"+ ")  # RFC 3501 §7.5: ready for the literal
    said = trickle(sock)
    assert said.startswith(b"* BYE Too slow")


def test_imap_command_spinner_before_login_gets_bye_at_the_deadline(slow):
    sock, _ = line_client(slow, "imap")
    said = b""
    for step in range(MAX_STEPS):
        try:
            sock.sendall(b"a%d NOOP\r\n" % step)
            said += sock.recv(65536)
        except OSError:
            break
        if b"* BYE" in said:
            break
        time.sleep(STEP)
    assert b"* BYE Autologout; no login in time\r\n" in said + until_closed(sock)


def test_normal_imap_client_is_unaffected(slow, user):
    sock, _ = line_client(slow, "imap")
    sock.sendall(f'a1 LOGIN "{user}" "{PASSWORD}"\r\na2 SELECT INBOX\r\na3 LOGOUT\r\n'.encode())
    said = until_closed(sock)
    assert b"a1 OK" in said and b"a2 OK" in said and b"a3 OK" in said


# -- POP3 -----------------------------------------------------------------------------------


def test_pop3_command_line_trickled_gets_err(slow):
    sock, greeting = line_client(slow, "pop3")
    assert greeting.startswith(b"+OK ")
    sock.sendall(b"CAPA")
    said = trickle(sock, b" ")
    assert said.startswith(b"-ERR Too slow")


def test_pop3_without_login_in_time_gets_err(slow):
    sock, _ = line_client(slow, "pop3")
    sock.sendall(b"CAPA\r\n")
    said = until_closed(sock)
    assert said.startswith(b"+OK")
    assert said.endswith(b"-ERR No login in time, closing connection\r\n")


def test_normal_pop3_client_is_unaffected(slow, store, user):
    deliver_to(store, user, message(1))
    sock, _ = line_client(slow, "pop3")
    sock.sendall(f"USER {user}\r\nPASS {PASSWORD}\r\nSTAT\r\nDELE 1\r\nQUIT\r\n".encode())
    said = until_closed(sock)
    assert said.count(b"+OK") == 5, said
    assert inbox_uids(store, user) == []
