"""The PROXY protocol reader over random and mutated headers (issue #7): a header, or
ProxyHeaderError (the connection is dropped), never another exception, and never a read
past the header's end."""

from __future__ import annotations

import asyncio
import struct

from hypothesis import given, settings

from gateway.proxy import SIGNATURE, ProxyHeaderError, read_header

from .mutations import fuzz_input

#: Valid headers of every kind (HAProxy's proxy-protocol.txt §2.1 and §2.2).
HEADERS = [
    b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 25\r\n",
    b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 993\r\n",
    b"PROXY UNKNOWN\r\n",
    SIGNATURE
    + b"\x21\x11"
    + struct.pack("!H", 12)
    + bytes([203, 0, 113, 7, 198, 51, 100, 1])
    + struct.pack("!HH", 51000, 25),
    SIGNATURE + b"\x21\x21" + struct.pack("!H", 36) + bytes(15) + b"\x07" + bytes(15) + b"\x01" + b"\xc7\x38\x03\xe1",
    SIGNATURE + b"\x20\x00" + struct.pack("!H", 0),  # LOCAL
    SIGNATURE + b"\x21\x11" + struct.pack("!H", 15) + bytes(12) + b"\x04\x00\x00",  # with an empty TLV
]
TOKENS = [b"PROXY ", b"TCP4", b"TCP6", b"UNKNOWN", SIGNATURE, b"\x21", b"\x20", b"\x11", b"\x21\x11", b"\xff\xff"]
#: What the client sends after the header; the reader must leave it.
AFTER = b"EHLO client.example\r\n"


async def _read(data: bytes) -> tuple[object, bytes]:
    reader = asyncio.StreamReader()
    reader.feed_data(data + AFTER)
    reader.feed_eof()
    try:
        header = await read_header(reader, timeout=5)
    except ProxyHeaderError as error:
        return error, b""
    return header, await reader.read()


@settings(max_examples=1500)
@given(fuzz_input(HEADERS, TOKENS, max_size=1200))
def test_headers(data: bytes) -> None:
    outcome, rest = asyncio.run(_read(data))
    if isinstance(outcome, ProxyHeaderError):
        return
    # A header was accepted: the reader consumed exactly the header (its declared length,
    # or the line up to its LF) and left the rest of the stream to the protocol.
    stream = data + AFTER
    consumed = stream[: len(stream) - len(rest)]
    assert stream.endswith(rest)
    if consumed.startswith(SIGNATURE):
        assert len(consumed) == 16 + struct.unpack("!H", consumed[14:16])[0]
    else:
        assert consumed.endswith(b"\r\n") and consumed.count(b"\n") == 1
