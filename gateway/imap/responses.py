"""IMAP responses (RFC 3501 §7) and the errors that become them.

Handlers return a :class:`Response` (untagged data, optionally a stream of it, and the
tagged status) or raise an :class:`ImapError`; they never write to the socket. Error
taxonomy (STYLE.md): syntax is ``BAD``; a refusal is ``NO`` with an RFC 5530 response
code; a server failure is ``NO [UNAVAILABLE]`` with a correlation id that is also in the
logs, never an exception's text.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# RFC 5530 §3 response codes (and the RFC 3501 §7.1 ones we send).
UNAVAILABLE = "UNAVAILABLE"
AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"
AUTHORIZATIONFAILED = "AUTHORIZATIONFAILED"
PRIVACYREQUIRED = "PRIVACYREQUIRED"
NONEXISTENT = "NONEXISTENT"
ALREADYEXISTS = "ALREADYEXISTS"
TRYCREATE = "TRYCREATE"
CANNOT = "CANNOT"
NOPERM = "NOPERM"
INUSE = "INUSE"
LIMIT = "LIMIT"
CLIENTBUG = "CLIENTBUG"
SERVERBUG = "SERVERBUG"
EXPUNGEISSUED = "EXPUNGEISSUED"
TOOBIG = "TOOBIG"  # RFC 4469 §5, RFC 7889 §4
BADCHARSET = "BADCHARSET (US-ASCII UTF-8)"  # RFC 3501 §7.1


@dataclass
class Response:
    """What one command answers. ``untagged`` lines are complete (with CRLF); ``stream``
    yields more untagged data after them (FETCH); then the tagged status."""

    status: str = "OK"
    text: str = "Completed"
    code: str = ""
    untagged: list[bytes] = field(default_factory=list)
    stream: AsyncIterator[bytes] | None = None
    #: Counts against the session's bad-command budget.
    bad: bool = False
    #: The session ends once this is sent.
    close: bool = False
    #: RFC 3501 §6.2.1: TLS starts once the tagged OK is sent.
    starttls: bool = False
    #: RFC 2177: enter IDLE (the session sends "+ idling" and waits for DONE).
    idle: bool = False
    #: SASL (RFC 3501 §6.2.2): send ``+ <challenge>``, read one line, pass it here.
    continuation: Callable[[bytes], Awaitable[Response]] | None = None
    challenge: bytes = b""
    #: Untagged updates are held back while FETCH, STORE and SEARCH answer (RFC 3501 §7.4.1).
    expunge_allowed: bool = True
    #: The tag, for a refusal of a command that was never parsed whole ("*" if unknown).
    tag: str = ""
    #: Called once ``stream`` is exhausted: may still change the tagged status (FETCH of
    #: messages expunged meanwhile answers NO [EXPUNGEISSUED], RFC 2180 §4.1.2).
    finish: Callable[[Response], None] | None = None


def ok(text: str = "Completed", code: str = "", untagged: list[bytes] | None = None) -> Response:
    return Response("OK", text, code, untagged or [])


class ImapError(Exception):
    """A command that fails: rendered as a tagged ``NO`` (or ``BAD``)."""

    status = "NO"
    bad = False

    def __init__(self, text: str, code: str = "", *, close: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.close = close

    def response(self) -> Response:
        return Response(self.status, self.text, self.code, bad=self.bad, close=self.close)


class No(ImapError):
    """A refusal (RFC 3501 §7.1.2)."""


class Bad(ImapError):
    """A syntax error or a command in the wrong state (RFC 3501 §7.1.3)."""

    status = "BAD"
    bad = True


class Unavailable(No):
    """A function, S3 or the network failed: try again later (RFC 5530 UNAVAILABLE)."""

    def __init__(self, correlation_id: str) -> None:
        super().__init__(f"Temporary failure, try again later (ref {correlation_id})", UNAVAILABLE)


def server_error(what: str, error: BaseException) -> Unavailable:
    correlation = uuid.uuid4().hex[:12]
    log.error("imap %s: %s (correlation %s)", what, type(error).__name__, correlation)
    return Unavailable(correlation)


# -- rendering (RFC 3501 §4) -----------------------------------------------------------

_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")


def string(value: bytes | str) -> bytes:
    """RFC 3501 §4.3: a quoted string when it can be one, else a literal."""
    data = value.encode() if isinstance(value, str) else value
    if _QUOTABLE.fullmatch(data) and len(data) < 1024:
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n%s" % (len(data), data)


def nstring(value: bytes | str | None) -> bytes:
    return b"NIL" if value is None else string(value)


def tagged(tag: str, status: str, code: str, text: str) -> bytes:
    line = f"{tag} {status} " + (f"[{code}] " if code else "") + text
    return line.encode("utf-8", "replace").replace(b"\r", b" ").replace(b"\n", b" ") + b"\r\n"


def untagged(text: str) -> bytes:
    return f"* {text}\r\n".encode("utf-8", "replace")


def compact(numbers: Iterable[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``1:3,5`` (RFC 3501 §9 sequence-set; RFC 4315 uid-set)."""
    out: list[str] = []
    start = prev = None
    for n in sorted(numbers):
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start is not None:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)


def ordered_set(numbers: Iterable[int]) -> str:
    """Like :func:`compact` but keeping the order (RFC 4315 §3 COPYUID pairs sets)."""
    out: list[str] = []
    run: list[int] = []
    for n in numbers:
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1]}")
        run = [n]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}:{run[-1]}")
    return ",".join(out)
