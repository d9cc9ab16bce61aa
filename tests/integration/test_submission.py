"""Message submission (RFC 6409) on 587 (STARTTLS) and 465 (implicit TLS, RFC 8314), driven
over real sockets with stdlib smtplib against the running gateway and the real functions.

Port 25 is the other side of the same rule (DESIGN.md contract 6: no open relay): it
never authenticates anybody and refuses every non-local recipient; that is proved in
``test_smtp_relay.py`` (``test_relay_attempts_are_refused``) and here only its refusal of
AUTH is checked.
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import email.utils
import json
import logging
import re
import secrets
import smtplib
import time
from collections.abc import Iterator

import pytest
from mailcore.accounting import count_requests

from gateway.smtp import replies
from gateway.smtp.auth import (
    S235_AUTHENTICATED,
    S454_TEMPORARY,
    S500_LINE_TOO_LONG,
    S501_BAD_BASE64,
    S501_CANCELLED,
    S503_ALREADY_AUTHENTICATED,
    S503_EHLO_FIRST,
    S503_IN_TRANSACTION,
    S504_UNKNOWN_MECHANISM,
    S530_AUTH_REQUIRED,
    S530_STARTTLS_FIRST,
    S535_FAILED,
)
from gateway.smtp.submission import (
    S553_NOT_OWNED,
    S553_UNSUPPORTED_RECIPIENT,
    SubmissionService,
    SubmissionSettings,
)
from tests.dnsserver import DnsServer
from tests.loopback import SINKS

from .conftest import new_user
from .test_smtp import Wire, code, expect, inbox, tls_context
from .test_smtp_faults import Faults, faults  # noqa: F401  (fixture)

# The loopback world (DNS server, remote MXs, the queue pump): tests/outbound.py.
pytest_plugins = ["tests.outbound"]

PASSWORD = "correct horse"
#: Kept small here; the default (1 s, SUBMISSION_AUTH_FAILURE_DELAY) is what production uses.
FAILURE_DELAY = 0.3
LISTENERS = ["submission", "submissions"]


@pytest.fixture(autouse=True, scope="module")
def submission_service(gateway) -> Iterator[SubmissionService]:
    """The service every submission connection of the session's gateway shares, with a
    short failure delay for these tests."""
    services = gateway.gateway.services
    previous = services.get("submission")
    service = services["submission"] = SubmissionService(settings=SubmissionSettings(FAILURE_DELAY))
    yield service
    if previous is None:
        services.pop("submission", None)
    else:
        services["submission"] = previous


def message(sender: str, to: str, *extra: str, body: str = "Hello from a mail client.") -> bytes:
    """A message as a mail client writes it; no Date or Message-ID unless ``extra`` has them."""
    head = [f"From: <{sender}>", f"To: <{to}>", f"Subject: submission {secrets.token_hex(4)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@contextlib.contextmanager
def connect(gateway, listener: str, tls: bool = True) -> Iterator[smtplib.SMTP]:
    """A client of ``listener``, after EHLO; over TLS (STARTTLS on 587, implicit on 465)."""
    host, port = gateway.address(listener)
    client: smtplib.SMTP
    if listener == "submissions":
        client = smtplib.SMTP_SSL(host, port, local_hostname="client.example", timeout=30, context=tls_context(gateway))
    else:
        client = smtplib.SMTP(host, port, local_hostname="client.example", timeout=30)
    try:
        client.ehlo()
        if tls and listener == "submission":
            assert code(client.starttls(context=tls_context(gateway))) == (220, "2.0.0")
            client.ehlo()
        yield client
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        client.close()


@contextlib.contextmanager
def logged_in(gateway, listener: str, user: str) -> Iterator[smtplib.SMTP]:
    with connect(gateway, listener) as client:
        assert code(client.login(user, PASSWORD)) == expect(S235_AUTHENTICATED)
        yield client


# -- before TLS: no AUTH, no MAIL (RFC 4954 §4, RFC 3207 §4, RFC 8314 §3) -------------------------


def test_587_offers_starttls_and_no_auth_before_tls(gateway):
    with connect(gateway, "submission", tls=False) as client:
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")  # RFC 4954 §4: no plaintext mechanisms without TLS


@pytest.mark.parametrize(
    "argument",
    [
        pytest.param("PLAIN {plain}", id="plain-initial-response"),
        pytest.param("PLAIN", id="plain-without-initial-response"),
        pytest.param("LOGIN", id="login"),
    ],
)
def test_auth_before_tls_is_refused_rfc3207_4(gateway, user, argument):
    with connect(gateway, "submission", tls=False) as client:
        reply = client.docmd("AUTH", argument.format(plain=b64(f"\0{user}\0{PASSWORD}")))
        assert code(reply) == expect(S530_STARTTLS_FIRST)
        assert reply[1].endswith(b"Must issue a STARTTLS command first")
        # and no challenge follows: the credentials never went out
        assert code(client.noop()) == expect(replies.S250_OK)


def test_mail_before_tls_is_refused(gateway, user):
    with connect(gateway, "submission", tls=False) as client:
        assert code(client.mail(user)) == expect(S530_STARTTLS_FIRST)


# -- after TLS, before AUTH ------------------------------------------------------------------


@pytest.mark.parametrize("listener", LISTENERS)
def test_auth_plain_login_is_offered_over_tls(gateway, listener):
    with connect(gateway, listener) as client:
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]  # RFC 4954 §3
        assert not client.has_extn("starttls")  # RFC 3207 §4.2 on 587; never on 465


@pytest.mark.parametrize("listener", LISTENERS)
def test_mail_before_auth_is_refused_rfc4954_6(gateway, user, listener):
    with connect(gateway, listener) as client:
        reply = client.mail(user)
        assert code(reply) == expect(S530_AUTH_REQUIRED)
        assert reply[1].endswith(b"Authentication required")
        assert code(client.rcpt(user)) == expect(replies.S503_NEED_MAIL)


def test_auth_before_ehlo_is_refused(gateway, user):
    host, port = gateway.address("submissions")
    with smtplib.SMTP_SSL(host, port, timeout=30, context=tls_context(gateway)) as client:
        assert code(client.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{PASSWORD}"))) == expect(
            replies.S503_SEND_HELO_FIRST
        )


def test_auth_after_helo_is_refused(gateway, user):
    with connect(gateway, "submissions") as client:
        client.helo("client.example")  # RFC 5321 §4.1.1.1: HELO negotiates no extensions
        assert code(client.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{PASSWORD}"))) == expect(S503_EHLO_FIRST)


# -- AUTH PLAIN and LOGIN (RFC 4954, RFC 4616, draft-murchison-sasl-login) -------------------------


def _plain(client: smtplib.SMTP) -> None:
    client.auth("PLAIN", client.auth_plain, initial_response_ok=True)  # AUTH PLAIN <response>


def _plain_continuation(client: smtplib.SMTP) -> None:
    client.auth("PLAIN", client.auth_plain, initial_response_ok=False)  # AUTH PLAIN, 334, <response>


def _login(client: smtplib.SMTP) -> None:
    client.auth("LOGIN", client.auth_login, initial_response_ok=False)  # 334 Username:, 334 Password:


def _login_initial_response(client: smtplib.SMTP) -> None:
    client.auth("LOGIN", client.auth_login, initial_response_ok=True)  # AUTH LOGIN <user>, 334 Password:


MECHANISMS = [
    pytest.param(_plain, id="PLAIN"),
    pytest.param(_plain_continuation, id="PLAIN-334-continuation"),
    pytest.param(_login, id="LOGIN"),
    pytest.param(_login_initial_response, id="LOGIN-initial-response"),
]


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_auth_succeeds_over_tls(gateway, user, listener, mechanism):
    with connect(gateway, listener) as client:
        client.user, client.password = user, PASSWORD
        mechanism(client)  # smtplib raises unless the reply is 235
        assert code(client.mail(user)) == expect(replies.S250_SENDER_OK)


def test_the_auth_replies_are_rfc4954s(gateway, user):
    with connect(gateway, "submission") as client:
        assert client.docmd("AUTH", "LOGIN") == (334, b64("Username:").encode())
        assert client.docmd(b64(user)) == (334, b64("Password:").encode())
        assert client.docmd(b64(PASSWORD)) == (235, b"2.7.0 Authentication successful")


@pytest.mark.parametrize("listener", LISTENERS)
def test_wrong_password_is_535_after_a_delay_and_a_retry_may_succeed(gateway, user, listener):
    with connect(gateway, listener) as client:
        started = time.monotonic()
        reply = client.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0wrong horse"))
        assert code(reply) == expect(S535_FAILED)  # RFC 4954 §6
        assert time.monotonic() - started >= FAILURE_DELAY
        # RFC 4954 §4: after a failed AUTH the client may try again
        assert code(client.login(user, PASSWORD)) == expect(S235_AUTHENTICATED)


@pytest.mark.parametrize(
    "response",
    [
        pytest.param("{other}\0{user}\0" + PASSWORD, id="authzid-of-another-user-rfc4616-2"),
        pytest.param("\0nobody@{domain}\0" + PASSWORD, id="unknown-user"),
        pytest.param("\0{user}\0", id="empty-password"),
        pytest.param("{user}\0" + PASSWORD, id="two-parts"),
        pytest.param("", id="empty-response"),
    ],
)
def test_bad_credentials_are_535(gateway, store, domain, user, response):
    other = new_user(store, domain)
    text = response.format(user=user, other=other, domain=domain)
    with connect(gateway, "submissions") as client:
        assert code(client.docmd("AUTH", "PLAIN " + (b64(text) or "="))) == expect(S535_FAILED)
        assert code(client.mail(user)) == expect(S530_AUTH_REQUIRED)


def test_own_address_as_authzid_is_accepted(gateway, user):
    with connect(gateway, "submissions") as client:
        assert code(client.docmd("AUTH", "PLAIN " + b64(f"{user}\0{user}\0{PASSWORD}"))) == expect(S235_AUTHENTICATED)


@pytest.mark.parametrize(
    ("exchange", "expected"),
    [
        pytest.param([("AUTH", "PLAIN not*base64")], S501_BAD_BASE64, id="initial-response-not-base64-rfc4954-4"),
        pytest.param([("AUTH", "PLAIN"), ("!!!!", "")], S501_BAD_BASE64, id="response-not-base64"),
        pytest.param([("AUTH", "PLAIN"), ("*", "")], S501_CANCELLED, id="star-cancels-rfc4954-4"),
        pytest.param([("AUTH", "LOGIN"), ("dXNlcg==", ""), ("*", "")], S501_CANCELLED, id="star-cancels-login"),
        pytest.param([("AUTH", "CRAM-MD5")], S504_UNKNOWN_MECHANISM, id="unknown-mechanism-rfc4954-4"),
        pytest.param([("AUTH", "")], replies.S501_SYNTAX, id="no-mechanism"),
        pytest.param([("AUTH", "PLAIN"), ("A" * 13000, "")], S500_LINE_TOO_LONG, id="response-too-long-5.5.6"),
    ],
)
def test_broken_exchanges(gateway, user, exchange, expected):
    with connect(gateway, "submissions") as client:
        for command, argument in exchange[:-1]:
            assert client.docmd(command, argument)[0] == 334
        command, argument = exchange[-1]
        reply = client.docmd(command, argument)
        assert (reply[0], code(reply)[1] if reply[0] >= 500 else "") == (expected.code, expected.enhanced)
        # the session goes on, unauthenticated
        assert code(client.mail(user)) == expect(S530_AUTH_REQUIRED)
        assert code(client.login(user, PASSWORD)) == expect(S235_AUTHENTICATED)


def test_auth_once_per_session_and_never_in_a_transaction_rfc4954_4(gateway, user):
    with logged_in(gateway, "submission", user) as client:
        assert code(client.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{PASSWORD}"))) == expect(S503_ALREADY_AUTHENTICATED)
        client.mail(user)
        assert code(client.docmd("AUTH", "LOGIN")) == expect(S503_IN_TRANSACTION)
        # the authentication survives RSET and a new EHLO
        client.rset()
        client.ehlo()
        assert code(client.mail(user)) == expect(replies.S250_SENDER_OK)


def test_auth_function_failure_is_454(gateway, user, faults):  # noqa: F811
    faults.fail("dynamodb.BatchGetItem")  # the AuthFunction's read of the user and its counters
    with connect(gateway, "submissions") as client:
        assert code(client.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{PASSWORD}"))) == expect(S454_TEMPORARY)
        assert faults.failed == ["dynamodb.BatchGetItem"]
        assert code(client.login(user, PASSWORD)) == expect(S235_AUTHENTICATED)


def test_credentials_are_never_logged(gateway, user, caplog, capfd):
    """STYLE.md: log redaction of credentials; the functions' logs (stdout) included."""
    caplog.set_level(logging.DEBUG, logger="gateway")
    caplog.set_level(logging.DEBUG, logger="mailcore")
    secret = f"{PASSWORD} {secrets.token_hex(4)}"
    forms = {secret, b64(secret), b64(f"\0{user}\0{secret}"), b64(f"\0{user}\0{PASSWORD}"), b64(PASSWORD)}
    with connect(gateway, "submission") as client:
        client.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{secret}"))  # wrong
        client.docmd("AUTH", "LOGIN")
        client.docmd(b64(user))
        client.docmd(b64(secret))  # wrong
        client.login(user, PASSWORD)  # right
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    output = "".join(capfd.readouterr())
    assert "AUTH PLAIN failed" in logged and f"AUTH PLAIN succeeded: {user}" in logged
    for form in forms:
        assert form not in logged
        assert form not in output


# -- the envelope: sender (RFC 6409 §6.1) and recipients -------------------------------------------


def test_a_sender_the_user_does_not_own_is_553_5_7_1(gateway, store, domain, user):
    other = new_user(store, domain)
    to = new_user(store, domain)
    with logged_in(gateway, "submission", user) as client:
        client.mail(other)
        assert code(client.rcpt(to)) == expect(replies.S250_RECIPIENT_OK)
        reply = client.data(message(other, to))
        assert code(reply) == expect(S553_NOT_OWNED)
        # nothing was delivered, and the session goes on
        assert inbox(store, to) == []
        assert code(client.mail(user))[0] == 250


@pytest.mark.parametrize(
    "sender",
    [
        pytest.param("<{local}@[127.0.0.1]>", id="address-literal"),
        pytest.param('<"{local} x"@{domain}>', id="quoted-string"),
    ],
)
def test_a_sender_nobody_can_own_is_553_at_mail(gateway, user, sender):
    local, domain = user.split("@")
    with logged_in(gateway, "submissions", user) as client:
        assert code(client.docmd("MAIL", "FROM:" + sender.format(local=local, domain=domain))) == expect(S553_NOT_OWNED)
        assert code(client.mail(user))[0] == 250  # no transaction was left open


def test_aliases_plus_addresses_and_the_null_sender_are_the_users(gateway, store, domain, user):
    store.accounts.add_alias(f"team@{domain}", [user])
    local = user.split("@")[0]
    to = new_user(store, domain)
    with logged_in(gateway, "submission", user) as client:
        for sender in (f"team@{domain}", f"{local}+lists@{domain}", f"team+x@{domain}", ""):
            assert client.sendmail(sender, [to], message(sender or user, to)) == {}
    assert len(inbox(store, to)) == 4


def test_local_recipients_must_exist_remote_ones_are_accepted(gateway, store, domain, user):
    with logged_in(gateway, "submission", user) as client:
        client.mail(user)
        assert code(client.rcpt(f"nobody@{domain}")) == expect(replies.S550_NO_SUCH_USER)
        assert code(client.rcpt(f"friend@{secrets.token_hex(4)}.example")) == expect(replies.S250_RECIPIENT_OK)
        assert code(client.rcpt("friend@[192.0.2.1]")) == expect(S553_UNSUPPORTED_RECIPIENT)
        assert code(client.rcpt(user)) == expect(replies.S250_RECIPIENT_OK)


def test_a_domain_known_not_to_be_ours_costs_no_further_resolve(gateway, monkeypatch, store, domain, user):
    # GIVEN the gateway's calls to the functions, counted
    functions = gateway.gateway.functions
    inner = functions.transport
    resolves: list[str] = []

    class Counting:
        def invoke(self, function, event):
            if event.get("op") == "resolve":
                resolves.append(event["recipient"])
            return inner.invoke(function, event)

    monkeypatch.setattr(functions, "transport", Counting())
    remote = f"{secrets.token_hex(4)}.example"
    with logged_in(gateway, "submission", user) as client:
        client.mail(user)
        # WHEN a user names three recipients at a domain that is not ours, and one of ours
        for rcpt in (f"a@{remote}", f"B@{remote.upper()}", f"c@{remote}", f"nobody@{domain}"):
            assert code(client.rcpt(rcpt))[0] in (250, 550)
    # THEN only the first at that domain asked the IngestFunction (its answer is kept as
    # long as the function keeps a refusal); our domain is asked every time
    assert resolves == [f"a@{remote}", f"nobody@{domain}"]
    # AND on port 25 a relay probe to another such domain is refused, asked once
    resolves.clear()
    probed = f"{secrets.token_hex(4)}.example"
    with connect(gateway, "smtp", tls=False) as client:
        client.mail("someone@example.org")
        for rcpt in (f"x@{probed}", f"y@{probed}"):
            assert code(client.rcpt(rcpt)) == expect(replies.S554_RELAY_DENIED)
    assert resolves == [f"x@{probed}"]


def test_the_auth_parameter_of_mail_is_accepted_rfc4954_5(gateway, user):
    with logged_in(gateway, "submission", user) as client:
        assert code(client.mail(user, ["AUTH=<>"])) == expect(replies.S250_SENDER_OK)
        client.rset()
        assert code(client.mail(user, [f"AUTH={user}", "BODY=8BITMIME"])) == expect(replies.S250_SENDER_OK)
        client.rset()
        assert code(client.mail(user, ["AUTH=a+2"])) == expect(replies.S501_SYNTAX)  # not xtext


def test_port_25_never_offers_or_accepts_auth(gateway, user):
    """DESIGN.md contract 6. Relaying without AUTH on port 25 is refused for every form of
    address: test_smtp_relay.py::test_relay_attempts_are_refused."""
    with smtplib.SMTP(*gateway.address("smtp"), local_hostname="client.example", timeout=30) as client:
        client.ehlo()
        client.starttls(context=tls_context(gateway))
        client.ehlo()
        assert not client.has_extn("auth")
        assert code(client.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{PASSWORD}"))) == expect(
            replies.S503_AUTH_NOT_ENABLED
        )
        client.mail(user)
        assert code(client.rcpt(f"friend@{secrets.token_hex(4)}.example")) == expect(replies.S554_RELAY_DENIED)


# -- the message: local delivery, the queue, the remote MX ------------------------------------------


def parse(raw: bytes) -> email.message.Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_message_to_a_local_recipient_lands_in_their_inbox(gateway, store, domain, user, listener):
    to = new_user(store, domain)
    sent = message(user, to)
    with logged_in(gateway, listener, user) as client:
        assert client.sendmail(user, [to], sent) == {}
    (stored,) = inbox(store, to)
    # Return-Path from the final delivery (RFC 5321 §4.4), then our Received line
    assert stored.startswith(f"Return-Path: <{user}>\r\nReceived: from client.example ([127.0.0.1])\r\n".encode())
    received = stored.split(b"\r\n", 1)[1].split(b"\r\nFrom: ", 1)[0]
    assert re.search(rb"\(using TLSv1\.[23] with cipher \S+ \(\d+ bits\)\)", received)
    assert b" with ESMTPSA id " in received  # RFC 3848 §2: authenticated, over TLS
    assert f"for <{to}>".encode() in received
    # RFC 6409 §8.2, §8.3: Date and Message-ID added, nothing else changed
    parsed = parse(stored)
    assert parsed["Message-ID"].endswith(f"@{store.settings.mail_hostname}>")
    assert email.utils.parsedate_to_datetime(parsed["Date"])
    client_part = stored[stored.index(b"From: ") :]
    assert re.sub(rb"Date: .*\r\nMessage-ID: .*\r\n", b"", client_part) == sent


def test_date_and_message_id_of_the_client_are_kept(gateway, store, domain, user):
    to = new_user(store, domain)
    sent = message(user, to, "Date: Thu, 26 Nov 2026 10:00:00 +0000", "Message-ID: <mine@client.example>")
    with logged_in(gateway, "submissions", user) as client:
        client.sendmail(user, [to], sent)
    (stored,) = inbox(store, to)
    assert stored.endswith(sent)
    assert parse(stored)["Message-ID"] == "<mine@client.example>"


def test_a_retried_submission_is_delivered_once(gateway, store, domain, user):
    # RFC 5321 §4.1.1.4: a client that never saw the 250 sends the same bytes again
    to = new_user(store, domain)
    sent = message(user, to)
    for _ in range(2):
        with logged_in(gateway, "submission", user) as client:
            client.sendmail(user, [to], sent)
    (stored,) = inbox(store, to)
    assert stored.endswith(sent.split(b"\r\n\r\n", 1)[1])


@pytest.fixture
def zone(dns_server: DnsServer):
    return dns_server.zone


def remote_domain(zone, address: str = SINKS[0]) -> str:
    """A new remote domain whose MX is the loopback SMTP server at ``address``."""
    domain = f"r{secrets.token_hex(5)}.test"
    zone.add(domain, "MX", f"10 mx.{domain}.")
    zone.add(f"mx.{domain}", "A", address)
    return domain


@pytest.mark.parametrize("listener", LISTENERS)
def test_a_message_to_a_remote_recipient_is_queued_then_relayed_to_its_mx(
    gateway, store, domain, user, zone, pump, relay_env, listener
):
    rcpt = f"friend@{remote_domain(zone)}"
    sent = message(user, rcpt)
    with logged_in(gateway, listener, user) as client:
        assert client.sendmail(user, [rcpt], sent) == {}
    # THEN one record waits in the OutboundQueue for the domain (the 250 came after it was queued)
    (record,) = pump.receive()
    body = json.loads(record["Body"])
    assert (body["op"], body["sender"], body["recipients"]) == ("relay", user, [rcpt])
    assert relay_env.received(rcpt) == []
    # WHEN the RelayFunction runs on it THEN the loopback MX has the message, once
    pump.deliver([record])
    (got,) = relay_env.received(rcpt)
    assert (got.sender, got.recipients) == (user, [rcpt])
    assert not got.data.startswith(b"Return-Path:")  # RFC 5321 §4.4: not ours to add
    assert got.data.startswith(b"Received: from client.example ([127.0.0.1])")
    assert b" with ESMTPSA id " in got.data.split(b"\r\nFrom: ", 1)[0]
    parsed = parse(got.data)
    assert parsed["Message-ID"] == body["message_id"] and parsed["Date"]  # RFC 6409 §8
    assert got.data.replace(b"\r\n", b"\n").endswith(b"\n\nHello from a mail client.\n")
    assert pump.run() == 0


def test_local_and_remote_recipients_of_one_message(gateway, store, domain, user, zone, pump, relay_env):
    to, rcpt = new_user(store, domain), f"friend@{remote_domain(zone, SINKS[1])}"
    with logged_in(gateway, "submissions", user) as client:
        assert client.sendmail(user, [to, rcpt], message(user, f"{to}, {rcpt}")) == {}
    assert pump.run() == 1
    (got,) = relay_env.received(rcpt)
    (stored,) = inbox(store, to)
    # the same completed message: the local copy only adds the Return-Path (RFC 5321 §4.4)
    assert stored == f"Return-Path: <{user}>\r\n".encode() + got.data


def test_a_queue_failure_is_451_and_the_retry_is_relayed_once(gateway, user, zone, pump, relay_env, faults):  # noqa: F811
    rcpt = f"friend@{remote_domain(zone)}"
    sent = message(user, rcpt)
    faults.fail("sqs.SendMessage")
    faults.fail("sqs.SendMessageBatch")
    with logged_in(gateway, "submission", user) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(user, [rcpt], sent)
        assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (451, b"4.3.0")
        assert client.sendmail(user, [rcpt], sent) == {}  # the client's retry
    assert len(faults.failed) == 1
    pump.run()
    assert len(relay_env.received(rcpt)) == 1


def test_bdat_over_implicit_tls(gateway, store, domain, user):
    """RFC 3030 on the submission path (the same sink and hooks as DATA)."""
    to = new_user(store, domain)
    sent = message(user, to)
    wire = Wire(gateway.address("submissions"))
    context = tls_context(gateway)
    wire.sock = context.wrap_socket(wire.sock)
    try:
        assert wire.code() == (220, "")
        wire.send(b"EHLO client.example\r\n")
        assert any(line.endswith(b"CHUNKING") for line in wire.reply()[2])
        wire.send(f"AUTH PLAIN {b64(chr(0) + user + chr(0) + PASSWORD)}\r\n".encode())
        assert wire.code() == expect(S235_AUTHENTICATED)
        wire.send(f"MAIL FROM:<{user}>\r\nRCPT TO:<{to}>\r\n".encode())
        assert [wire.code(), wire.code()] == [expect(replies.S250_SENDER_OK), expect(replies.S250_RECIPIENT_OK)]
        half = len(sent) // 2
        wire.send(f"BDAT {half}\r\n".encode() + sent[:half])
        assert wire.code()[0] == 250
        wire.send(f"BDAT {len(sent) - half} LAST\r\n".encode() + sent[half:])
        assert wire.code() == expect(replies.S250_QUEUED)
    finally:
        wire.close()
    (stored,) = inbox(store, to)
    assert parse(stored)["Subject"] == parse(sent)["Subject"]


def test_a_submission_costs_a_known_number_of_requests(gateway, store, domain, user, zone, pump, relay_env):
    """DESIGN.md contract 4, for one 4 KB message to one remote recipient on a session that
    is already authenticated and whose recipient was resolved before (the steady state)."""
    rcpt = f"friend@{remote_domain(zone)}"
    sent = message(user, rcpt, body="A line of text, to make it four kilobytes.\r\n" * 93)
    with logged_in(gateway, "submission", user) as client:
        client.sendmail(user, [rcpt], sent)
        pump.run()
        with count_requests() as submitting:
            client.sendmail(user, [rcpt], sent.replace(b"Subject: ", b"Subject: again "))
    with count_requests() as relaying:
        assert pump.run() == 1
    # resolve: cached; submit: the domain known to be remote (no BatchGetItem), 1 SendMessage;
    # the bytes inline
    assert submitting.snapshot() == {"sqs.SendMessage": 1}
    # relay: marker read, marker write, the MessageSent event (and the DKIM key lookup)
    relay = relaying.snapshot()
    assert relay.pop("ssm.GetParameter", 0) <= 1
    assert relay == {"dynamodb.BatchGetItem": 1, "dynamodb.PutItem": 1, "eventbridge.PutEvents": 1}
    assert len(relay_env.received(rcpt)) == 2


def test_465_speaks_nothing_before_the_tls_handshake(gateway):
    """RFC 8314 §3.3: on 465 the TLS handshake comes first; plain text gets no SMTP reply."""
    wire = Wire(gateway.address("submissions"), timeout=10)
    received = b""
    try:
        wire.send(b"EHLO client.example\r\n")
        with contextlib.suppress(ConnectionError, TimeoutError):
            while chunk := wire.sock.recv(4096):
                received += chunk
    finally:
        wire.close()
    assert not re.search(rb"(^|\n)[245]\d\d[ -]", received)
