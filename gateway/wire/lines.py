"""Reading CRLF-terminated lines with a length limit, as every text protocol here needs.

RFC 5321 §4.5.3.1.4 (SMTP command line: 512 octets), RFC 2449 §4 (POP3: 255 octets for
a command), RFC 3501 leaves IMAP lines to the server (we set a limit in imap/).
"""

from __future__ import annotations

import asyncio


class LineTooLong(Exception):
    """The peer sent more than the limit before a line end; the whole line was read.

    ``head`` keeps its first octets (for the log) and ``tail`` its last ones before the
    line end: an IMAP line may end by announcing a literal, which must then be refused.
    """

    def __init__(self, head: bytes = b"", tail: bytes = b"") -> None:
        super().__init__("line too long")
        self.head = head
        self.tail = tail


class ConnectionClosed(Exception):
    """The peer closed the connection (or it broke) before a whole line arrived."""


HEAD = 200
TAIL = 64


async def read_line(reader: asyncio.StreamReader, limit: int) -> bytes:
    """One line without its terminator. A bare LF also ends a line (clients send it).

    A line longer than ``limit`` raises :class:`LineTooLong` once all of it has been read
    (holding only its head and tail), so the session can answer and go on with the next.
    """
    buffer = bytearray()
    head = b""
    while True:
        try:
            chunk = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as overrun:
            chunk = await reader.readexactly(overrun.consumed)
        except asyncio.IncompleteReadError as partial:
            raise ConnectionClosed from partial
        except (ConnectionError, OSError) as error:
            raise ConnectionClosed from error
        buffer += chunk
        if len(buffer) > limit + 2:
            head = head or bytes(buffer[:HEAD])
            del buffer[: len(buffer) - TAIL - 2]
        if buffer.endswith(b"\n"):
            break
    line = bytes(buffer[:-1])
    if line.endswith(b"\r"):
        line = line[:-1]
    if head or len(line) > limit:
        raise LineTooLong(head or line[:HEAD], line[-TAIL:])
    return line
