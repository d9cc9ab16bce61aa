"""Reading CRLF-terminated lines with a length limit, as every text protocol here needs;
and the minimum data rate every read that has begun must keep up.

RFC 5321 §4.5.3.1.4 (SMTP command line: 512 octets), RFC 2449 §4 (POP3: 255 octets for
a command), RFC 3501 leaves IMAP lines to the server (we set a limit in imap/).

Slow clients (slow-loris): the protocols' idle timeouts are long, as the RFCs ask for
the wait for the next command (SMTP 5 minutes, IMAP 30, POP3 10). Once a unit has
begun (the first octet of a line, DATA after 354, a BDAT chunk, an IMAP literal),
:class:`Pace` holds the client to a minimum rate, the idea of Postfix's
``smtpd_min_data_rate``: after ``grace`` seconds, the octets received must keep up with
``rate`` octets per second since the unit began. A client that trickles one octet a
second is cut off after about ``grace`` seconds, while the wait for its next command
keeps the RFC's length.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from types import TracebackType


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


class TooSlow(TimeoutError):
    """The peer fell below the minimum data rate within a unit it had begun.

    A :class:`TimeoutError`, so a protocol that answers every timeout alike (SMTP: 421
    4.4.2) needs nothing more; one that tells them apart catches this first.
    """


@dataclass(frozen=True)
class MinRate:
    """Postfix ``smtpd_min_data_rate``: after ``grace`` seconds, ``rate`` octets per second
    since the unit began (``rate`` 0: no minimum)."""

    rate: float = 0.0
    grace: float = 10.0


HEAD = 200
TAIL = 64


def buffered(reader: asyncio.StreamReader) -> bytearray | None:
    """What the reader holds already, to look at without taking it; None when unknown.

    asyncio offers no public way to peek (nor to ask how much has arrived): callers
    take the bytes with the public methods and keep a fallback for None.
    """
    buffer = getattr(reader, "_buffer", None)
    return buffer if isinstance(buffer, bytearray) else None


class Pace:
    """``async with Pace(reader, minimum) as pace:`` runs the block as one unit the peer
    must send at ``minimum`` (None, or a rate of 0: no minimum); below it,
    :class:`TooSlow` is raised out of the block.

    The octets received are those the caller took (:meth:`took`) plus those waiting in
    the reader. A timer fires when they would fall behind; if more have arrived by
    then it moves on, otherwise it expires the block's timeout scope, so the read in
    progress is cancelled the way ``asyncio.timeout`` cancels it.
    """

    def __init__(self, reader: asyncio.StreamReader, minimum: MinRate | None) -> None:
        self._reader = reader
        self._minimum = minimum if minimum is not None and minimum.rate > 0 else None
        self._scope: asyncio.Timeout | None = None
        self._loop = asyncio.get_running_loop()
        self._start = 0.0
        self._taken = 0
        self._timer: asyncio.TimerHandle | None = None
        self.expired = False

    async def __aenter__(self) -> Pace:
        if self._minimum is not None:
            self._scope = asyncio.timeout(None)
            await self._scope.__aenter__()
            self._start = self._loop.time()
            self._arm()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._scope is None:
            return
        self._disarm()
        try:
            await self._scope.__aexit__(exc_type, exc, tb)
        except TimeoutError as error:
            if self.expired:
                raise TooSlow("below the minimum data rate") from error
            raise

    def took(self, octets: int) -> None:
        """The caller consumed ``octets`` of the unit from the reader."""
        self._taken += octets

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Our own work (an S3 part upload): the client cannot send while we do not read,
        so that time does not count against it."""
        self._disarm()
        stopped = self._loop.time()
        try:
            yield
        finally:
            self._start += self._loop.time() - stopped
            self._arm()

    def _due(self, minimum: MinRate) -> float:
        waiting = buffered(self._reader)
        received = self._taken + (len(waiting) if waiting is not None else 0)
        return self._start + minimum.grace + received / minimum.rate

    def _arm(self) -> None:
        if self._minimum is not None and self._scope is not None:
            self._timer = self._loop.call_at(self._due(self._minimum), self._check)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        assert self._minimum is not None and self._scope is not None
        due = self._due(self._minimum)
        if due > self._loop.time():
            self._timer = self._loop.call_at(due, self._check)
            return
        self._timer = None
        self.expired = True
        self._scope.reschedule(self._loop.time())


async def read_line(reader: asyncio.StreamReader, limit: int, minimum: MinRate | None = None) -> bytes:
    """One line without its terminator. A bare LF also ends a line (clients send it).

    A line longer than ``limit`` raises :class:`LineTooLong` once all of it has been read
    (holding only its head and tail), so the session can answer and go on with the next.
    The wait for the line's first octet is the caller's (its idle timeout); from that
    octet on, the rest must come at ``minimum`` (:class:`TooSlow`). A line that is
    already whole in the reader's buffer (the common case) needs no timer.
    """
    buffer = bytearray()
    waiting = buffered(reader)
    if not waiting:
        buffer += await _take(reader.readexactly(1))
        if buffer == b"\n":
            return b""
    if waiting is not None and b"\n" in waiting:
        minimum = None
    head = b""
    async with Pace(reader, minimum) as pace:
        while True:
            try:
                chunk = await _take(reader.readuntil(b"\n"))
            except asyncio.LimitOverrunError as overrun:
                chunk = await _take(reader.readexactly(overrun.consumed))
            pace.took(len(chunk))
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


async def _take(read: Awaitable[bytes]) -> bytes:
    """A read from the peer; its end or a broken connection is :class:`ConnectionClosed`."""
    try:
        return await read
    except asyncio.IncompleteReadError as partial:
        raise ConnectionClosed from partial
    except (ConnectionError, OSError) as error:
        raise ConnectionClosed from error
