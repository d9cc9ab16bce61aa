"""Mailbox names on the wire and LIST/LSUB matching (RFC 3501 §5.1, §6.3.8, §6.3.9;
RFC 5258 LIST-EXTENDED; RFC 3348 CHILDREN; RFC 6154 SPECIAL-USE).

Names travel in modified UTF-7 (:mod:`gateway.imap.utf7`); the hierarchy delimiter is
``/`` (RFC 3501 §5.1.1, the index's :data:`mailcore.mailboxes.DELIMITER`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gateway.imap import utf7
from gateway.imap.responses import CANNOT, No, string

DELIMITER = "/"
INBOX = "INBOX"


def decode_name(wire: bytes) -> str:
    """A mailbox argument as the index names it (INBOX case-folded, RFC 3501 §5.1)."""
    try:
        name = utf7.decode(wire)
    except utf7.InvalidName as error:
        raise No(f"Invalid mailbox name: {error}", CANNOT) from None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise No("Invalid mailbox name", CANNOT)
    head, sep, rest = name.partition(DELIMITER)
    if head.upper() == INBOX:
        name = INBOX + sep + rest
    return name


def encode_name(name: str) -> bytes:
    return string(utf7.encode(name))


def pattern_regex(reference: str, pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8: ``*`` matches anything, ``%`` anything but the delimiter; the
    reference is prefixed to the pattern. INBOX matches case-insensitively."""
    full = reference + pattern
    head, sep, rest = full.partition(DELIMITER)
    if head.upper() == INBOX:
        full = INBOX + sep + rest
    out = []
    for c in full:
        out.append(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c))
    return re.compile("".join(out), re.DOTALL)


@dataclass
class Entry:
    name: str
    exists: bool
    subscribed: bool = False
    special_use: str | None = None
    children: bool = False
    subscribed_children: bool = False
    status: dict[str, Any] = field(default_factory=dict)


def tree(mailboxes: list[dict[str, Any]]) -> dict[str, Entry]:
    """Every mailbox and every missing ancestor (a \\Noselect name, RFC 3501 §6.3.8)."""
    entries: dict[str, Entry] = {}
    for m in mailboxes:
        entries[m["name"]] = Entry(m["name"], True, bool(m.get("subscribed")), m.get("special_use"), status=m)
    for name in list(entries):
        levels = name.split(DELIMITER)
        for i in range(1, len(levels)):
            parent = DELIMITER.join(levels[:i])
            entry = entries.setdefault(parent, Entry(parent, False))
            entry.children = True
            if entries[name].subscribed:
                entry.subscribed_children = True
    return entries
