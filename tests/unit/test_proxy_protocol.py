"""PROXY protocol v1 and v2 headers (HAProxy's proxy-protocol.txt): valid ones parsed,
anything else rejected, and ``read_header`` consumes the header and not one octet more."""

from __future__ import annotations

import asyncio
import ipaddress
import struct

import pytest

from gateway.config import LISTENERS, GatewayConfig, proxy_listeners
from gateway.proxy import (
    SIGNATURE,
    V1_MAX,
    V2_MAX_LENGTH,
    ProxyHeader,
    ProxyHeaderError,
    parse_v1,
    parse_v2,
    read_header,
)


def v2(command: int = 0x1, family: int = 0x11, block: bytes | None = None, version: int = 0x2, tlvs: bytes = b"") -> bytes:
    """A v2 header; by default PROXY, TCP over IPv4, 203.0.113.7:51000 -> 198.51.100.1:25."""
    if block is None:
        block = ipaddress.ip_address("203.0.113.7").packed + ipaddress.ip_address("198.51.100.1").packed
        block += struct.pack("!HH", 51000, 25)
    body = block + tlvs
    return SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", len(body)) + body


def v2_inet6() -> bytes:
    block = ipaddress.ip_address("2001:db8::7").packed + ipaddress.ip_address("2001:db8::1").packed
    return v2(family=0x21, block=block + struct.pack("!HH", 40000, 993))


# -- version 1 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "source"),
    [
        (b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 25\r\n", ("203.0.113.7", 51000)),
        (b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", ("255.255.255.255", 65535)),
        (b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n", ("0.0.0.0", 0)),
        (b"PROXY TCP6 2001:DB8::7 2001:db8::1 40000 993\r\n", ("2001:db8::7", 40000)),
        (b"PROXY TCP6 " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n", ("ffff:" * 7 + "ffff", 65535)),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN whatever the sender put here\r\n", None),  # §2.1: ignored
    ],
)
def test_v1_valid(line, source):
    assert parse_v1(line) == ProxyHeader(1, source)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 25\n",  # bare LF
        b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 25\r",  # no LF
        b"PROXY TCP4 203.0.113.7 198.51.100.1 51000\r\n",  # a field missing
        b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 25 9\r\n",  # one too many
        b"PROXY TCP4  203.0.113.7 198.51.100.1 51000 25\r\n",  # two spaces
        b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 25 \r\n",  # trailing space
        b"PROXY tcp4 203.0.113.7 198.51.100.1 51000 25\r\n",  # case
        b"PROXY UDP4 203.0.113.7 198.51.100.1 51000 25\r\n",  # not TCP
        b"PROXY TCP4 203.0.113.07 198.51.100.1 51000 25\r\n",  # heading zero (octal?)
        b"PROXY TCP4 203.0.113.256 198.51.100.1 51000 25\r\n",  # octet out of range
        b"PROXY TCP4 203.0.113 198.51.100.1 51000 25\r\n",  # three octets
        b"PROXY TCP4 2001:db8::7 198.51.100.1 51000 25\r\n",  # IPv6 under TCP4
        b"PROXY TCP6 203.0.113.7 2001:db8::1 51000 25\r\n",  # IPv4 under TCP6
        b"PROXY TCP6 fe80::1%eth0 2001:db8::1 51000 25\r\n",  # scoped
        b"PROXY TCP4 203.0.113.7 198.51.100.1 65536 25\r\n",  # port out of range
        b"PROXY TCP4 203.0.113.7 198.51.100.1 051000 25\r\n",  # heading zero
        b"PROXY TCP4 203.0.113.7 198.51.100.1 -1 25\r\n",
        b"PROXY TCP4 203.0.113.7 198.51.100.1 +25 25\r\n",
        b"PROXY TCP4 203.0.113.7\r198.51.100.1 51000 25\r\n",  # lone CR inside
        b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 2\xd9\xa3\r\n",  # not ASCII
        b"PROXY UNKNOWN " + b"x" * (V1_MAX - 15) + b"\r\n",  # 108 octets
        b"PROXYTCP4 203.0.113.7 198.51.100.1 51000 25\r\n",
        b"EHLO client.example\r\n",
    ],
)
def test_v1_invalid(line):
    with pytest.raises(ProxyHeaderError):
        parse_v1(line)


# -- version 2 ---------------------------------------------------------------------------


def test_v2_inet_and_inet6():
    assert parse_v2(v2()) == ProxyHeader(2, ("203.0.113.7", 51000))
    assert parse_v2(v2_inet6()) == ProxyHeader(2, ("2001:db8::7", 40000))


def test_v2_tlvs_are_skipped():
    # an AWS VPC endpoint id (type 0xEA, subtype 0x01) and a NOOP (0x04) of no value
    tlvs = b"\xea\x00\x17\x01vpce-08d2bf15fac5001c9" + b"\x04\x00\x00"
    assert parse_v2(v2(tlvs=tlvs)) == ProxyHeader(2, ("203.0.113.7", 51000))


def test_v2_local_keeps_the_socket_peer_whatever_the_block():
    # §2.2: LOCAL (the balancer's health check): the block, family included, is ignored
    assert parse_v2(v2(command=0x0, family=0x00, block=b"")) == ProxyHeader(2, None)
    assert parse_v2(v2(command=0x0, family=0x11)) == ProxyHeader(2, None)
    assert parse_v2(v2(command=0x0, family=0x00, block=b"\x00" * 7)) == ProxyHeader(2, None)


@pytest.mark.parametrize(
    "header",
    [
        v2(version=0x1),  # §2.2: only version 2
        v2(version=0x3),
        v2(command=0x2),  # neither LOCAL nor PROXY
        v2(command=0xF),
        v2(family=0x12),  # UDP over IPv4
        v2(family=0x22),  # UDP over IPv6
        v2(family=0x31, block=b"\x00" * 216),  # UNIX stream
        v2(family=0x00, block=b""),  # PROXY with UNSPEC: no address to use
        v2(family=0x41),  # no such family
        v2(family=0x21),  # IPv6 announced, an IPv4-sized block
        v2(block=b"\x00" * 11),  # IPv4 block one octet short
        v2(tlvs=b"\xea\x00\x10abc"),  # a TLV longer than what is left
        v2(tlvs=b"\x04\x00"),  # half a TLV
        v2()[:-1],  # truncated: the length field says more
        v2() + b"\x00",  # the length field says less
        b"\r\n\r\n\x00\r\nQUIX\n" + v2()[12:],  # forged signature
        v2()[:15],  # not even the fixed part
        v2(tlvs=b"\x04" + struct.pack("!H", V2_MAX_LENGTH) + b"\x00" * V2_MAX_LENGTH),  # oversized
    ],
)
def test_v2_invalid(header):
    with pytest.raises(ProxyHeaderError):
        parse_v2(header)


# -- read_header: exactly the header from a stream ---------------------------------------


def read(data: bytes, eof: bool = True, timeout: float = 5.0) -> tuple[ProxyHeader, bytes]:
    async def go() -> tuple[ProxyHeader, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        header = await read_header(reader, timeout)
        return header, await reader.read()

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("header", "source"),
    [
        (b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 25\r\n", ("203.0.113.7", 51000)),
        (b"PROXY UNKNOWN\r\n", None),
        (v2(), ("203.0.113.7", 51000)),
        (v2_inet6(), ("2001:db8::7", 40000)),
        (v2(command=0x0, family=0x00, block=b""), None),
        (v2(tlvs=b"\x04\x00\x02\r\n"), ("203.0.113.7", 51000)),
    ],
)
def test_read_header_leaves_what_follows(header, source):
    # the client's first octets (a TLS ClientHello, or EHLO) stay for the protocol
    for rest in (b"", b"EHLO client.example\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
        assert read(header + rest) == (ProxyHeader(1 if header.startswith(b"PROXY") else 2, source), rest)


@pytest.mark.parametrize(
    "data",
    [
        b"EHLO client.example\r\n",  # a client that speaks at once, no header
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32,  # a TLS ClientHello
        b"PROXY TCP4 203.0.113.7 198.51.100.1 51000 25\n",  # bare LF
        b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n",  # no CRLF within 107 octets
        b"PROXY TCP4 203.0.113.7",  # truncated, then the client closed
        v2()[:20],  # truncated v2
        v2(command=0x2) + b"EHLO x\r\n",
        SIGNATURE + b"\x21\x11\xff\xff",  # announces 65535 octets: refused before reading them
        b"",
    ],
)
def test_read_header_rejects(data):
    with pytest.raises(ProxyHeaderError):
        read(data)


def test_read_header_gives_up_when_nothing_comes():
    with pytest.raises(ProxyHeaderError, match="within"):
        read(b"PROXY TCP4 203.0", eof=False, timeout=0.05)


# -- which listeners expect it -------------------------------------------------------------


def test_listener_setting():
    assert GatewayConfig.from_env({}).proxy_protocol == frozenset()  # off by default
    assert proxy_listeners("all") == frozenset(LISTENERS)
    assert proxy_listeners(" smtp, imaps ") == {"smtp", "imaps"}
    assert GatewayConfig.from_env({"PROXY_PROTOCOL_LISTENERS": "pop3s"}).proxy_protocol == {"pop3s"}
    with pytest.raises(ValueError, match="smpt"):
        proxy_listeners("smpt")
