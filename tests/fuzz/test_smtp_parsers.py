"""SMTP's parsers over random and mutated input: a reply-carrying error or a value, never
another exception (issue #7). The line is routed as the session routes it (verb ->
argument parser); the dot-stuffing reader ends or reports the client gone, never hangs."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.smtp.auth import MECHANISMS, SaslError, decode_response, parse_auth_command
from gateway.smtp.grammar import (
    GrammarError,
    parse_bdat_command,
    parse_command_line,
    parse_ehlo_domain,
    parse_mail_command,
    parse_rcpt_command,
)
from gateway.smtp.submission import drop_auth_parameter
from gateway.wire.dotstuff import stuff
from gateway.wire.lines import ConnectionClosed
from tests.unit.test_smtp_data import receive

from .corpus import MESSAGES, SMTP_LINES, SMTP_TOKENS
from .mutations import fuzz_input, mutants

#: What a verb's argument goes through (gateway/smtp/protocol.py, submission.py).
ARGUMENT_PARSERS = {
    "EHLO": [parse_ehlo_domain],
    "HELO": [parse_ehlo_domain],
    "MAIL": [drop_auth_parameter, parse_mail_command],
    "RCPT": [parse_rcpt_command],
    "BDAT": [parse_bdat_command],
    "AUTH": [parse_auth_command],
}


def route(line: bytes) -> None:
    try:
        command = parse_command_line(line)
        for parse in ARGUMENT_PARSERS.get(command.verb, []):
            parse(command.argument)
    except GrammarError as error:
        assert 500 <= error.reply.code < 600
    except SaslError as error:
        assert 500 <= error.reply.code < 600


@settings(max_examples=1000)
@given(fuzz_input(SMTP_LINES, SMTP_TOKENS, max_size=1024))
def test_command_lines(line: bytes) -> None:
    route(line)


@settings(max_examples=300)
@given(st.sampled_from(sorted(ARGUMENT_PARSERS)), st.text(max_size=300))
def test_arguments_as_text(verb: str, argument: str) -> None:
    route(f"{verb} {argument}".encode("utf-8", "surrogatepass"))


@settings(max_examples=400)
@given(
    st.sampled_from(sorted(MECHANISMS)),
    st.lists(fuzz_input([b"AGEAYg==", b"dXNlcg==", b"="], [b"A", b"="], 256), max_size=3),
)
def test_sasl_exchanges(name: str, responses: list[bytes]) -> None:
    """RFC 4954 §4: each client response is base64 for the mechanism, which ends in
    credentials, the next challenge, or a SaslError."""
    mechanism = MECHANISMS[name]()
    try:
        mechanism.begin(None)
        for response in responses:
            if not isinstance(mechanism.respond(decode_response(response)), bytes):
                return
    except SaslError as error:
        assert 500 <= error.reply.code < 600


@settings(max_examples=300)
@given(
    st.one_of(
        mutants([stuff(m) for m in MESSAGES], [b"\r\n.\r\n", b"\n.\n", b"\r\n..", b"\r", b"."]), st.binary(max_size=600)
    )
)
def test_dot_stuffed_data(data: bytes) -> None:
    """RFC 5321 §4.1.1.4: the reader ends at CRLF.CRLF or, at EOF without it, says the
    client is gone; nothing else, and it never waits for more than EOF."""
    try:
        sink, _, rest = asyncio.run(receive([data]))
    except ConnectionClosed:
        assert b"\r\n.\r\n" not in b"\r\n" + data
        return
    assert sink.size <= len(data) + data.count(b"\n") and rest in data
