"""Limits, each with its RFC reply (DESIGN.md contract 5), on a gateway with small limits:
message size, recipients, line length, bad commands, idle time, connections; and the
streaming of large messages to S3 staging in parts.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from mailcore.accounting import count_requests
from mailcore.aws import Clients

from gateway.config import LISTENERS, GatewayConfig
from gateway.connlimits import ConnectionLimits
from gateway.functions import FunctionClient
from gateway.server import Gateway
from gateway.smtp import SmtpService, replies
from gateway.smtp.limits import LONGEST_COMMAND_LINE, SmtpLimits
from gateway.staging import MIN_PART_SIZE

from .conftest import new_user
from .test_smtp import MESSAGE, Wire, client_bytes, expect, inbox

LIMITS = SmtpLimits(
    message_size=10_000,
    recipients=3,
    bad_commands=3,
    command_timeout=0.6,
    data_timeout=0.6,
)
#: The gateway-wide connection cap of this module's gateway (gateway/connlimits.py).
CONNECTIONS = 4


@dataclass
class SmallGateway:
    gateway: Gateway
    service: SmtpService

    @property
    def address(self) -> tuple[str, int]:
        return self.gateway.listening["smtp"]

    def idle(self, timeout: float = 5.0) -> None:
        """Wait until no SMTP session of an earlier test is still running."""
        deadline = time.monotonic() + timeout
        while self.gateway.connections.open and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.fixture(scope="module")
def small(local_stack, function_transport, tmp_path_factory) -> Iterator[SmallGateway]:
    """A gateway of its own whose SMTP listener has the small LIMITS."""
    service = SmtpService(LIMITS)
    config = GatewayConfig(
        bind="127.0.0.1",
        ports={name: 0 for name in LISTENERS},
        hostname="mx.limits.example",
        mail_bucket=local_stack.resources["MailBucket"],
        connection_limits=ConnectionLimits(total=CONNECTIONS),
    )
    gw = Gateway(
        config,
        FunctionClient(function_transport),
        tls_dir=tmp_path_factory.mktemp("tls-limits"),
        services={"aws": Clients(), "smtp": service},
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="gateway-limits", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(gw.start(), loop).result(timeout=30)
    yield SmallGateway(gw, service)
    asyncio.run_coroutine_threadsafe(gw.stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


@pytest.fixture
def wire(small) -> Iterator[Wire]:
    small.idle()
    client = Wire(small.address)
    assert client.code() == (220, "")
    yield client
    client.close()


def open_transaction(wire: Wire, *recipients: str) -> None:
    wire.send(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n")
    wire.reply()
    assert wire.code()[0] == 250
    for recipient in recipients:
        wire.send(f"RCPT TO:<{recipient}>\r\n".encode())
        assert wire.code() == expect(replies.S250_RECIPIENT_OK)


def body_of(size: int) -> bytes:
    line = b"x" * 98 + b"\r\n"
    return (b"Subject: big\r\n\r\n" + line * (size // len(line) + 1))[:size]


# -- message size (RFC 1870) ------------------------------------------------------------------------


def test_size_is_advertised_from_the_limit(wire):
    wire.send(b"EHLO c.example\r\n")
    _, _, lines = wire.reply()
    assert b"250-SIZE 10000" in lines


def test_message_of_exactly_the_limit_is_accepted(store, user, wire):
    body = body_of(LIMITS.message_size - 2) + b"\r\n"
    open_transaction(wire, user)
    wire.send(b"DATA\r\n")
    assert wire.code() == (354, "")
    wire.send(body + b".\r\n")
    assert wire.code()[0] == 250
    assert [client_bytes(m) for m in inbox(store, user)] == [body]


def test_oversized_data_gets_552_after_the_end_and_the_session_goes_on(store, user, wire):
    # RFC 1870 §6.3 / RFC 5321 §4.5.3.1.10: read to the end, then 552 5.3.4
    open_transaction(wire, user)
    wire.send(b"DATA\r\n")
    assert wire.code() == (354, "")
    wire.send(body_of(3 * LIMITS.message_size) + b"\r\n.\r\n")
    assert wire.code() == expect(replies.S552_TOO_BIG)
    wire.send(b"NOOP\r\n")
    assert wire.code() == expect(replies.S250_OK)
    assert inbox(store, user) == []


def test_declared_size_over_the_limit_is_refused_at_mail(wire):
    wire.send(b"EHLO c.example\r\nMAIL FROM:<a@example.org> SIZE=10001\r\n")
    wire.reply()
    assert wire.code() == expect(replies.S552_TOO_BIG)  # RFC 1870 §6.1


def test_oversized_bdat_ends_the_transaction(store, user, wire):
    # RFC 3030 §4.2: after the 552 the client sends no more chunks; if it does, they are read and refused
    open_transaction(wire, user)
    big = body_of(LIMITS.message_size + 1)
    wire.send(f"BDAT {len(big)}\r\n".encode() + big + b"BDAT 5 LAST\r\nhello")
    assert wire.code() == expect(replies.S552_TOO_BIG)
    assert wire.code() == expect(replies.S503_NEED_MAIL)
    wire.send(b"NOOP\r\n")
    assert wire.code() == expect(replies.S250_OK)
    assert inbox(store, user) == []


# -- recipients (RFC 5321 §4.5.3.1.8, §4.5.3.1.10) -------------------------------------------------------


@pytest.fixture
def four_users(store, domain) -> list[str]:
    return [new_user(store, domain) for _ in range(LIMITS.recipients + 1)]


def test_recipients_beyond_the_limit_get_452_and_the_others_are_delivered(store, four_users, wire):
    *users, extra = four_users
    open_transaction(wire, *users)
    wire.send(f"RCPT TO:<{extra}>\r\n".encode())
    assert wire.code() == expect(replies.S452_TOO_MANY_RECIPIENTS)
    wire.send(b"DATA\r\n")
    assert wire.code() == (354, "")
    wire.send(MESSAGE + b".\r\n")
    assert wire.code()[0] == 250
    assert [len(inbox(store, u)) for u in users] == [1, 1, 1]
    assert inbox(store, extra) == []


# -- line length (RFC 5321 §4.5.3.1.4) ----------------------------------------------------------------


def test_command_line_over_512_octets_is_refused(wire):
    wire.send(b"EHLO c.example\r\n")
    wire.reply()
    wire.send(b"NOOP " + b"x" * 510 + b"\r\n")
    assert wire.code() == expect(replies.S500_LINE_TOO_LONG)
    wire.send(b"NOOP " + b"x" * 505 + b"\r\n")  # 512 with CRLF
    assert wire.code() == expect(replies.S250_OK)


def test_rcpt_may_be_longer_by_the_dsn_allowance(user, wire):
    # RFC 3461 §4: NOTIFY and ORCPT lengthen a RCPT line by up to 500 octets
    orcpt = "rfc822;" + "o" * 200 + "@" + "d" * 250 + ".example"
    line = f"RCPT TO:<{user}> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT={orcpt}"
    assert 512 < len(line) + 2 <= 512 + 500
    wire.send(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n" + line.encode() + b"\r\n")
    wire.reply()
    wire.reply()
    assert wire.code() == expect(replies.S250_RECIPIENT_OK)
    wire.send(b"NOOP " + b"x" * 600 + b"\r\n")  # other commands keep the base limit
    assert wire.code() == expect(replies.S500_LINE_TOO_LONG)


def test_a_line_longer_than_any_command_is_skipped_whole(wire):
    wire.send(b"EHLO c.example\r\n")
    wire.reply()
    wire.send(b"X" * (LONGEST_COMMAND_LINE * 200) + b"\r\nNOOP\r\n")
    assert wire.code() == expect(replies.S500_LINE_TOO_LONG)
    assert wire.code() == expect(replies.S250_OK)


# -- the bad-command budget ---------------------------------------------------------------------------


def test_too_many_errors_close_the_session(wire):
    # Postfix smtpd_hard_error_limit: 421 4.7.0 and the connection is closed
    wire.send(b"FROB\r\nFROB\r\nFROB\r\nNOOP\r\n")
    assert [wire.code() for _ in range(3)] == [expect(replies.S500_UNRECOGNIZED)] * 3
    assert wire.code() == expect(replies.S421_TOO_MANY_ERRORS)
    assert wire.closed()


def test_refused_recipients_count_against_the_budget(domain, wire):
    # a dictionary attack is a stream of 550s
    wire.send(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n")
    wire.reply()
    wire.reply()
    for name in ("a", "b", "c"):
        wire.send(f"RCPT TO:<{name}-nobody@{domain}>\r\n".encode())
        assert wire.code() == expect(replies.S550_NO_SUCH_USER)
    assert wire.code() == expect(replies.S421_TOO_MANY_ERRORS)
    assert wire.closed()


# -- idle time (RFC 5321 §4.5.3.2) --------------------------------------------------------------------


def test_idle_client_is_told_421_and_closed(wire):
    started = time.monotonic()
    assert wire.code() == expect(replies.S421_TIMEOUT)  # RFC 5321 §4.5.3.2.7
    assert wire.closed()
    assert time.monotonic() - started < 5


def test_client_silent_in_the_middle_of_data_times_out_and_nothing_is_delivered(store, user, wire):
    open_transaction(wire, user)
    wire.send(b"DATA\r\n")
    assert wire.code() == (354, "")
    wire.send(b"Subject: stalled\r\n\r\nhalf a mess")
    assert wire.code() == expect(replies.S421_TIMEOUT)  # RFC 5321 §4.5.3.2.5
    assert wire.closed()
    assert inbox(store, user) == []


def test_client_silent_in_the_middle_of_a_chunk_times_out(store, user, wire):
    open_transaction(wire, user)
    wire.send(b"BDAT 100 LAST\r\nonly some")
    assert wire.code() == expect(replies.S421_TIMEOUT)
    assert wire.closed()
    assert inbox(store, user) == []


def test_a_slow_but_steady_client_is_not_timed_out(store, user, wire):
    # the data timeout is per block, not for the whole message
    open_transaction(wire, user)
    wire.send(b"DATA\r\n")
    assert wire.code() == (354, "")
    lines = [b"Subject: slow\r\n", b"\r\n"] + [b"line %d\r\n" % i for i in range(4)]
    for line in lines:
        wire.send(line)
        time.sleep(LIMITS.data_timeout / 3)
    wire.send(b".\r\n")
    assert wire.code()[0] == 250
    assert [client_bytes(m) for m in inbox(store, user)] == [b"".join(lines)]


# -- connections per gateway ------------------------------------------------------------------------------


def test_connections_beyond_the_cap_get_421(small):
    small.idle()
    held = [Wire(small.address) for _ in range(CONNECTIONS)]
    try:
        for client in held:
            assert client.code() == (220, "")
        extra = Wire(small.address)
        assert extra.code() == expect(replies.S421_TOO_MANY_CONNECTIONS)
        assert extra.closed()
        extra.close()
        held.pop().close()
        deadline = time.monotonic() + 5
        while small.gateway.connections.open >= CONNECTIONS and time.monotonic() < deadline:
            time.sleep(0.02)
        again = Wire(small.address)
        assert again.code() == (220, "")
        again.close()
    finally:
        for client in held:
            client.close()


# -- streaming to staging ----------------------------------------------------------------------------


def test_large_message_is_staged_in_parts(gateway, store, user):
    # 12 MiB through the default gateway: three parts of >= 5 MiB but the last (S3's rule)
    body = body_of(12 * 1024 * 1024)
    client = Wire(gateway.address("smtp"), timeout=60)
    try:
        client.reply()
        open_transaction(client, user)
        with count_requests() as counter:
            client.send(b"DATA\r\n")
            assert client.code() == (354, "")
            client.sock.sendall(body + b"\r\n.\r\n")
            assert client.code()[0] == 250
        counts = counter.snapshot()
    finally:
        client.close()
    assert counts["s3.CreateMultipartUpload"] == 1
    assert counts["s3.UploadPart"] == -(-(len(body) + 2 + 400) // MIN_PART_SIZE)  # with our trace fields
    assert counts["s3.CompleteMultipartUpload"] == 1
    assert [client_bytes(m) for m in inbox(store, user)] == [body + b"\r\n"]


def send_over_smtp(gateway, user: str, body: bytes) -> dict[str, int]:
    """One transaction, MAIL to the 250 after the data: the AWS requests it cost."""
    client = Wire(gateway.address("smtp"), timeout=60)
    try:
        client.reply()
        with count_requests() as counter:
            open_transaction(client, user)
            client.send(b"DATA\r\n")
            assert client.code() == (354, "")
            client.sock.sendall(body + b".\r\n")
            assert client.code()[0] == 250
        return counter.snapshot()
    finally:
        client.close()


DELIVERY = {"dynamodb.UpdateItem": 1, "dynamodb.TransactWriteItems": 1, "eventbridge.PutEvents": 1}


def test_a_small_message_travels_inline_and_costs_three_requests_and_the_event(gateway, store, user):
    # DESIGN.md contracts 1 and 4: no staging PutObject and GetObject for a small message;
    # the blob, the UID and the index are all that is written, plus the event
    first, second = body_of(4000) + b"\r\n", body_of(5000) + b"\r\n"
    assert send_over_smtp(gateway, user, first) == {"dynamodb.BatchGetItem": 1, "s3.PutObject": 1, **DELIVERY}
    # the next message for the same address: its resolution is cached (RCPT and delivery)
    assert send_over_smtp(gateway, user, second) == {"s3.PutObject": 1, **DELIVERY}
    assert [client_bytes(m) for m in inbox(store, user)] == [first, second]


def test_a_message_over_the_inline_limit_is_staged_and_read_once(gateway, store, user):
    limit = SmtpLimits().inline_size
    body = body_of(limit + 1000) + b"\r\n"
    counts = send_over_smtp(gateway, user, body)
    # staged by the gateway (one PutObject: under one part), read by the function, stored as a blob
    assert counts == {"dynamodb.BatchGetItem": 1, "s3.PutObject": 2, "s3.GetObject": 1, **DELIVERY}
    assert [client_bytes(m) for m in inbox(store, user)] == [body]


def test_the_inline_limit_comes_from_the_environment_within_what_an_invoke_carries():
    assert SmtpLimits.from_env({}).inline_size == 256 * 1024
    assert SmtpLimits.from_env({"SMTP_INLINE_SIZE": "0"}).inline_size == 0  # every message staged
    assert SmtpLimits.from_env({"SMTP_INLINE_SIZE": "65536"}).inline_size == 65536
    with pytest.raises(ValueError):
        SmtpLimits(inline_size=5 * 1024 * 1024)  # base64 of it would not fit a 6 MB invoke


def test_socket_helpers_do_not_leak(small):
    # the module's sessions are all gone: nothing holds a connection slot
    small.idle()
    assert small.gateway.connections.open == 0
    with socket.create_connection(small.address, timeout=5) as sock:
        assert sock.recv(100).startswith(b"220 ")
