"""POP3 parsing and content transforms, with no sockets: the grammar (RFC 1939 §3, RFC 2449
§4, RFC 5034 §4, RFC 4616 §2), dot-stuffing over chunks (RFC 1939 §3) and TOP (§7)."""

from __future__ import annotations

import asyncio
import base64
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.pop3 import grammar
from gateway.pop3.content import Stuffer, TopCutter, stuff_message, stuffed, top
from gateway.pop3.replies import Pop3Syntax, Reply
from gateway.wire.dotstuff import stuff

# -- grammar --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "verb", "arg"),
    [
        (b"STAT", "STAT", ""),
        (b"stat", "STAT", ""),  # RFC 1939 §3: keywords are case-insensitive
        (b"RETR 1", "RETR", "1"),
        (b"PASS correct horse ", "PASS", "correct horse "),  # RFC 1939 §7: spaces belong to the password
        (b"TOP 1 10", "TOP", "1 10"),
        (b"USER j\xc3\xb6rg@example.org", "USER", "jörg@example.org"),
    ],
)
def test_parse_command(line, verb, arg):
    assert grammar.parse_command(line) == grammar.Command(verb, arg)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b" STAT", id="leading-space"),
        pytest.param(b"ST4T", id="digit-in-keyword"),
        pytest.param(b"VERYLONGKEYWORD", id="keyword-too-long"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"RETR \x01", id="control-character"),
    ],
)
def test_parse_command_refuses(line):
    with pytest.raises(Pop3Syntax):
        grammar.parse_command(line)


@pytest.mark.parametrize(("arg", "value"), [("1", 1), ("0", 0), ("0007", 7), ("4294967296", 4294967296)])
def test_parse_msg(arg, value):
    assert grammar.parse_msg(arg) == value


@pytest.mark.parametrize("arg", ["", "x", "-1", "+1", "1.0", " 1", "1 ", "12345678901", "\uff11"])
def test_parse_msg_refuses(arg):
    # RFC 1939 §5: a message number is a decimal number of ASCII digits (not a fullwidth one).
    with pytest.raises(Pop3Syntax):
        grammar.parse_msg(arg)


def test_parse_optional_msg():
    assert grammar.parse_optional_msg("") is None
    assert grammar.parse_optional_msg("  ") is None
    assert grammar.parse_optional_msg("3") == 3
    with pytest.raises(Pop3Syntax):
        grammar.parse_optional_msg("1 2")


@pytest.mark.parametrize(("arg", "expected"), [("1 0", (1, 0)), ("2 10", (2, 10)), ("2 10 ", (2, 10))])
def test_parse_top(arg, expected):
    args = grammar.parse_top(arg)
    assert (args.msg, args.lines) == expected


@pytest.mark.parametrize("arg", ["", "1", "1 x", "1 -1", "x 1", "1 2 3", "1  2"])
def test_parse_top_refuses(arg):
    with pytest.raises(Pop3Syntax):
        grammar.parse_top(arg)


def test_parse_auth():
    assert grammar.parse_auth("plain") == grammar.AuthArguments("PLAIN", None)
    assert grammar.parse_auth("PLAIN =") == grammar.AuthArguments("PLAIN", b"")  # RFC 5034 §4
    assert grammar.parse_auth("PLAIN AGEAYg==") == grammar.AuthArguments("PLAIN", b"\0a\0b")
    for bad in ("PLAIN !!!", "PLAIN a b", " PLAIN"):
        with pytest.raises(Pop3Syntax):
            grammar.parse_auth(bad)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"\0bob@example.org\0secret", ("", "bob@example.org", "secret")),
        (b"bob@example.org\0bob@example.org\0pass word", ("bob@example.org", "bob@example.org", "pass word")),
        ("\0jörg\0pässwort".encode(), ("", "jörg", "pässwort")),
    ],
)
def test_parse_plain(message, expected):
    # RFC 4616 §2: [authzid] NUL authcid NUL passwd.
    credentials = grammar.parse_plain(message)
    assert (credentials.authzid, credentials.authcid, credentials.password) == expected


@pytest.mark.parametrize("message", [b"", b"user\0pass", b"\0\0pass", b"\0user\0", b"a\0b\0c\0d", b"\0\xff\0x"])
def test_parse_plain_refuses(message):
    with pytest.raises(Pop3Syntax):
        grammar.parse_plain(message)


def test_parse_base64_is_strict():
    assert grammar.parse_base64(base64.b64encode(b"x").decode()) == b"x"
    assert grammar.parse_base64(b"=") == b""
    with pytest.raises(Pop3Syntax):
        grammar.parse_base64("eA")  # missing padding


def test_reply_status_lines():
    assert Reply(True).status_line() == b"+OK\r\n"
    assert Reply(False, "Authentication failed", code="AUTH").status_line() == b"-ERR [AUTH] Authentication failed\r\n"
    assert Reply(True, "2 320").status == "+OK 2 320"


# -- dot-stuffing and TOP over chunks --------------------------------------------------------

#: Messages made of lines that like to start with dots, with CRLF or bare LF ends.
_lines = st.lists(
    st.tuples(st.sampled_from([b"", b".", b"..", b". x", b"a.b", b"x", b"\r"]), st.sampled_from([b"\r\n", b"\n"])),
    max_size=12,
)
messages = st.builds(lambda parts, tail: b"".join(a + b for a, b in parts) + tail, _lines, st.sampled_from([b"", b"end", b"."]))


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@given(messages, st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_stuffer_over_any_chunking_equals_stuff(data, cuts):
    stuffer = Stuffer()
    out = b"".join(stuffer.feed(chunk) for chunk in split_at(data, cuts)) + stuffer.finish()
    assert out == stuff(data)


@given(messages)
def test_stuff_message_equals_the_wire_codec(data):
    assert stuff_message(data) == stuff(data)


@given(messages)
def test_stuffed_data_unstuffs_to_the_original(data):
    wire = stuff(data)
    assert wire.endswith(b"\r\n.\r\n") or wire == b".\r\n"
    body = wire[: -len(b".\r\n")]
    lines = body.split(b"\n")
    assert all(not line.startswith(b".") or line.startswith(b"..") for line in lines)
    unstuffed = b"\n".join(line[1:] if line.startswith(b".") else line for line in lines)
    assert unstuffed in (data, data + b"\r\n")


@given(messages, st.integers(min_value=0, max_value=15), st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_top_cutter_over_any_chunking_equals_top(data, n, cuts):
    cutter = TopCutter(n)
    assert b"".join(cutter.feed(chunk) for chunk in split_at(data, cuts)) == top(data, n)


@pytest.mark.parametrize(
    ("data", "n", "expected"),
    [
        (b"A: 1\r\nB: 2\r\n\r\nx\r\ny\r\nz\r\n", 0, b"A: 1\r\nB: 2\r\n\r\n"),
        (b"A: 1\r\nB: 2\r\n\r\nx\r\ny\r\nz\r\n", 2, b"A: 1\r\nB: 2\r\n\r\nx\r\ny\r\n"),
        (b"A: 1\r\n\r\nx\r\ny", 5, b"A: 1\r\n\r\nx\r\ny"),
        (b"A: 1\r\nB: 2\r\n", 3, b"A: 1\r\nB: 2\r\n"),  # no body: all header
        (b"\r\nbody\r\nmore\r\n", 1, b"\r\nbody\r\n"),  # empty header
        (b"A: 1\n\nx\ny\n", 1, b"A: 1\n\nx\n"),  # bare LF
        (b"A: 1\r\n\r\n\r\n\r\nz\r\n", 2, b"A: 1\r\n\r\n\r\n\r\n"),  # blank body lines count
    ],
    ids=["zero", "two", "short-body", "header-only", "empty-header", "bare-lf", "blank-body-lines"],
)
def test_top(data, n, expected):
    # RFC 1939 §7 TOP: the header, the blank line, then n lines of the body.
    assert top(data, n) == expected


def test_stuffed_stops_reading_once_top_is_cut():
    read: list[bytes] = []

    async def source():
        for chunk in (b"A: 1\r\n\r\n", b"one\r\n", b"two\r\n", b"three\r\n"):
            read.append(chunk)
            yield chunk

    async def collect() -> bytes:
        return b"".join([c async for c in stuffed(source(), TopCutter(1))])

    assert asyncio.run(collect()) == b"A: 1\r\n\r\none\r\n.\r\n"
    assert read == [b"A: 1\r\n\r\n", b"one\r\n"]
