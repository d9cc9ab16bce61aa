"""The PROXY protocol, versions 1 and 2 (HAProxy's ``doc/proxy-protocol.txt``).

Behind an AWS Network Load Balancer the TCP peer is the load balancer; the client's
address arrives as a header ahead of the client's first octet. A listener configured for
it (``PROXY_PROTOCOL_LISTENERS``) reads exactly that header and nothing more, so what
follows (the client's commands, or its TLS ClientHello) is still unread. The parser is
strict: anything that is not exactly a valid header rejects the connection (§2.1: "Any
sequence which does not exactly match the protocol must be discarded"), and the listener
never guesses whether a header is present (§1: that would let anyone spoof an address).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass

#: §2.2: the 12 octets that open a version 2 header.
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: §2.1: the longest version 1 line, CRLF included ("PROXY UNKNOWN" with IPv6 fields).
V1_MAX = 107
#: §2.2: signature, version/command, family/transport, 2-octet length.
V2_FIXED = 16
#: The longest version 2 address block plus TLVs accepted. AWS sends the addresses and at
#: most a VPC endpoint id TLV (a few dozen octets); the format allows 65535.
V2_MAX_LENGTH = 1024
#: Octets read before the version is known: fewer than the shortest header of either
#: ("PROXY UNKNOWN\r\n" is 15, v2 at least 16), so never past a valid one.
_PREFIX = len(SIGNATURE)

_LOCAL, _PROXY = 0x0, 0x1  # §2.2 command, the low nibble of the 13th octet
_INET, _INET6 = 0x1, 0x2  # §2.2 address family, the high nibble of the 14th octet
_STREAM = 0x1  # §2.2 transport protocol, the low nibble of the 14th octet
_ADDRESS_SIZE = {_INET: 4, _INET6: 16}
#: §2.1: a port in decimal, 0..65535, no heading zeroes.
_PORT = re.compile(r"0|[1-9][0-9]{0,4}")


class ProxyHeaderError(ValueError):
    """Not a valid PROXY protocol header (or none arrived): the connection is dropped."""


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed header. ``source`` is the client's (address, port), or None for a v2 LOCAL
    command (the load balancer's own health check, §2.2) and a v1 UNKNOWN line (§2.1):
    then the connection's own peer stands."""

    version: int
    source: tuple[str, int] | None


def parse_v1(line: bytes) -> ProxyHeader:
    """§2.1: ``PROXY TCP4|TCP6 src dst sport dport\\r\\n`` or ``PROXY UNKNOWN ...\\r\\n``."""
    if len(line) > V1_MAX or not line.startswith(b"PROXY ") or not line.endswith(b"\r\n"):
        raise ProxyHeaderError("not a PROXY v1 line of at most 107 octets ending in CRLF")
    body = line[:-2]
    if b"\r" in body or b"\n" in body:
        raise ProxyHeaderError("a lone CR or LF in the PROXY v1 line")  # §2.1
    try:
        fields = body.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY v1 line is not US-ASCII") from None
    if fields[1] == "UNKNOWN":
        return ProxyHeader(1, None)  # §2.1: whatever follows UNKNOWN is ignored
    if fields[1] not in ("TCP4", "TCP6") or len(fields) != 6:
        raise ProxyHeaderError("PROXY v1 needs TCP4|TCP6 and four fields")
    version = 4 if fields[1] == "TCP4" else 6
    source = _v1_address(fields[2], version)
    _v1_address(fields[3], version)
    source_port = _v1_port(fields[4])
    _v1_port(fields[5])
    return ProxyHeader(1, (source, source_port))


def _v1_address(text: str, version: int) -> str:
    """§2.1: the family's canonical text form (Python refuses IPv4 heading zeroes)."""
    if "%" in text:
        raise ProxyHeaderError("a scoped IPv6 address in the PROXY line")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError("not an IP address in the PROXY line") from None
    if address.version != version:
        raise ProxyHeaderError("an address of the wrong family in the PROXY line")
    return str(address)


def _v1_port(text: str) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise ProxyHeaderError("not a port in the PROXY line")
    return int(text)


def parse_v2(header: bytes) -> ProxyHeader:
    """§2.2: the whole binary header, exactly ``16 + length`` octets."""
    if len(header) < V2_FIXED or header[: len(SIGNATURE)] != SIGNATURE:
        raise ProxyHeaderError("not a PROXY v2 signature")
    version_command, family_transport = header[12], header[13]
    length = int.from_bytes(header[14:16], "big")
    if length > V2_MAX_LENGTH:
        raise ProxyHeaderError(f"PROXY v2 header longer than {V2_MAX_LENGTH} octets")
    if len(header) != V2_FIXED + length:
        raise ProxyHeaderError("PROXY v2 header length does not match its length field")
    if version_command >> 4 != 2:
        raise ProxyHeaderError("PROXY v2 version is not 2")  # §2.2: "must only accept this value"
    command = version_command & 0x0F
    if command == _LOCAL:
        return ProxyHeader(2, None)  # §2.2: the real endpoints; the block is skipped
    if command != _PROXY:
        raise ProxyHeaderError("PROXY v2 command is neither LOCAL nor PROXY")
    family, transport = family_transport >> 4, family_transport & 0x0F
    size = _ADDRESS_SIZE.get(family)
    if size is None or transport != _STREAM:
        raise ProxyHeaderError("PROXY v2 carries neither TCP over IPv4 nor TCP over IPv6")
    block = header[V2_FIXED:]
    addresses = 2 * size + 4
    if length < addresses:
        raise ProxyHeaderError("PROXY v2 address block is truncated")
    _check_tlvs(block[addresses:])
    source = ipaddress.ip_address(block[:size])
    source_port = int.from_bytes(block[2 * size : 2 * size + 2], "big")
    return ProxyHeader(2, (str(source), source_port))


def _check_tlvs(data: bytes) -> None:
    """§2.2: type, 2-octet length, value: skipped, but they must tile the rest exactly."""
    while data:
        if len(data) < 3 or len(data) < 3 + int.from_bytes(data[1:3], "big"):
            raise ProxyHeaderError("PROXY v2 TLV runs past the header")
        data = data[3 + int.from_bytes(data[1:3], "big") :]


async def read_header(reader: asyncio.StreamReader, timeout: float) -> ProxyHeader:
    """Read exactly one header, v1 or v2 (§2.2 tells them apart by the first octets), within
    ``timeout`` seconds (§1: "at least 3 seconds to cover a TCP retransmit").

    Raises :class:`ProxyHeaderError` for anything else: no header, a malformed one, or
    none in time; nothing after the header has been consumed.
    """
    try:
        async with asyncio.timeout(timeout):
            prefix = await reader.readexactly(_PREFIX)
            if prefix == SIGNATURE:
                fixed = prefix + await reader.readexactly(V2_FIXED - _PREFIX)
                length = int.from_bytes(fixed[14:16], "big")
                if length > V2_MAX_LENGTH:
                    raise ProxyHeaderError(f"PROXY v2 header longer than {V2_MAX_LENGTH} octets")
                return parse_v2(fixed + await reader.readexactly(length))
            if not prefix.startswith(b"PROXY "):
                raise ProxyHeaderError("no PROXY protocol header")
            line = bytearray(prefix)
            # The line's end is unknown, so octet by octet: never past the LF.
            while not line.endswith(b"\n") and len(line) < V1_MAX:
                line += await reader.readexactly(1)
            return parse_v1(bytes(line))
    except TimeoutError:
        raise ProxyHeaderError(f"no PROXY protocol header within {timeout:g} s") from None
    except asyncio.IncompleteReadError:
        raise ProxyHeaderError("connection closed inside the PROXY protocol header") from None
