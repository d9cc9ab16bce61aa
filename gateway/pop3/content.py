"""Message content on the way out, chunk by chunk, with no I/O: dot-stuffing (RFC 1939 §3)
and the cut that TOP makes (RFC 1939 §7).

Both work on a message streamed from S3 in arbitrary chunks and give, joined, exactly
what :func:`gateway.wire.dotstuff.stuff` and :func:`top` give for the whole message.
A line ends at LF (a preceding CR is part of its ending), as in the stored messages.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from gateway.wire.dotstuff import TERMINATOR

_CR, _LF = 13, 10


class Stuffer:
    """Incremental dot-stuffing: a line starting with "." gets one more; the data ends
    with CRLF and then the terminating ".CRLF"."""

    def __init__(self) -> None:
        self._at_line_start = True
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        out = chunk.replace(b"\n.", b"\n..")  # bytes.replace: many times faster than a regex
        if self._at_line_start and chunk[0] == 0x2E:  # "."
            out = b"." + out
        self._at_line_start = chunk[-1] == _LF
        self._tail = (self._tail + chunk[-2:])[-2:]
        return out

    def finish(self) -> bytes:
        if self._tail and self._tail != b"\r\n":
            return b"\r\n" + TERMINATOR
        return TERMINATOR


class TopCutter:
    """RFC 1939 §7 TOP msg n: the header, the blank line that ends it, then ``lines``
    lines of the body (all of it when shorter). A message with no blank line is all header."""

    def __init__(self, lines: int) -> None:
        self._wanted = lines
        self._counted = 0
        self._in_header = True
        self._line_length = 0
        self._last = -1
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        if self.done:
            return b""
        position = 0
        while True:
            if not self._in_header and self._counted >= self._wanted:
                self.done = True
                return chunk[:position]
            newline = chunk.find(b"\n", position)
            if newline < 0:
                rest = len(chunk) - position
                if rest:
                    self._line_length += rest
                    self._last = chunk[-1]
                return chunk
            length = self._line_length + (newline - position)
            last = chunk[newline - 1] if newline > position else self._last
            blank = length == 0 or (length == 1 and last == _CR)
            self._line_length, self._last = 0, _LF
            position = newline + 1
            if self._in_header:
                self._in_header = not blank
            else:
                self._counted += 1


def stuff_message(data: bytes) -> bytes:
    """A whole message as a dot-stuffed, terminated multi-line body."""
    stuffer = Stuffer()
    return stuffer.feed(data) + stuffer.finish()


def top(data: bytes, lines: int) -> bytes:
    """What TOP sends of ``data`` (before stuffing)."""
    return TopCutter(lines).feed(data)


async def stuffed(chunks: AsyncGenerator[bytes, None], cutter: TopCutter | None = None) -> AsyncGenerator[bytes, None]:
    """Chunks of a message as a dot-stuffed, terminated multi-line body; with ``cutter``,
    only what TOP sends, and reading stops (the source is closed) once the cut is reached."""
    stuffer = Stuffer()
    async with aclosing(chunks):
        async for chunk in chunks:
            if cutter is not None:
                chunk = cutter.feed(chunk)
            out = stuffer.feed(chunk)
            if out:
                yield out
            if cutter is not None and cutter.done:
                break
    yield stuffer.finish()
