"""SMTP in the MX role, driven over real sockets with stdlib smtplib (and raw sockets where
smtplib cannot say it: BDAT, pipelining, STARTTLS injection).

Every delivery is read back from the store: the message bytes are the client's bytes
under our Return-Path and Received fields (RFC 5321 §4.4).
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator

import pytest
from mailcore.store import Store

from gateway.smtp import replies

from .conftest import new_user

HOST = "mx.test.example"
MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob\r\nSubject: hello\r\nMessage-ID: <m@example.org>\r\n\r\nHi Bob.\r\n"
)


# -- helpers shared by the test_smtp*.py modules -----------------------------------------


def inbox(store: Store, user: str) -> list[bytes]:
    """The messages in ``user``'s INBOX, oldest first, as stored."""
    box = store.mailboxes.get(user, "INBOX")
    return [store.blobs.get(record.sha256) for record in store.messages.list_range(box.mailbox_id)]


def split_trace(stored: bytes) -> tuple[bytes, bytes, bytes]:
    """(Return-Path line, Received field, the rest): the rest is what the client sent."""
    return_path, _, rest = stored.partition(b"\r\n")
    match = re.match(rb"Received: .*?\r\n(?![ \t])", rest, re.DOTALL)
    assert match is not None, stored[:300]
    return return_path + b"\r\n", match.group(0), rest[match.end() :]


def client_bytes(stored: bytes) -> bytes:
    return split_trace(stored)[2]


def code(reply: tuple[int, bytes]) -> tuple[int, str]:
    """smtplib's (code, text) as (code, enhanced code)."""
    number, text = reply
    enhanced = text.decode().split(" ", 1)[0] if re.match(rb"[245]\.\d{1,3}\.\d{1,3}( |$)", text) else ""
    return number, enhanced


def expect(reply: replies.Reply) -> tuple[int, str]:
    return reply.code, reply.enhanced


class Wire:
    """A raw client: send bytes, read whole replies (multi-line aware)."""

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; buffered {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def reply(self) -> tuple[int, str, list[bytes]]:
        """(code, enhanced code of the last line, all lines)."""
        lines = [self.line()]
        while lines[-1][3:4] == b"-":
            lines.append(self.line())
        last = lines[-1]
        parts = last[4:].split(b" ", 1)
        enhanced = parts[0].decode() if re.fullmatch(rb"[245]\.\d{1,3}\.\d{1,3}", parts[0]) else ""
        return int(last[:3]), enhanced, lines

    def code(self) -> tuple[int, str]:
        number, enhanced, _ = self.reply()
        return number, enhanced

    def closed(self) -> bool:
        """True once the server has closed (EOF), after any buffered replies."""
        try:
            return self.sock.recv(65536) == b""
        except (ConnectionResetError, TimeoutError):
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def smtp(gateway) -> Iterator[smtplib.SMTP]:
    client = smtplib.SMTP(*gateway.address("smtp"), local_hostname="client.example", timeout=30)
    yield client
    with contextlib.suppress(smtplib.SMTPException):
        client.quit()
    client.close()


@pytest.fixture
def wire(gateway) -> Iterator[Wire]:
    client = Wire(gateway.address("smtp"))
    assert client.code() == (220, "")
    yield client
    client.close()


# -- a delivery, end to end -----------------------------------------------------------------


def test_message_is_delivered_with_trace_fields_and_read_back_byte_for_byte(smtp, store, user):
    # GIVEN a local user WHEN another server hands over a message
    smtp.ehlo()
    refused = smtp.sendmail("alice@example.org", [user], MESSAGE)
    # THEN it is accepted, and the INBOX holds exactly the client's bytes under our trace fields
    assert refused == {}
    (stored,) = inbox(store, user)
    return_path, received, rest = split_trace(stored)
    assert rest == MESSAGE
    assert return_path == b"Return-Path: <alice@example.org>\r\n"  # RFC 5321 §4.4
    assert received.startswith(b"Received: from client.example ([127.0.0.1])\r\n")
    assert f"by {HOST} (serverless-mail) with ESMTP id ".encode() in received
    assert f"for <{user}>;".encode() in received


def test_greeting_names_the_host_without_an_enhanced_code(wire):
    # RFC 5321 §4.2, RFC 2034 §3: the greeting carries no enhanced status code
    wire.send(b"NOOP\r\n")
    assert wire.code() == expect(replies.S250_OK)


def test_ehlo_advertises_every_extension(smtp):
    code_, _ = smtp.ehlo("client.example")
    assert code_ == 250
    features = smtp.esmtp_features
    for keyword in ("pipelining", "size", "starttls", "enhancedstatuscodes", "8bitmime", "dsn", "smtputf8", "chunking"):
        assert keyword in features, keyword
    from gateway.smtp.limits import SmtpLimits

    assert int(features["size"]) == SmtpLimits.from_env().message_size  # RFC 1870 §4
    assert "auth" not in features  # the MX role takes no logins


def test_helo_is_plain_smtp_without_extension_parameters(smtp):
    # RFC 5321 §4.1.1.1 HELO; §4.1.1.11 extension parameters need EHLO
    assert smtp.helo("client.example")[0] == 250
    assert code(smtp.docmd("MAIL", "FROM:<a@example.org> SIZE=10")) == expect(replies.S555_UNSUPPORTED_PARAMETER)
    assert code(smtp.docmd("MAIL", "FROM:<a@example.org>")) == expect(replies.S250_SENDER_OK)


# (setup commands, command, expected reply) - RFC 5321 §4.1.1 and §4.1.4
CONVERSATIONS = [
    pytest.param([], "NOOP", replies.S250_OK, id="NOOP-4.1.1.9"),
    pytest.param([], "NOOP ignored argument", replies.S250_OK, id="NOOP-argument-ignored-4.1.1.9"),
    pytest.param([], "HELP", replies.S214_HELP, id="HELP-4.1.1.8"),
    pytest.param([], "HELP MAIL", replies.S214_HELP, id="HELP-topic-4.1.1.8"),
    pytest.param(["EHLO c.example"], "VRFY bob", replies.S252_CANNOT_VRFY, id="VRFY-252-3.5.3"),
    pytest.param(["EHLO c.example"], "VRFY", replies.S501_SYNTAX, id="VRFY-no-argument"),
    pytest.param(["EHLO c.example"], "EXPN staff", replies.S502_EXPN_DISABLED, id="EXPN-disabled-7.3"),
    pytest.param(["EHLO c.example"], "RSET", replies.S250_OK, id="RSET-4.1.1.5"),
    pytest.param(["EHLO c.example"], "RSET now", replies.S501_SYNTAX, id="RSET-argument"),
    pytest.param([], "FROB", replies.S500_UNRECOGNIZED, id="unknown-verb"),
    pytest.param([], "", replies.S500_BAD_SYNTAX, id="empty-line"),
    pytest.param(["EHLO c.example"], "AUTH PLAIN AGJvYgBzZWNyZXQ=", replies.S503_AUTH_NOT_ENABLED, id="AUTH-not-on-MX"),
    pytest.param([], "EHLO", replies.S501_SYNTAX, id="EHLO-no-name"),
    pytest.param([], "EHLO bad name", replies.S501_SYNTAX, id="EHLO-two-words"),
    pytest.param([], "EHLO [192.0.2.1]", None, id="EHLO-address-literal-4.1.3"),
    pytest.param([], "EHLO my_host", None, id="EHLO-underscore-lenient"),
    pytest.param([], "MAIL FROM:<a@example.org>", replies.S503_SEND_HELO_FIRST, id="MAIL-before-EHLO"),
    pytest.param(["EHLO c.example"], "RCPT TO:<b@example.org>", replies.S503_NEED_MAIL, id="RCPT-before-MAIL"),
    pytest.param(["EHLO c.example"], "DATA", replies.S503_NEED_MAIL, id="DATA-before-MAIL"),
    pytest.param(
        ["EHLO c.example", "MAIL FROM:<a@example.org>"], "DATA", replies.S554_NO_VALID_RECIPIENTS, id="DATA-no-RCPT-3.3"
    ),
    pytest.param(
        ["EHLO c.example", "MAIL FROM:<a@example.org>"],
        "MAIL FROM:<a@example.org>",
        replies.S503_NESTED_MAIL,
        id="nested-MAIL",
    ),
    pytest.param(
        ["EHLO c.example", "MAIL FROM:<a@example.org>"],
        "STARTTLS",
        replies.S503_TRANSACTION_IN_PROGRESS,
        id="STARTTLS-in-transaction",
    ),
    pytest.param(["EHLO c.example"], "STARTTLS now", replies.S501_SYNTAX, id="STARTTLS-argument"),
    pytest.param(["EHLO c.example"], "MAIL FROM:", replies.S501_BAD_SENDER, id="MAIL-empty-path"),
    pytest.param(["EHLO c.example"], "MAIL TO:<a@example.org>", replies.S501_SYNTAX, id="MAIL-without-FROM"),
    pytest.param(["EHLO c.example"], "MAIL FROM:<a@example.org", replies.S501_BAD_SENDER, id="MAIL-unclosed-path"),
    pytest.param(["EHLO c.example"], "MAIL FROM:<a@@example.org>", replies.S501_BAD_SENDER, id="MAIL-double-at"),
    pytest.param(["EHLO c.example"], "MAIL FROM:<a@example.org>x", replies.S501_BAD_SENDER, id="MAIL-junk-after-path"),
    pytest.param(["EHLO c.example"], "MAIL FROM:<>", replies.S250_SENDER_OK, id="MAIL-null-path-4.5.5"),
    pytest.param(["EHLO c.example"], "MAIL FROM: <a@example.org>", replies.S250_SENDER_OK, id="MAIL-space-lenient"),
    pytest.param(["EHLO c.example"], "mail from:<a@example.org>", replies.S250_SENDER_OK, id="verbs-case-insensitive"),
    pytest.param(["EHLO c.example"], "MAIL FROM:a@example.org", replies.S250_SENDER_OK, id="MAIL-no-brackets-lenient"),
    pytest.param(
        ["EHLO c.example"],
        "MAIL FROM:<a@example.org> FROB=1",
        replies.S555_UNSUPPORTED_PARAMETER,
        id="MAIL-unknown-parameter-4.1.1.11",
    ),
    pytest.param(
        ["EHLO c.example"], "MAIL FROM:<a@example.org> SIZE=big", replies.S501_SYNTAX, id="SIZE-not-a-number-1870"
    ),
    pytest.param(
        ["EHLO c.example"],
        "MAIL FROM:<a@example.org> SIZE=99999999999",
        replies.S552_TOO_BIG,
        id="SIZE-over-limit-1870-6.1",
    ),
    pytest.param(
        ["EHLO c.example"],
        "MAIL FROM:<a@example.org> SIZE=1000 SIZE=1000",
        replies.S501_SYNTAX,
        id="duplicate-parameter",
    ),
    pytest.param(
        ["EHLO c.example"], "MAIL FROM:<a@example.org> BODY=8BITMIME", replies.S250_SENDER_OK, id="BODY-8BITMIME-6152"
    ),
    pytest.param(
        ["EHLO c.example"],
        "MAIL FROM:<a@example.org> BODY=BINARYMIME",
        replies.S555_UNSUPPORTED_PARAMETER,
        id="BODY-BINARYMIME-not-offered-3030",
    ),
    pytest.param(
        ["EHLO c.example"],
        "MAIL FROM:<a@example.org> RET=HDRS ENVID=QQ+2Bx",
        replies.S250_SENDER_OK,
        id="DSN-RET-ENVID-3461",
    ),
    pytest.param(["EHLO c.example"], "MAIL FROM:<a@example.org> RET=ALL", replies.S501_SYNTAX, id="DSN-bad-RET"),
    pytest.param(
        ["EHLO c.example"], "MAIL FROM:<a@example.org> ENVID=a+zz", replies.S501_SYNTAX, id="DSN-bad-xtext-3461-4"
    ),
    pytest.param(
        ["EHLO c.example"], "MAIL FROM:<a@example.org> SMTPUTF8=yes", replies.S501_SYNTAX, id="SMTPUTF8-takes-no-value"
    ),
    pytest.param(
        ["EHLO c.example"],
        "MAIL FROM:<ålice@example.org>",
        replies.S553_NON_ASCII,
        id="UTF8-sender-needs-SMTPUTF8-6531",
    ),
    pytest.param(
        ["EHLO c.example"], "MAIL FROM:<ålice@exämple.org> SMTPUTF8", replies.S250_SENDER_OK, id="UTF8-sender-6531"
    ),
    pytest.param(
        ["EHLO c.example"],
        "MAIL FROM:<" + "a" * 250 + "@example.org>",
        replies.S501_PATH_TOO_LONG,
        id="path-too-long-4.5.3.1.3",
    ),
    pytest.param(
        ["EHLO c.example", "MAIL FROM:<a@example.org>"],
        "RCPT TO:<b@example.org",
        replies.S501_BAD_RECIPIENT,
        id="RCPT-unclosed-path",
    ),
    pytest.param(
        ["EHLO c.example", "MAIL FROM:<a@example.org>"],
        "RCPT <b@example.org>",
        replies.S501_SYNTAX,
        id="RCPT-without-TO",
    ),
    pytest.param(
        ["EHLO c.example", "MAIL FROM:<a@example.org>"],
        "RCPT TO:<>",
        replies.S501_BAD_RECIPIENT,
        id="RCPT-null-path",
    ),
    pytest.param(
        ["EHLO c.example", "MAIL FROM:<a@example.org>"],
        "RCPT TO:<" + "b" * 65 + "@example.org>",
        replies.S501_BAD_RECIPIENT,
        id="local-part-too-long-4.5.3.1.1",
    ),
    pytest.param(
        ["EHLO c.example", "MAIL FROM:<a@example.org>"],
        "RCPT TO:<b@example.org> FROB",
        replies.S555_UNSUPPORTED_PARAMETER,
        id="RCPT-unknown-parameter",
    ),
    pytest.param(
        ["EHLO c.example", "MAIL FROM:<a@example.org>"],
        "RCPT TO:<b@example.org> NOTIFY=NEVER,SUCCESS",
        replies.S501_SYNTAX,
        id="NOTIFY-NEVER-alone-3461-4.1",
    ),
    pytest.param(
        ["EHLO c.example", "MAIL FROM:<a@example.org>"],
        "RCPT TO:<b@exämple.org>",
        replies.S553_NON_ASCII,
        id="UTF8-recipient-needs-SMTPUTF8",
    ),
    pytest.param(["EHLO c.example"], "BDAT x", replies.S501_SYNTAX, id="BDAT-bad-size"),
    pytest.param(["EHLO c.example"], "DATA now", replies.S503_NEED_MAIL, id="DATA-state-before-argument"),
]


@pytest.mark.parametrize(("setup", "command", "expected"), CONVERSATIONS)
def test_each_command_gets_its_reply(wire, setup, command, expected):
    for line in setup:
        wire.send(line.encode() + b"\r\n")
        assert wire.code()[0] == 250, line
    wire.send(command.encode("utf-8") + b"\r\n")
    got = wire.code()
    if expected is None:
        assert got == (250, "")
    else:
        assert got == expect(expected)


def test_quit_says_goodbye_and_closes(wire):
    wire.send(b"QUIT\r\n")
    assert wire.code() == expect(replies.S221_BYE)  # RFC 5321 §4.1.1.10
    assert wire.closed()


@pytest.mark.parametrize(
    "request_line", [b"GET / HTTP/1.1", b"POST /x HTTP/1.0", b"CONNECT a:25 HTTP/1.1", b"Host: mx"]
)
def test_http_spoken_to_smtp_is_dropped(wire, request_line):
    # Postfix smtpd_forbidden_commands: cross-protocol requests end the session
    wire.send(request_line + b"\r\n")
    assert wire.code() == expect(replies.S221_HTTP)
    assert wire.closed()


def test_bdat_with_unreadable_size_ends_the_session(wire):
    # RFC 3030 §2: without a size we cannot find the next command
    wire.send(b"EHLO c.example\r\n")
    wire.reply()
    wire.send(b"BDAT many LAST\r\nhello")
    assert wire.code() == expect(replies.S501_SYNTAX)
    assert wire.closed()


# -- recipients ----------------------------------------------------------------------------


def rcpt(wire: Wire, address: str, sender: str = "a@example.org") -> tuple[int, str]:
    wire.send(f"EHLO c.example\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<{address}>\r\n".encode())
    wire.reply()
    assert wire.code()[0] == 250
    return wire.code()


def test_unknown_local_user_is_refused_at_rcpt(wire, domain):
    assert rcpt(wire, f"nobody@{domain}") == expect(replies.S550_NO_SUCH_USER)  # RFC 3463 X.1.1


def test_foreign_domain_is_refused_as_relaying(wire):
    assert rcpt(wire, "bob@example.net") == expect(replies.S554_RELAY_DENIED)  # DESIGN.md contract 6


def test_alias_catchall_plus_and_case_are_delivered_to_their_users(smtp, store, domain):
    bob, carol, dave = new_user(store, domain), new_user(store, domain), new_user(store, domain)
    store.accounts.add_alias(f"team@{domain}", [bob, carol])
    store.accounts.set_catchall(domain, dave)
    local, _ = bob.split("@")
    smtp.ehlo()
    recipients = [
        f"team@{domain}",
        f"{local}+news@{domain}",
        f"someone-else@{domain}",
        f"{local.upper()}@{domain.upper()}",
    ]
    assert smtp.sendmail("a@example.org", recipients, MESSAGE) == {}
    # bob is named three ways (alias, plus address, upper case) and receives one copy
    assert [client_bytes(m) for m in inbox(store, bob)] == [MESSAGE]
    assert [client_bytes(m) for m in inbox(store, carol)] == [MESSAGE]
    assert [client_bytes(m) for m in inbox(store, dave)] == [MESSAGE]


def test_duplicate_rcpt_is_one_recipient_and_for_clause_names_it(smtp, store, user):
    smtp.ehlo()
    assert smtp.sendmail("a@example.org", [user, user], MESSAGE) == {}
    (stored,) = inbox(store, user)
    assert f"for <{user}>;".encode() in split_trace(stored)[1]


def test_several_recipients_are_not_named_in_received(smtp, store, domain):
    bob, carol = new_user(store, domain), new_user(store, domain)
    smtp.ehlo()
    smtp.sendmail("a@example.org", [bob, carol], MESSAGE)
    for user in (bob, carol):
        (stored,) = inbox(store, user)
        assert b" for <" not in split_trace(stored)[1]


def test_bare_postmaster_without_a_local_host_domain_is_refused(wire):
    # RFC 5321 §4.1.1.3 <Postmaster>; our host name is no local domain in the tests (a deviation)
    assert rcpt(wire, "Postmaster") == expect(replies.S550_NO_SUCH_USER)


def test_transaction_with_some_refused_recipients_delivers_to_the_others(smtp, store, user, domain):
    smtp.ehlo()
    refused = smtp.sendmail("a@example.org", [user, f"ghost@{domain}", "x@example.net"], MESSAGE)
    assert {addr: code(reply) for addr, reply in refused.items()} == {
        f"ghost@{domain}": expect(replies.S550_NO_SUCH_USER),
        "x@example.net": expect(replies.S554_RELAY_DENIED),
    }
    assert len(inbox(store, user)) == 1


def test_recipient_removed_before_the_data_gets_550(wire, store, domain):
    # the delivery resolves again; nobody is left to deliver to (RFC 3463 X.1.1)
    user = new_user(store, domain)
    assert rcpt(wire, user) == expect(replies.S250_RECIPIENT_OK)
    store.remove_user(user)
    wire.send(b"DATA\r\n")
    assert wire.code() == (354, "")
    wire.send(MESSAGE + b".\r\n")
    assert wire.code() == expect(replies.S550_NO_LOCAL_RECIPIENT)


# -- content: 8BITMIME, SMTPUTF8, dot-stuffing, DSN ----------------------------------------------


def test_8bit_body_is_stored_exactly(smtp, store, user):
    body = b"From: a@example.org\r\nSubject: 8bit\r\n\r\n" + bytes(range(128, 256)) + b"\r\n"
    smtp.ehlo()
    assert smtp.sendmail("a@example.org", [user], body, mail_options=["BODY=8BITMIME"]) == {}
    (stored,) = inbox(store, user)
    assert client_bytes(stored) == body


def test_smtputf8_addresses_and_headers_are_stored_exactly(smtp, store, user):
    body = f"From: Ålice <ålice@exämple.org>\r\nTo: {user}\r\nSubject: Grüße, 你好\r\n\r\nÜnïcödé\r\n".encode()
    smtp.ehlo()
    assert smtp.sendmail("ålice@exämple.org", [user], body, mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    (stored,) = inbox(store, user)
    return_path, received, rest = split_trace(stored)
    assert rest == body
    assert return_path == "Return-Path: <ålice@exämple.org>\r\n".encode()
    assert b" with UTF8SMTP id " in received  # RFC 6531 §4.3


def test_dot_stuffed_lines_are_unstuffed(smtp, store, user):
    body = b"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\nend\r\n"
    smtp.ehlo()
    smtp.sendmail("a@example.org", [user], body)  # smtplib stuffs (RFC 5321 §4.5.2)
    (stored,) = inbox(store, user)
    assert client_bytes(stored) == body


def test_empty_message_and_missing_final_crlf(wire, store, user):
    assert rcpt(wire, user) == expect(replies.S250_RECIPIENT_OK)
    wire.send(b"DATA\r\n")
    assert wire.code() == (354, "")
    wire.send(b".\r\n")
    assert wire.code()[0] == 250
    (stored,) = inbox(store, user)
    assert client_bytes(stored) == b""


def test_dsn_parameters_travel_to_the_delivery(wire, gateway, monkeypatch, user):
    events: list[dict] = []
    functions = gateway.gateway.functions
    inner = functions.transport

    class Recording:
        def invoke(self, function, event):
            events.append(event)
            return inner.invoke(function, event)

    monkeypatch.setattr(functions, "transport", Recording())
    wire.send(b"EHLO c.example\r\nMAIL FROM:<a@example.org> RET=HDRS ENVID=QQ+2Bx\r\n")
    wire.reply()
    assert wire.code() == expect(replies.S250_SENDER_OK)
    wire.send(f"RCPT TO:<{user}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob+2Btag@example.org\r\n".encode())
    assert wire.code() == expect(replies.S250_RECIPIENT_OK)
    wire.send(b"DATA\r\n")
    assert wire.code() == (354, "")
    wire.send(MESSAGE + b".\r\n")
    assert wire.code()[0] == 250
    (deliver,) = [e for e in events if e["op"] == "deliver"]
    assert deliver["ret"] == "HDRS" and deliver["envid"] == "QQ+x"  # RFC 3461 §4.3, §4.4 (xtext decoded)
    assert deliver["notify"] == ["SUCCESS,FAILURE"]  # RFC 3461 §4.1
    assert deliver["orcpt"] == ["rfc822;Bob+tag@example.org"]  # RFC 3461 §4.2
    assert deliver["recipients"] == [user]


# -- PIPELINING (RFC 2920) ----------------------------------------------------------------------


def test_pipelined_transactions_get_replies_in_order(wire, store, domain):
    bob, carol = new_user(store, domain), new_user(store, domain)
    wire.send(b"EHLO c.example\r\n")
    wire.reply()
    # RFC 2920 §3.1: one group up to DATA; then the data; then a second transaction at once
    wire.send(
        f"MAIL FROM:<a@example.org>\r\nRCPT TO:<{bob}>\r\nRCPT TO:<ghost@{domain}>\r\nRCPT TO:<x@example.net>\r\nDATA\r\n".encode()
    )
    assert [wire.code() for _ in range(5)] == [
        expect(replies.S250_SENDER_OK),
        expect(replies.S250_RECIPIENT_OK),
        expect(replies.S550_NO_SUCH_USER),
        expect(replies.S554_RELAY_DENIED),
        (354, ""),
    ]
    wire.send(
        MESSAGE
        + b".\r\n"
        + f"RSET\r\nMAIL FROM:<>\r\nRCPT TO:<{carol}>\r\nBDAT {len(MESSAGE)} LAST\r\n".encode()
        + MESSAGE
        + b"NOOP\r\nQUIT\r\n"
    )
    assert [wire.code() for _ in range(7)] == [
        (250, "2.0.0"),
        expect(replies.S250_OK),
        expect(replies.S250_SENDER_OK),
        expect(replies.S250_RECIPIENT_OK),
        (250, "2.0.0"),
        expect(replies.S250_OK),
        expect(replies.S221_BYE),
    ]
    assert [client_bytes(m) for m in inbox(store, bob)] == [MESSAGE]
    (stored,) = inbox(store, carol)
    assert split_trace(stored)[0] == b"Return-Path: <>\r\n"  # the null reverse-path, RFC 5321 §4.5.5


def test_refused_data_in_a_pipeline_keeps_the_session_in_step(wire, domain):
    # RFC 2920 §3.1: all RCPTs refused, so DATA is refused and the client sends no data
    wire.send(f"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<ghost@{domain}>\r\nDATA\r\nNOOP\r\n".encode())
    wire.reply()
    assert [wire.code() for _ in range(4)] == [
        expect(replies.S250_SENDER_OK),
        expect(replies.S550_NO_SUCH_USER),
        expect(replies.S554_NO_VALID_RECIPIENTS),
        expect(replies.S250_OK),
    ]


# -- CHUNKING / BDAT (RFC 3030) ---------------------------------------------------------------------


def test_bdat_in_several_chunks_is_stored_verbatim(wire, store, user):
    # Chunks are octets: a CRLF.CRLF or a bare LF inside a chunk is content, not a terminator
    chunks = [b"Subject: chunks\r\n\r\nfirst part\r\n.\r\n", b"bare\nLF and bare\rCR\r\n", b"..not stuffed\r\n"]
    assert rcpt(wire, user) == expect(replies.S250_RECIPIENT_OK)
    for chunk in chunks:
        wire.send(f"BDAT {len(chunk)}\r\n".encode() + chunk)
        assert wire.code() == (250, "2.0.0")
    wire.send(b"BDAT 0 LAST\r\n")
    number, enhanced, lines = wire.reply()
    assert (number, enhanced) == (250, "2.0.0") and b"queued as" in lines[-1]
    (stored,) = inbox(store, user)
    assert client_bytes(stored) == b"".join(chunks)


def test_bdat_chunks_pipelined_in_one_packet(wire, store, user):
    wire.send(f"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<{user}>\r\n".encode())
    wire.reply()
    half = len(MESSAGE) // 2
    wire.send(
        f"BDAT {half}\r\n".encode() + MESSAGE[:half] + f"BDAT {len(MESSAGE) - half} LAST\r\n".encode() + MESSAGE[half:]
    )
    assert [wire.code()[0] for _ in range(4)] == [250, 250, 250, 250]
    assert [client_bytes(m) for m in inbox(store, user)] == [MESSAGE]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param([], replies.S503_SEND_HELO_FIRST, id="before-EHLO"),
        pytest.param(["EHLO c.example"], replies.S503_NEED_MAIL, id="before-MAIL"),
        pytest.param(["EHLO c.example", "MAIL FROM:<a@example.org>"], replies.S554_NO_VALID_RECIPIENTS, id="no-RCPT"),
    ],
)
def test_refused_bdat_still_consumes_its_chunk(wire, setup, expected):
    # RFC 3030 §2: the chunk is read even when the command is refused
    for line in setup:
        wire.send(line.encode() + b"\r\n")
        wire.reply()
    wire.send(b"BDAT 12 LAST\r\nNOOP\r\nNOOP\r\nNOOP\r\n")
    assert wire.code() == expect(expected)
    assert wire.code() == expect(replies.S250_OK)  # only the third NOOP is a command
    wire.send(b"QUIT\r\n")
    assert wire.code() == expect(replies.S221_BYE)


def test_data_after_bdat_is_refused(wire, user):
    assert rcpt(wire, user) == expect(replies.S250_RECIPIENT_OK)
    wire.send(b"BDAT 5\r\nhello")
    assert wire.code()[0] == 250
    wire.send(b"DATA\r\n")
    assert wire.code() == expect(replies.S503_DATA_AFTER_BDAT)  # RFC 3030 §3
    wire.send(b"RSET\r\n")
    assert wire.code() == expect(replies.S250_OK)


# -- STARTTLS (RFC 3207) -----------------------------------------------------------------------------


def tls_context(gateway) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(gateway.cert_file))
    context.check_hostname = False
    return context


def test_starttls_resets_the_session_and_is_recorded(smtp, gateway, store, user):
    smtp.ehlo()
    assert code(smtp.starttls(context=tls_context(gateway))) == (220, "2.0.0")
    # RFC 3207 §4.2: the server forgets the EHLO; the client must say it again
    assert code(smtp.docmd("MAIL", "FROM:<a@example.org>")) == expect(replies.S503_SEND_HELO_FIRST)
    smtp.ehlo()
    assert "starttls" not in smtp.esmtp_features  # RFC 3207 §4.2: not offered again
    assert code(smtp.docmd("STARTTLS")) == expect(replies.S503_TLS_ACTIVE)
    assert smtp.sendmail("a@example.org", [user], MESSAGE) == {}
    (stored,) = inbox(store, user)
    received = split_trace(stored)[1]
    assert b" with ESMTPS id " in received  # RFC 3848
    assert re.search(rb"\(using TLSv1\.[23] with cipher \S+ \(\d+ bits\)\)", received)


def test_commands_pipelined_after_starttls_are_refused(wire):
    # CVE-2011-0411: plaintext injected behind STARTTLS must never be read as if after TLS
    wire.send(b"EHLO c.example\r\n")
    wire.reply()
    wire.send(b"STARTTLS\r\nMAIL FROM:<evil@example.net>\r\n")
    assert wire.code() == expect(replies.S554_PIPELINED_STARTTLS)
    assert wire.closed()


def test_failed_tls_handshake_closes_only_that_connection(wire, gateway):
    wire.send(b"EHLO c.example\r\n")
    wire.reply()
    wire.send(b"STARTTLS\r\n")
    assert wire.code() == (220, "2.0.0")
    wire.send(b"this is not a TLS client hello\r\n" * 4)
    assert wire.closed()
    with smtplib.SMTP(*gateway.address("smtp"), timeout=10) as again:
        assert again.noop()[0] == 250


# -- the submission ports are not this issue's --------------------------------------------------------


