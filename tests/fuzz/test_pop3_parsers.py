"""POP3's parsers over random and mutated input: a command or Pop3Syntax (``-ERR``),
never another exception (issue #7). The argument goes where the session sends it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings

from gateway.pop3 import grammar
from gateway.pop3.replies import Pop3Syntax

from .corpus import POP3_LINES, POP3_TOKENS
from .mutations import fuzz_input


def _auth(arg: str) -> Any:
    auth = grammar.parse_auth(arg)
    return grammar.parse_plain(auth.initial_response) if auth.initial_response else auth


#: Verb -> what its handler parses (gateway/pop3/session.py).
ARGUMENT_PARSERS: dict[str, Callable[[str], Any]] = {
    "CAPA": grammar.parse_no_argument,
    "STLS": grammar.parse_no_argument,
    "QUIT": grammar.parse_no_argument,
    "STAT": grammar.parse_no_argument,
    "NOOP": grammar.parse_no_argument,
    "RSET": grammar.parse_no_argument,
    "USER": grammar.parse_user,
    "AUTH": _auth,
    "LIST": grammar.parse_optional_msg,
    "UIDL": grammar.parse_optional_msg,
    "RETR": grammar.parse_msg,
    "DELE": grammar.parse_msg,
    "TOP": grammar.parse_top,
}


@settings(max_examples=1000)
@given(fuzz_input(POP3_LINES, POP3_TOKENS, max_size=grammar.SASL_LINE_LIMIT // 4))
def test_command_lines(line: bytes) -> None:
    try:
        command = grammar.parse_command(line)
        assert command.verb.isupper() and command.verb.isalpha()
        parse = ARGUMENT_PARSERS.get(command.verb)
        if parse is not None:
            parse(command.arg)
    except Pop3Syntax as error:
        assert error.reply().ok is False


@settings(max_examples=500)
@given(fuzz_input([b"AGEAYg==", b"YQBiAGM=", b"=", b"*"], [b"A", b"=", b"AA"], max_size=1024))
def test_sasl_responses(line: bytes) -> None:
    """RFC 5034 §4: a continuation line is base64 of the PLAIN message, or an error."""
    with contextlib.suppress(Pop3Syntax):
        grammar.parse_plain(grammar.parse_base64(line))
