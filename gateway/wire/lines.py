"""Reading CRLF-terminated lines with a length limit, as every text protocol here needs.

RFC 5321 §4.5.3.1.4 (SMTP command line: 512 octets), RFC 2449 §4 (POP3: 255 octets for
a command), RFC 3501 leaves IMAP lines to the server (we set a limit in imap/).
"""

from __future__ import annotations

import asyncio


class LineTooLong(Exception):
    """The peer sent more than the limit without a line end; the rest of the line was skipped."""


class ConnectionClosed(Exception):
    """The peer closed the connection (or it broke) before a whole line arrived."""


async def read_line(reader: asyncio.StreamReader, limit: int) -> bytes:
    """One line without its terminator. A bare LF also ends a line (clients send it).

    A line longer than ``limit`` raises :class:`LineTooLong` after the rest of it has been
    read and dropped, so the session can answer and go on with the next line.
    """
    buffer = bytearray()
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
        if buffer.endswith(b"\n"):
            break
        if len(buffer) > limit:
            await _skip_line(reader)
            raise LineTooLong
    line = bytes(buffer[:-1])
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) > limit:
        raise LineTooLong
    return line


async def _skip_line(reader: asyncio.StreamReader) -> None:
    while True:
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.LimitOverrunError as overrun:
            await reader.readexactly(overrun.consumed)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as error:
            raise ConnectionClosed from error
