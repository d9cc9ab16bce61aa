"""The SMTP grammar (RFC 5321 §4.1.2 and the ESMTP parameters), the reply catalog, the
trace fields and the routing rules, without sockets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.smtp import replies
from gateway.smtp.grammar import (
    GrammarError,
    Mailbox,
    MailParameters,
    decode_xtext,
    parse_bdat_command,
    parse_command_line,
    parse_ehlo_domain,
    parse_esmtp_parameters,
    parse_forward_path,
    parse_mail_command,
    parse_mail_parameters,
    parse_rcpt_command,
    parse_rcpt_parameters,
    parse_reverse_path,
)
from gateway.smtp.protocol import COMMANDS, dedup_key
from gateway.smtp.recipients import unroute
from gateway.smtp.session import State
from gateway.smtp.trace import TlsInfo, TraceInfo, received, return_path


def refused(parse, text: str) -> replies.Reply:
    with pytest.raises(GrammarError) as caught:
        parse(text)
    return caught.value.reply


# -- command lines (RFC 5321 §4.1.1) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "verb", "argument"),
    [
        (b"NOOP", "NOOP", ""),
        (b"noop", "NOOP", ""),  # verbs are case-insensitive
        (b"MAIL FROM:<a@b.example>", "MAIL", "FROM:<a@b.example>"),
        (b"MAIL  FROM:<a@b.example>  ", "MAIL", "FROM:<a@b.example>"),  # lenient white space
        (b"VRFY \tbob", "VRFY", "bob"),
    ],
)
def test_parse_command_line(line, verb, argument):
    command = parse_command_line(line)
    assert (command.verb, command.argument) == (verb, argument)


@pytest.mark.parametrize("line", [b"", b"   ", b"NO\x00OP", b"\xff", b"MAIL\x7f"])
def test_unreadable_command_lines_are_500(line):
    assert refused(parse_command_line, line) is replies.S500_BAD_SYNTAX


@pytest.mark.parametrize("name", ["mail.example.org", "[192.0.2.1]", "[IPv6:2001:db8::1]", "localhost", "my_host"])
def test_ehlo_accepts_domains_literals_and_hostnames(name):
    assert parse_ehlo_domain(name) == name


@pytest.mark.parametrize("name", ["", "two words", "[999.1.1.1]", "exämple.org", "semi;colon", "(comment)"])
def test_ehlo_refuses_other_words(name):
    assert refused(parse_ehlo_domain, name).code == 501


# -- paths (RFC 5321 §4.1.2) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "local", "domain", "route", "rest"),
    [
        pytest.param("<bob@example.org>", "bob", "example.org", (), "", id="plain"),
        pytest.param("<bob@example.org> SIZE=10", "bob", "example.org", (), " SIZE=10", id="with-parameters"),
        pytest.param("<b.o.b+tag@ex-ample.org>", "b.o.b+tag", "ex-ample.org", (), "", id="dot-string"),
        pytest.param('<"bob smith"@example.org>', '"bob smith"', "example.org", (), "", id="quoted-string"),
        pytest.param('<"a\\"b"@example.org>', '"a\\"b"', "example.org", (), "", id="quoted-pair"),
        pytest.param(
            "<@a.example,@b.example:bob@c.example>",
            "bob",
            "c.example",
            ("a.example", "b.example"),
            "",
            id="source-route-C",
        ),
        pytest.param("<bob@[192.0.2.1]>", "bob", "[192.0.2.1]", (), "", id="ipv4-literal-4.1.3"),
        pytest.param("<bob@[IPv6:::1]>", "bob", "[IPv6:::1]", (), "", id="ipv6-literal-4.1.3"),
        pytest.param("<bob@[x-tag:stuff]>", "bob", "[x-tag:stuff]", (), "", id="general-literal-4.1.3"),
        pytest.param("<ålice@exämple.org>", "ålice", "exämple.org", (), "", id="utf8-6531"),
        pytest.param("bob@example.org SIZE=1", "bob", "example.org", (), " SIZE=1", id="no-brackets-lenient"),
    ],
)
def test_parse_reverse_path(text, local, domain, route, rest):
    mailbox, remainder = parse_reverse_path(text)
    assert mailbox == Mailbox(local, domain, route)
    assert remainder == rest


def test_null_reverse_path():
    assert parse_reverse_path("<> BODY=8BITMIME") == (None, " BODY=8BITMIME")  # RFC 5321 §4.5.5


@pytest.mark.parametrize(
    "text",
    [
        "<>",
        "<bob>",
        "<bob@>",
        "<@example.org>",
        "<bob@example.org",
        "<bob@@example.org>",
        "<bob@.example.org>",
        "<bob@example..org>",
        "<bob@-example.org>",
        "<bob@example.org.>",
        '<"bob@example.org>',
        "<bob@[1.2.3]>",
        "<bob@[IPv6:zz::1]>",
        "<bo b@example.org>",
        "<@a:@b:bob@c>",
        "<a..b@example.org>",
        "<.a@example.org>",
    ],
)
def test_bad_forward_paths_are_501_5_1_3(text):
    assert refused(parse_forward_path, text) is replies.S501_BAD_RECIPIENT


def test_bad_reverse_path_is_501_5_1_7():
    assert refused(parse_reverse_path, "<bob@>") is replies.S501_BAD_SENDER


def test_path_limits():
    # RFC 5321 §4.5.3.1.3 path 256 octets; §4.5.3.1.1 local part 64 octets
    long_domain = ".".join(["d" * 60] * 4) + ".example"
    assert refused(parse_reverse_path, f"<bob@{long_domain}>") is replies.S501_PATH_TOO_LONG
    assert refused(parse_forward_path, f"<{'b' * 65}@example.org>").code == 501
    assert parse_forward_path(f"<{'b' * 64}@example.org>")[0].local_part == "b" * 64


def test_postmaster_without_domain():
    # RFC 5321 §4.1.1.3
    _, postmaster, rest = parse_forward_path("<POSTMASTER> NOTIFY=NEVER")
    assert postmaster and rest == " NOTIFY=NEVER"
    assert not parse_forward_path("<postmaster@example.org>")[1]


@pytest.mark.parametrize(
    ("mailbox", "unquoted"),
    [
        (Mailbox("bob", "x"), "bob"),
        (Mailbox('"bob"', "x"), "bob"),
        (Mailbox('"b\\"o\\\\b"', "x"), 'b"o\\b'),
        (Mailbox('"user@elsewhere"', "x"), "user@elsewhere"),
    ],
)
def test_unquoted_local_part(mailbox, unquoted):
    assert mailbox.unquoted_local_part == unquoted  # RFC 5322 §3.4.1


# -- parameters ---------------------------------------------------------------------------------


def test_mail_parameters():
    parameters = parse_mail_parameters(" size=1000 BODY=8bitmime SMTPUTF8 RET=hdrs ENVID=QQ+2B1")
    assert parameters == MailParameters(size=1000, body="8BITMIME", smtputf8=True, ret="HDRS", envid="QQ+1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("SIZE", replies.S501_SYNTAX, id="SIZE-without-value"),
        pytest.param("SIZE=-1", replies.S501_SYNTAX, id="SIZE-negative"),
        pytest.param("SIZE=" + "9" * 21, replies.S501_SYNTAX, id="SIZE-21-digits-1870"),
        pytest.param("BODY=BINARYMIME", replies.S555_UNSUPPORTED_PARAMETER, id="BINARYMIME-not-offered"),
        pytest.param("AUTH=<>", replies.S555_UNSUPPORTED_PARAMETER, id="AUTH-not-offered"),
        pytest.param("ENVID=" + "x" * 101, replies.S501_SYNTAX, id="ENVID-over-100-3461"),
        pytest.param("RET=NONE", replies.S501_SYNTAX, id="RET-bad"),
        pytest.param("=x", replies.S501_SYNTAX, id="no-keyword"),
        pytest.param("SIZE=1 size=2", replies.S501_SYNTAX, id="duplicate"),
    ],
)
def test_bad_mail_parameters(text, expected):
    assert refused(parse_mail_parameters, text).code == expected.code
    assert refused(parse_mail_parameters, text).enhanced == expected.enhanced


def test_rcpt_parameters():
    parameters = parse_rcpt_parameters(" NOTIFY=success,DELAY ORCPT=rfc822;bob+2Btag@example.org")
    assert parameters.notify == ("SUCCESS", "DELAY")
    assert parameters.orcpt == "rfc822;bob+tag@example.org"
    assert parse_rcpt_parameters(" NOTIFY=NEVER").notify == ("NEVER",)


@pytest.mark.parametrize(
    "text",
    [
        "NOTIFY=NEVER,DELAY",
        "NOTIFY=SOMETIMES",
        "NOTIFY=SUCCESS,SUCCESS",
        "NOTIFY",
        "ORCPT=bob@example.org",
        "ORCPT=rfc822;a+zz",
    ],
)
def test_bad_rcpt_parameters(text):
    assert refused(parse_rcpt_parameters, text).code == 501


def test_unknown_rcpt_parameter_is_555():
    assert refused(parse_rcpt_parameters, "FROB=1").code == 555  # RFC 5321 §4.1.1.11


def test_esmtp_value_may_not_contain_equals():
    assert refused(parse_esmtp_parameters, "A=b=c").code == 501


@given(st.binary(max_size=40))
def test_xtext_round_trip(raw):
    # RFC 3461 §4: xtext encodes every octet outside "!".."~", "+" and "="
    text = raw.decode("latin-1")
    encoded = "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in text)
    assert decode_xtext(encoded) == text


def test_mail_and_rcpt_commands():
    mail = parse_mail_command("FROM:<a@example.org> SIZE=5")
    assert mail.reverse_path == Mailbox("a", "example.org") and mail.parameters.size == 5
    rcpt = parse_rcpt_command("to: <b@example.org> NOTIFY=FAILURE")
    assert rcpt.forward_path == Mailbox("b", "example.org") and rcpt.parameters.notify == ("FAILURE",)
    assert refused(parse_mail_command, "FROM<a@example.org>").code == 501
    assert refused(parse_rcpt_command, "TO:<b@example.org>junk") is replies.S501_BAD_RECIPIENT


@pytest.mark.parametrize(
    ("argument", "size", "last"), [("0 LAST", 0, True), ("10", 10, False), ("10 last", 10, True), ("007", 7, False)]
)
def test_bdat_command(argument, size, last):
    command = parse_bdat_command(argument)
    assert (command.chunk_size, command.last) == (size, last)


@pytest.mark.parametrize(
    "argument", ["", "x", "-1", "10 FIRST", "1 LAST more", "9" * 19, "\uff11\uff12"]
)  # the last: full-width digits
def test_bad_bdat_command(argument):
    assert refused(parse_bdat_command, argument).code == 501


# -- routing in local parts (Postfix allow_percent_hack, swap_bangpath) -----------------------------------


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("user%elsewhere.example", ("user", "elsewhere.example")),
        ("a%b%c.example", ("a%b", "c.example")),  # the rightmost sign
        ("elsewhere.example!user", ("user", "elsewhere.example")),  # the first bang
        ("user@elsewhere.example", ("user", "elsewhere.example")),
        ("user%[192.0.2.1]", ("user", "[192.0.2.1]")),
        ("user%", None),
        ("%host.example", None),
        ("user%bad_host", None),
    ],
)
def test_unroute(local, expected):
    assert unroute(local) == expected


# -- replies (RFC 5321 §4.2.1, RFC 2034 §3) ----------------------------------------------------------------


def test_reply_rendering():
    assert replies.S250_OK.render() == b"250 2.0.0 Ok\r\n"
    multi = replies.Reply(250, "", ("mx.example", "PIPELINING", "CHUNKING"))
    assert multi.render() == b"250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
    assert replies.greeting("mx.example").render() == b"220 mx.example ESMTP\r\n"


def test_every_catalog_reply_has_an_enhanced_code_of_its_class():
    # RFC 3463 §3.1: the class digit of the enhanced code matches the reply's
    for name in dir(replies):
        value = getattr(replies, name)
        if isinstance(value, replies.Reply) and value.code not in (220, 354):
            assert value.enhanced.split(".")[0] == str(value.code)[0], name


def test_every_state_has_an_answer_for_every_command():
    for verb, spec in COMMANDS.items():
        for state in State:
            assert state in spec.states or state in spec.refusals, (verb, state)


# -- trace fields (RFC 5321 §4.4) -----------------------------------------------------------------------


def test_received_line_with_tls_and_one_recipient():
    info = TraceInfo(
        helo="client.example",
        client_ip="192.0.2.7",
        hostname="mx.example",
        esmtp=True,
        smtputf8=False,
        tls=TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256),
        transaction_id="abc-1",
        recipients=("bob@example.org",),
    )
    text = received(info, datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    assert text == (
        "Received: from client.example ([192.0.2.7])\r\n"
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))\r\n"
        "\tby mx.example (serverless-mail) with ESMTPS id abc-1\r\n"
        "\tfor <bob@example.org>; Thu, 26 Nov 2026 10:00:00 +0000\r\n"
    )


def test_received_line_plain_smtp_ipv6_several_recipients():
    info = TraceInfo("c", "2001:db8::1", "mx", False, False, None, "x-2", ("a@x", "b@x"))
    text = received(info, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert (
        text
        == "Received: from c ([IPv6:2001:db8::1])\r\n\tby mx (serverless-mail) with SMTP id x-2; Fri, 02 Jan 2026 03:04:05 +0000\r\n"
    )


def test_return_path():
    assert return_path(None) == "Return-Path: <>\r\n"
    assert return_path(Mailbox("a", "example.org")) == "Return-Path: <a@example.org>\r\n"


def test_dedup_key_depends_on_sender_and_content_only():
    assert dedup_key("a@x", "00") == dedup_key("a@x", "00")
    assert dedup_key("a@x", "00") != dedup_key("b@x", "00")
    assert dedup_key("a@x", "00") != dedup_key("a@x", "01")
