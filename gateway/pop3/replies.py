"""POP3 replies and the errors that become them.

A reply is a status line (``+OK`` / ``-ERR``, RFC 1939 §3), optionally with a response
code in brackets (RFC 2449 §8) and a multi-line body that is already dot-stuffed and
terminated. Handlers return replies or raise :class:`Pop3Error`; they never write.

Error taxonomy (STYLE.md): syntax and user errors are plain ``-ERR`` (or ``[AUTH]``,
``[IN-USE]``); server errors are ``-ERR [SYS/TEMP]`` with a correlation id that is also
in the logs, never an exception's text.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, replace

#: RFC 2449 §8.1.1: the maildrop is locked by another session.
IN_USE = "IN-USE"
#: RFC 3206 §4: the failure is about the credentials (or their transport), not the system.
AUTH = "AUTH"
#: RFC 3206 §5: a temporary system failure; trying again later may succeed.
SYS_TEMP = "SYS/TEMP"
#: RFC 3206 §5: a permanent system failure.
SYS_PERM = "SYS/PERM"


@dataclass(frozen=True)
class Reply:
    ok: bool
    text: str = ""
    code: str = ""
    #: A multi-line body, dot-stuffed, ending with the terminating ``.`` line.
    body: bytes | None = None
    #: Or the same as chunks, for messages streamed from S3.
    stream: AsyncGenerator[bytes, None] | None = None
    #: Counts against the session's bad-command budget.
    bad: bool = False
    #: The session ends once this reply is sent.
    close: bool = False
    #: SASL (RFC 5034 §4): send the ``+ `` continuation, read one line, pass it here.
    continuation: Callable[[bytes], Awaitable[Reply]] | None = None
    #: STLS (RFC 2595 §4): start TLS once this reply is sent.
    starttls: bool = False

    @property
    def status(self) -> str:
        """The status line without its CRLF."""
        parts = ["+OK" if self.ok else "-ERR"]
        if self.code:
            parts.append(f"[{self.code}]")
        if self.text:
            parts.append(self.text)
        return " ".join(parts)

    def status_line(self) -> bytes:
        return self.status.encode("utf-8", "replace") + b"\r\n"

    def closing(self, text: str) -> Reply:
        return replace(self, text=text, close=True, continuation=None, starttls=False, body=None, stream=None)


def ok(text: str = "", body: bytes | None = None) -> Reply:
    return Reply(True, text, body=body)


def multiline(text: str, lines: list[bytes] | list[str]) -> Reply:
    """A multi-line reply of short lines that need no stuffing (listings, capabilities)."""
    body = b"".join((line if isinstance(line, bytes) else line.encode()) + b"\r\n" for line in lines) + b".\r\n"
    return Reply(True, text, body=body)


class Pop3Error(Exception):
    """A refusal: rendered as ``-ERR``."""

    code = ""
    #: Whether the client was at fault (counts against the bad-command budget).
    bad = True

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def reply(self) -> Reply:
        return Reply(False, self.text, code=self.code, bad=self.bad)


class Pop3Syntax(Pop3Error):
    """Unknown command, wrong arguments, overlong line (RFC 1939 §3, RFC 2449 §4)."""


class WrongState(Pop3Error):
    """A known command in a state where it is not valid (RFC 1939 §3)."""


class NoSuchMessage(Pop3Error):
    """A message number out of range, or of a message marked as deleted (RFC 1939 §5)."""


class AuthFailed(Pop3Error):
    code = AUTH


class InUse(Pop3Error):
    code = IN_USE
    bad = False


class TemporaryError(Pop3Error):
    code = SYS_TEMP
    bad = False

    def __init__(self, correlation_id: str, text: str = "Temporary failure, try again later") -> None:
        super().__init__(f"{text} (ref {correlation_id})")
        self.correlation_id = correlation_id


class PermanentError(Pop3Error):
    code = SYS_PERM
    bad = False


# -- reply texts -----------------------------------------------------------------------

GREETING = "{host} POP3 server ready"
SIGNING_OFF = "{host} POP3 server signing off"
BAD_BUDGET = "Too many bad commands, closing connection"
PRE_LOGIN_BUDGET = "Too many commands without logging in, closing connection"
AUTH_FAILED = "Authentication failed"
PLAINTEXT_DISALLOWED = "Plaintext authentication disallowed on non-secure connections"
MAILDROP_IN_USE = "Maildrop is locked by another session"
LEASE_LOST = "Lost the maildrop lock, closing connection"
LINE_TOO_LONG = "Line too long"
UNKNOWN_COMMAND = "Unknown command"
