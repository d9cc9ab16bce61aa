"""The minimum data rate of gateway/wire/lines.py, without sockets: the wait for a line's
first octet is the caller's alone; once begun, a line (or any unit under :class:`Pace`)
must keep up the rate after the grace; our own pauses do not count against the peer.
Outcomes are asserted, never elapsed time."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from gateway.wire.lines import MinRate, Pace, TooSlow, read_line

#: A rate no trickle below meets, after a short grace.
STRICT = MinRate(rate=1_000_000, grace=0.1)


async def feed_later(reader: asyncio.StreamReader, *pieces: bytes, gap: float = 0.0) -> None:
    for piece in pieces:
        await asyncio.sleep(gap)
        reader.feed_data(piece)


@pytest.mark.parametrize(
    ("first", "minimum"),
    [
        pytest.param(b"", STRICT, id="the-wait-for-the-first-octet-is-not-paced"),
        pytest.param(b"NO", None, id="without-a-minimum-a-begun-line-waits-for-the-callers-timeout"),
    ],
)
async def test_a_line_that_comes_late_is_read(first, minimum):
    reader = asyncio.StreamReader()
    reader.feed_data(first)
    feeding = asyncio.create_task(feed_later(reader, b"NOOP\r\n"[len(first) :], gap=STRICT.grace * 3))
    assert await read_line(reader, 512, minimum) == b"NOOP"
    await feeding


async def test_a_begun_line_that_stalls_is_too_slow():
    reader = asyncio.StreamReader()
    reader.feed_data(b"NO")
    with pytest.raises(TooSlow):
        await read_line(reader, 512, STRICT)


async def test_a_trickled_line_is_too_slow_and_is_a_timeout():
    reader = asyncio.StreamReader()
    trickle = [b"x"] * 100
    feeding = asyncio.create_task(feed_later(reader, *trickle, gap=STRICT.grace / 4))
    with pytest.raises(TimeoutError):  # TooSlow is one: SMTP answers both 421 4.4.2
        await read_line(reader, 512, STRICT)
    feeding.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await feeding


async def test_time_paused_for_our_own_work_does_not_count():
    reader = asyncio.StreamReader()
    reader.feed_data(b"abc")
    async with Pace(reader, STRICT) as pace:
        pace.took(len(await reader.readexactly(3)))
        with pace.paused():
            await asyncio.sleep(STRICT.grace * 3)  # an S3 upload, say


async def test_an_outer_timeout_stays_a_plain_timeout():
    reader = asyncio.StreamReader()
    reader.feed_data(b"NO")
    with pytest.raises(TimeoutError) as raised:
        async with asyncio.timeout(STRICT.grace / 10):
            await read_line(reader, 512, MinRate(rate=1, grace=60))
    assert not isinstance(raised.value, TooSlow)
