"""Mailbox names in modified UTF-7 (RFC 3501 §5.1.3).

The index keeps names as Unicode; the wire carries them in modified UTF-7: printable
US-ASCII stands for itself except ``&``, which is ``&-``; any other run of characters is
``&`` + modified BASE64 (``,`` for ``/``, no padding) of its UTF-16BE + ``-``.
"""

from __future__ import annotations

import base64
import binascii
import re

_RUN = re.compile(r"[^\x20-\x7e]+|&")
_SHIFTED = re.compile(rb"&([A-Za-z0-9+,]*)-")


class InvalidName(ValueError):
    """Not valid modified UTF-7."""


def encode(name: str) -> bytes:
    def shift(m: re.Match[str]) -> str:
        if m.group() == "&":
            return "&-"
        raw = m.group().encode("utf-16-be", "surrogatepass")
        return "&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-"

    return _RUN.sub(shift, name).encode("ascii")


def decode(name: bytes) -> str:
    """Modified UTF-7 to Unicode. Deviation from RFC 3501 §5.1.3: a name with 8-bit
    octets is taken as UTF-8 (what RFC 6855 clients send), not refused."""
    if any(b > 0x7E for b in name):
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidName("mailbox name is neither modified UTF-7 nor UTF-8") from None
    out = []
    pos = 0
    for m in _SHIFTED.finditer(name):
        plain = name[pos : m.start()]
        if b"&" in plain:
            raise InvalidName("unterminated & in mailbox name")
        out.append(plain.decode("ascii"))
        payload = m.group(1)
        if not payload:
            out.append("&")
        else:
            out.append(_decode_run(payload))
        pos = m.end()
    rest = name[pos:]
    if b"&" in rest:
        raise InvalidName("unterminated & in mailbox name")
    out.append(rest.decode("ascii"))
    decoded = "".join(out)
    if encode(decoded) != name:  # RFC 3501 §5.1.3: the encoding is canonical
        raise InvalidName("mailbox name is not in canonical modified UTF-7")
    return decoded


def _decode_run(payload: bytes) -> str:
    padded = payload.replace(b",", b"/") + b"=" * (-len(payload) % 4)
    try:
        return base64.b64decode(padded, validate=True).decode("utf-16-be")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidName("bad modified BASE64 in mailbox name") from None
