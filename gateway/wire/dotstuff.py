"""Dot-stuffing of multi-line data (RFC 5321 §4.5.2, RFC 1939 §3).

Sending: a line that starts with "." gets one more "."; the data ends with CRLF.CRLF.
Receiving is done line by line by the protocol (it must also watch size limits).
"""

from __future__ import annotations

import re

_LINE_START_DOT = re.compile(rb"(^|\r\n)\.", re.MULTILINE)
TERMINATOR = b".\r\n"


def stuff(data: bytes) -> bytes:
    """Dot-stuff ``data`` (CRLF line ends) and close it with the terminator line."""
    body = _LINE_START_DOT.sub(rb"\1..", data)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + TERMINATOR


def unstuff_line(line: bytes) -> bytes | None:
    """One received line (without CRLF): None for the terminating ".", else the line unstuffed."""
    if line == b".":
        return None
    return line[1:] if line.startswith(b".") else line
