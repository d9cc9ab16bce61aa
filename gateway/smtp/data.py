"""Receiving the message: DATA (dot-stuffed lines) and BDAT (counted chunks), streamed.

Nothing here holds the whole message. Lines and chunks go to a :class:`MessageSink`,
which hashes them, counts them against the size limit and passes them to the staging
upload (which keeps at most one S3 part in memory).

Bare line ends in DATA (SMTP smuggling, CVE-2023-51764 and relatives): we do what
Postfix 3.9 does by default (``smtpd_forbid_bare_newline = normalize``):

* only ``<CR><LF>.<CR><LF>`` ends the data (RFC 5321 §4.1.1.4); ``<LF>.<LF>``,
  ``<CR><LF>.<LF>``, ``<LF>.<CR><LF>`` and ``<CR>.<CR>`` are message content;
* a line that ends in a bare ``<LF>`` is stored as if it had ended in ``<CR><LF>``;
* a bare ``<CR>`` inside a line is content and is kept as it is.

So a message can never end where a differently-parsing peer would not end it, and what
we store has one kind of line end. BDAT chunks are octets (RFC 3030 §2) and are stored
exactly as received.
"""

from __future__ import annotations

import asyncio
import hashlib
import re

from gateway.staging import StagedObject, StagingUpload
from gateway.wire.lines import ConnectionClosed, MinRate, Pace, buffered

#: Largest read from the socket per step of a BDAT chunk.
READ_SIZE = 64 * 1024
#: DATA lines are handed to the sink in batches of about this size.
WRITE_BATCH = 64 * 1024


class MessageSink:
    """Where message bytes go: a SHA-256 of the client's bytes, a size, the staging upload.

    ``prefix`` (our trace header fields) is staged before the content but neither
    hashed nor counted: the hash identifies what the client sent (the dedup key of a
    retried transaction), the size limit applies to what the client sent (RFC 1870 §4).
    Past the limit, bytes are counted and dropped, and the upload is aborted.
    """

    def __init__(self, upload: StagingUpload, limit: int, prefix: bytes = b"") -> None:
        self.upload = upload
        self.limit = limit
        self.size = 0
        self.too_big = False
        self._hash = hashlib.sha256()
        self._prefix = prefix
        self._closed = False

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.too_big:
            return
        if self.size > self.limit:
            self.too_big = True
            await self.abort()
            return
        self._hash.update(data)
        if self._prefix:
            data, self._prefix = self._prefix + data, b""
        await self.upload.write(data)

    async def finish(self) -> StagedObject:
        if self.too_big:
            raise RuntimeError("message over the size limit is not staged")
        if self._prefix:
            await self.upload.write(self._prefix)
            self._prefix = b""
        self._closed = True
        return await self.upload.finish()

    async def abort(self) -> None:
        if not self._closed:
            self._closed = True
            await self.upload.abort()


class _Deadline:
    """An idle timeout that restarts with each read (RFC 5321 §4.5.3.2: per data block).

    Rescheduling replaces a timer in the event loop's heap, which costs more than
    reading a line; so it is moved at most every ``slack`` seconds (a tenth of the
    timeout, at most one second). The client still gets the whole timeout, give or take
    the slack, after its last byte.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.slack = min(1.0, seconds / 10)
        self.scope = asyncio.timeout(seconds)
        self._loop = asyncio.get_running_loop()
        self._restarted = self._loop.time()

    def restart(self) -> None:
        now = self._loop.time()
        if now - self._restarted >= self.slack:
            self._restarted = now
            self.scope.reschedule(now + self.seconds)


async def _read_piece(reader: asyncio.StreamReader) -> bytes:
    """Up to and including the next LF; or, for a line longer than the reader's buffer
    limit, the part of it that is buffered (never cutting a CR LF pair is the caller's job)."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as overrun:
        return await reader.readexactly(overrun.consumed)
    except asyncio.IncompleteReadError as error:
        raise ConnectionClosed from error
    except (ConnectionError, OSError) as error:
        raise ConnectionClosed from error


#: The end of the data with the line end before it (RFC 5321 §4.1.1.4).
_END = b"\r\n.\r\n"
_BARE_LF = re.compile(rb"(?<!\r)\n")


def _unstuff_lines(raw: bytes) -> bytes:
    """Whole lines, read from a line start, as stored: bare LFs made CR LF (Postfix
    "normalize") and each line's transparency dot dropped (RFC 5321 §4.5.2)."""
    if raw.count(b"\n") != raw.count(b"\r\n"):
        raw = _BARE_LF.sub(b"\r\n", raw)
    if raw[:1] == b".":
        raw = raw[1:]
    return raw.replace(b"\n.", b"\n")


async def _take_buffered_lines(reader: asyncio.StreamReader, previous_crlf: bool) -> tuple[bytes, bool, bool]:
    """At a line start: take the whole lines the reader holds, up to the end of the data
    if that is among them. Returns (their content as stored, whether the data ended,
    whether the last line taken ended in CR LF).

    The end of the data is the first ``<CR><LF>.<CR><LF>`` of the stream, counting the
    line end before this point, so it is found by a search over the raw bytes. Without
    a view of the reader's buffer (:func:`buffered`) the line-by-line path alone is
    used: the same result, slower.
    """
    buffer = buffered(reader)
    if not buffer:
        return b"", False, previous_crlf
    if previous_crlf and buffer.startswith(b".\r\n"):
        await reader.readexactly(3)
        return b"", True, True
    whole = buffer.rfind(b"\n") + 1
    end = buffer.find(_END, 0, whole)
    if end >= 0:
        raw = await reader.readexactly(end + len(_END))
        return _unstuff_lines(raw[: end + 2]), True, True
    if not whole:
        return b"", False, previous_crlf
    raw = await reader.readexactly(whole)
    return _unstuff_lines(raw), False, raw[-2:-1] == b"\r"


async def _write(sink: MessageSink, data: bytes, pace: Pace) -> None:
    with pace.paused():  # an S3 part upload: our time, not the client's
        await sink.write(data)


async def receive_dot_stuffed(
    reader: asyncio.StreamReader, sink: MessageSink, timeout: float, minimum: MinRate | None = None
) -> None:
    """Read DATA up to ``<CR><LF>.<CR><LF>``, unstuffing dots (RFC 5321 §4.5.2).

    Lines of any length are accepted and kept intact. Deviation from RFC 5321
    §4.5.3.1.6 (text lines of at most 1000 octets): Postfix reassembles longer lines
    too (``line_length_limit`` only bounds its memory, as the reader's buffer does here).

    Each step waits for one line (or a piece of a long one) and then takes, in one go,
    the whole lines that arrived with it; what they become goes to the sink in batches
    of about :data:`WRITE_BATCH` octets. Line by line, a 10 MB message would cost the
    gateway a quarter of a second of CPU.

    The whole data is one unit for the minimum rate (``minimum``, gateway/wire/lines.py).
    """
    deadline = _Deadline(timeout)
    line_start = True  # the next piece begins a line
    previous_crlf = True  # the last line ended in CR LF (the DATA command's own line did)
    carry = b""  # a CR at the end of a piece whose LF may come with the next piece
    batch = bytearray()
    async with deadline.scope, Pace(reader, minimum) as pace:
        while True:
            deadline.restart()
            piece = await _read_piece(reader)
            pace.took(len(piece))
            if carry:
                piece, carry = carry + piece, b""
            if piece[-1:] != b"\n":  # a long line, in pieces
                if piece[-1:] == b"\r":
                    piece, carry = piece[:-1], b"\r"
                if line_start and piece[:1] == b".":
                    piece = piece[1:]
                line_start = False
                batch += piece
            else:
                crlf = piece[-2:-1] == b"\r"
                content = piece[:-2] if crlf else piece[:-1]
                if line_start and content[:1] == b".":
                    if content == b"." and crlf and previous_crlf:
                        break  # RFC 5321 §4.1.1.4: the end of mail data
                    content = content[1:]  # RFC 5321 §4.5.2: drop the transparency dot
                batch += content
                batch += b"\r\n"  # a bare LF becomes CR LF (Postfix "normalize")
                line_start = True
                previous_crlf = crlf
                lines, ended, previous_crlf = await _take_buffered_lines(reader, previous_crlf)
                pace.took(len(lines))
                batch += lines
                if ended:
                    break
            if len(batch) >= WRITE_BATCH:
                await _write(sink, bytes(batch), pace)
                batch.clear()
        if batch:
            await _write(sink, bytes(batch), pace)


async def receive_chunk(
    reader: asyncio.StreamReader,
    size: int,
    sink: MessageSink | None,
    timeout: float,
    minimum: MinRate | None = None,
) -> None:
    """Read exactly ``size`` octets of a BDAT chunk (RFC 3030 §2); ``sink=None`` drops them,
    as a refused BDAT must still consume its chunk (RFC 3030 §2, §4). The chunk is one
    unit for the minimum rate."""
    deadline = _Deadline(timeout)
    remaining = size
    async with deadline.scope, Pace(reader, minimum) as pace:
        while remaining:
            deadline.restart()
            try:
                data = await reader.read(min(remaining, READ_SIZE))
            except (ConnectionError, OSError) as error:
                raise ConnectionClosed from error
            if not data:
                raise ConnectionClosed
            remaining -= len(data)
            pace.took(len(data))
            if sink is not None:
                await _write(sink, data, pace)
