"""POP3 command lines and their arguments, parsed without I/O.

RFC 1939 §3: a command is a case-insensitive keyword, possibly followed by arguments,
separated by single spaces, ended by CRLF. RFC 2449 §4: a command line is at most 255
octets with its CRLF. Each parser raises :class:`Pop3Syntax`, which the session answers
with ``-ERR`` and goes on.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from gateway.pop3.replies import Pop3Syntax

#: RFC 2449 §4: 255 octets including the CRLF.
COMMAND_LINE_LIMIT = 255 - 2
#: A SASL client response (RFC 5034 §4) is not a command line; PLAIN with long
#: credentials fits comfortably in this policy bound.
SASL_LINE_LIMIT = 8192
#: RFC 2449 §3: keywords are three or four characters (we accept up to 8, then it is junk).
_KEYWORD = re.compile(r"[A-Za-z]{1,8}")
#: RFC 1939 §3 "msg": a message number; ten digits are more than any maildrop holds.
_NUMBER = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True)
class Command:
    verb: str
    arg: str


def parse_command(line: bytes) -> Command:
    """``b"RETR 1"`` -> ``Command("RETR", "1")``. The argument is the rest of the line after
    one space, as sent: PASS may carry spaces (RFC 1939 §7 PASS)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise Pop3Syntax("Command line is not valid UTF-8") from None
    keyword, _, arg = text.partition(" ")
    if not _KEYWORD.fullmatch(keyword):
        raise Pop3Syntax("Unknown command")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in arg):
        raise Pop3Syntax("Control characters in arguments")
    return Command(keyword.upper(), arg)


def parse_no_argument(arg: str) -> None:
    """Commands without arguments (STAT, NOOP, RSET, QUIT, CAPA, STLS); trailing blanks pass."""
    if arg.strip(" "):
        raise Pop3Syntax("This command takes no arguments")


def parse_msg(arg: str) -> int:
    """RFC 1939 §5 "msg": a decimal message number (range checks are the maildrop's)."""
    if not _NUMBER.fullmatch(arg):
        raise Pop3Syntax("Invalid message number")
    return int(arg)


def parse_optional_msg(arg: str) -> int | None:
    """LIST and UIDL take an optional message number (RFC 1939 §5 LIST, §7 UIDL)."""
    return None if not arg.strip(" ") else parse_msg(arg.rstrip(" "))


@dataclass(frozen=True)
class TopArguments:
    msg: int
    lines: int


def parse_top(arg: str) -> TopArguments:
    """RFC 1939 §7 TOP msg n: both required, n a non-negative number."""
    parts = arg.rstrip(" ").split(" ")
    if len(parts) != 2:
        raise Pop3Syntax("TOP needs a message number and a line count")
    msg = parse_msg(parts[0])
    if not _NUMBER.fullmatch(parts[1]):
        raise Pop3Syntax("Invalid line count")
    return TopArguments(msg, int(parts[1]))


def parse_user(arg: str) -> str:
    """RFC 1939 §7 USER name."""
    name = arg.strip(" ")
    if not name or " " in name:
        raise Pop3Syntax("USER needs one name")
    return name


@dataclass(frozen=True)
class AuthArguments:
    mechanism: str
    #: None: no initial response (the server sends an empty challenge); b"" for "=".
    initial_response: bytes | None


def parse_auth(arg: str) -> AuthArguments:
    """RFC 5034 §4: ``AUTH mechanism [initial-response]``; "=" is an empty initial response."""
    parts = arg.rstrip(" ").split(" ")
    if not parts[0] or len(parts) > 2:
        raise Pop3Syntax("AUTH needs a mechanism and at most an initial response")
    mechanism = parts[0].upper()
    if len(parts) == 1:
        return AuthArguments(mechanism, None)
    return AuthArguments(mechanism, parse_base64(parts[1]))


def parse_base64(text: str | bytes) -> bytes:
    """A SASL response: strict base64, or "=" for an empty one (RFC 5034 §4)."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    raw = raw.strip(b" ")
    if raw == b"=":
        return b""
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise Pop3Syntax("Invalid base64 in the SASL response") from None


@dataclass(frozen=True)
class PlainCredentials:
    authzid: str
    authcid: str
    password: str


def parse_plain(message: bytes) -> PlainCredentials:
    """RFC 4616 §2: ``[authzid] NUL authcid NUL passwd``, UTF-8, no NUL inside the parts."""
    parts = message.split(b"\x00")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise Pop3Syntax("Malformed PLAIN response")
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise Pop3Syntax("PLAIN response is not valid UTF-8") from None
    return PlainCredentials(authzid, authcid, password)
