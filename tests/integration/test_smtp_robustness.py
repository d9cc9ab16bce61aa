"""Malformed input gets a protocol answer, never a crash (DESIGN.md contract 5): NUL bytes,
non-UTF-8, bare line ends, junk in the data, SMTP smuggling attempts, clients that vanish
mid-message; and a property test that feeds random command streams.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mailcore.accounting import count_requests
from mailcore.settings import Settings
from mailcore.store import Store

from gateway.smtp import replies

from .conftest import new_user
from .test_smtp import MESSAGE, Wire, client_bytes, expect, inbox


@pytest.fixture(autouse=True)
def no_session_crashes(caplog) -> Iterator[None]:
    """The gateway logs "session failed" when a protocol raises: that must never happen."""
    caplog.set_level(logging.ERROR, logger="gateway")
    yield
    crashes = [r for r in caplog.records if "session failed" in r.getMessage()]
    assert crashes == []


def still_answers(gateway) -> None:
    client = Wire(gateway.address("smtp"))
    try:
        assert client.code() == (220, "")
        client.send(b"NOOP\r\n")
        assert client.code() == expect(replies.S250_OK)
    finally:
        client.close()


def start(wire: Wire, user: str) -> None:
    wire.send(f"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<{user}>\r\n".encode())
    wire.reply()
    assert wire.code()[0] == 250
    assert wire.code() == expect(replies.S250_RECIPIENT_OK)


@pytest.fixture
def wire(gateway) -> Iterator[Wire]:
    client = Wire(gateway.address("smtp"))
    assert client.code() == (220, "")
    yield client
    client.close()


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"NO\x00OP", id="NUL-in-verb"),
        pytest.param(b"MAIL FROM:<a\x00b@example.org>", id="NUL-in-path"),
        pytest.param(b"\xff\xfe\xfd", id="not-UTF-8"),
        pytest.param(b"EHLO \x1b[31mred", id="control-characters"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="TLS-hello-on-plain-port"),
    ],
)
def test_malformed_command_gets_500_and_the_session_goes_on(wire, line):
    wire.send(line + b"\r\n")
    assert wire.code() == expect(replies.S500_BAD_SYNTAX)
    wire.send(b"NOOP\r\n")
    assert wire.code() == expect(replies.S250_OK)


def test_commands_ending_in_bare_lf_are_understood(store, user, wire):
    # Postfix "normalize": a bare LF ends a command line too
    wire.send(f"EHLO c.example\nMAIL FROM:<a@example.org>\nRCPT TO:<{user}>\nDATA\n".encode())
    wire.reply()
    assert [wire.code() for _ in range(3)] == [
        expect(replies.S250_SENDER_OK),
        expect(replies.S250_RECIPIENT_OK),
        (354, ""),
    ]
    wire.send(MESSAGE + b".\r\n")
    assert wire.code()[0] == 250


def test_junk_in_the_data_is_stored_and_bare_lf_normalized(store, user, wire):
    junk = bytes(range(256)) * 3  # NULs, bare CR (kept), bare LF (made CR LF)
    start(wire, user)
    wire.send(b"DATA\r\n")
    assert wire.code() == (354, "")
    wire.send(b"Subject: junk\r\n\r\n" + junk + b"\r\n.\r\n")
    assert wire.code()[0] == 250
    expected = b"Subject: junk\r\n\r\n" + junk.replace(b"\t\n", b"\t\r\n") + b"\r\n"
    assert [client_bytes(m) for m in inbox(store, user)] == [expected]


SMUGGLING = [
    pytest.param(b"\n.\n", id="LF.LF"),
    pytest.param(b"\r\n.\n", id="CRLF.LF"),
    pytest.param(b"\n.\r\n", id="LF.CRLF"),
    pytest.param(b"\r.\r\n", id="CR.CRLF"),
    pytest.param(b"\r\n.\r", id="CRLF.CR"),
]


@pytest.mark.parametrize("false_end", SMUGGLING)
def test_smuggled_end_of_data_is_content(store, user, wire, false_end):
    # CVE-2023-51764 and relatives: only CR LF . CR LF ends the data (RFC 5321 §4.1.1.4)
    smuggled = f"MAIL FROM:<ceo@example.com>\r\nRCPT TO:<{user}>\r\nDATA\r\nFrom: ceo\r\n\r\nsmuggled".encode()
    start(wire, user)
    wire.send(b"DATA\r\n")
    assert wire.code() == (354, "")
    wire.send(b"Subject: cover\r\n\r\nbody" + false_end + smuggled + b"\r\n.\r\nNOOP\r\n")
    assert wire.code()[0] == 250
    assert wire.code() == expect(replies.S250_OK)  # the next command: nothing smuggled got a reply
    (stored,) = inbox(store, user)
    assert b"smuggled" in client_bytes(stored)
    assert b"\n" not in client_bytes(stored).replace(b"\r\n", b"")  # every line ends in CR LF


def test_long_lines_in_the_data_are_kept_whole(store, user, wire):
    # a 300 kB line (longer than the reader's buffer) with a dot and a CR LF across reads
    line = b"." + b"y" * 65535 + b"\r" + b"z" * 300_000
    start(wire, user)
    wire.send(b"DATA\r\n")
    assert wire.code() == (354, "")
    wire.send(line + b"\r\n.\r\n")
    assert wire.code()[0] == 250
    assert [client_bytes(m) for m in inbox(store, user)] == [line[1:] + b"\r\n"]


def test_missing_final_line_end_then_close_is_harmless(gateway):
    with socket.create_connection(gateway.address("smtp"), timeout=10) as sock:
        sock.recv(512)
        sock.sendall(b"EHLO c.example\r\nMAIL FROM:<a@exam")
    still_answers(gateway)


def test_disconnect_in_the_middle_of_data_delivers_nothing(gateway, store, user):
    wire = Wire(gateway.address("smtp"))
    wire.reply()
    start(wire, user)
    wire.send(b"DATA\r\n")
    assert wire.code() == (354, "")
    wire.send(MESSAGE[:40])
    wire.close()
    still_answers(gateway)
    time.sleep(0.2)
    assert inbox(store, user) == []


def test_disconnect_after_parts_were_uploaded_aborts_the_upload(gateway, store, user):
    # more than one S3 part was uploaded; the client vanishes; the multipart upload is aborted
    def open_uploads() -> set[str]:
        reply = store.blobs.s3.list_multipart_uploads(Bucket=store.blobs.bucket, Prefix="staging/")
        return {u["UploadId"] for u in reply.get("Uploads", [])}

    others = open_uploads()  # other sessions of this test run may have theirs
    wire = Wire(gateway.address("smtp"), timeout=60)
    wire.reply()
    start(wire, user)
    with count_requests() as counter:
        wire.send(b"DATA\r\n")
        assert wire.code() == (354, "")
        wire.sock.sendall(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 7000)
        wire.close()
        deadline = time.monotonic() + 10
        while counter.snapshot().get("s3.AbortMultipartUpload", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    counts = counter.snapshot()
    assert counts["s3.CreateMultipartUpload"] == 1
    assert counts["s3.AbortMultipartUpload"] == 1
    assert "s3.CompleteMultipartUpload" not in counts
    # (the abort was counted as it was sent: give it time to be answered)
    deadline = time.monotonic() + 10
    while not open_uploads() <= others and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_uploads() <= others
    assert inbox(store, user) == []
    still_answers(gateway)


def test_disconnect_in_the_middle_of_a_chunk_delivers_nothing(gateway, store, user):
    wire = Wire(gateway.address("smtp"))
    wire.reply()
    start(wire, user)
    wire.send(b"BDAT 100\r\n0123456789")
    wire.close()
    still_answers(gateway)
    assert inbox(store, user) == []


# -- random command streams -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def recipient(local_stack) -> str:
    store = Store.build(Settings.from_env(local_stack.environment))
    domain = store.accounts.add_domain(f"h{secrets.token_hex(6)}.test")
    return new_user(store, domain)


COMMANDS = [
    "EHLO c.example",
    "HELO c.example",
    "EHLO",
    "MAIL FROM:<a@example.org>",
    "MAIL FROM:<>",
    "MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME",
    "RCPT TO:<{rcpt}>",
    "RCPT TO:<x@example.net>",
    'RCPT TO:<"q@example.net"@example.org>',
    "DATA",
    "BDAT 5",
    "BDAT 3 LAST",
    "BDAT 0 LAST",
    "BDAT",
    "RSET",
    "NOOP",
    "VRFY x",
    "EXPN x",
    "HELP",
    "AUTH LOGIN",
    "STARTTLS",
    ".",
    "..",
    "QUIT",
    "GET / HTTP/1.0",
]
line_end = st.sampled_from([b"\r\n", b"\n", b"\r", b""])
command = st.builds(lambda c, e: c.encode() + e, st.sampled_from(COMMANDS), line_end)
junk = st.binary(max_size=120)
text = st.builds(lambda t, e: t.encode("utf-8", "surrogatepass") + e, st.text(max_size=80), line_end)
stream = st.lists(st.one_of(command, command, junk, text), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=stream)
def test_random_command_streams_never_stop_the_server(gateway, recipient, pieces):
    data = b"".join(pieces).replace(b"{rcpt}", recipient.encode())
    with socket.create_connection(gateway.address("smtp"), timeout=15) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)  # then EOF: the session must end by itself
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    lines = received.split(b"\r\n")
    assert lines[0].startswith(b"220 ")
    assert lines[-1] == b""  # every reply is a whole line
    for line in lines[:-1]:
        assert line[:3].isdigit() and line[3:4] in (b" ", b"-"), line
    still_answers(gateway)
