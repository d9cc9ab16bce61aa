"""SEARCH (RFC 3501 §6.4.4, RFC 4731 ESEARCH, RFC 7162 §3.1.5 MODSEQ): the session's
search keys compiled into a :mod:`mailcore.search` program.

Everything that depends on the session is resolved here: sequence numbers become UID
ranges of this view, ``*`` its last message, RECENT/NEW/OLD this session's \\Recent
messages. A program that needs only the index summary (flags, UIDs, sizes, internal
dates, MODSEQs) is evaluated on the view itself, at no AWS cost; others go to the
``search`` operation, which reads metadata (and bytes for HEADER, BODY and TEXT).
"""

from __future__ import annotations

import codecs
from typing import Any

from mailcore import search as programs

from gateway.imap.grammar import SearchKey, SequenceSet
from gateway.imap.responses import BADCHARSET, No
from gateway.imap.view import MailboxView, Message

_ADDRESSES = {"BCC": "bcc", "CC": "cc", "FROM": "from", "TO": "to"}
_DATES = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
_FLAGS = {
    "ANSWERED": ("flag", "\\Answered"), "DELETED": ("flag", "\\Deleted"), "DRAFT": ("flag", "\\Draft"),
    "FLAGGED": ("flag", "\\Flagged"), "SEEN": ("flag", "\\Seen"),
    "UNANSWERED": ("noflag", "\\Answered"), "UNDELETED": ("noflag", "\\Deleted"), "UNDRAFT": ("noflag", "\\Draft"),
    "UNFLAGGED": ("noflag", "\\Flagged"), "UNSEEN": ("noflag", "\\Seen"),
}


def check_charset(charset: str | None) -> str:
    """RFC 3501 §6.4.4: US-ASCII must be supported; others we know are accepted, and an
    unknown one is NO [BADCHARSET (...)]."""
    name = charset or "US-ASCII"
    try:
        codecs.lookup(name)
    except LookupError:
        raise No(f"Unsupported charset {name[:40]}", BADCHARSET) from None
    return "utf-8" if name.upper() in ("US-ASCII", "ASCII") else name


class Compiler:
    def __init__(self, view: MailboxView, charset: str) -> None:
        self.view = view
        self.charset = charset
        self.uses_modseq = False

    def text(self, value: bytes) -> str:
        return value.decode(self.charset, "replace")

    def compile(self, key: SearchKey) -> list[Any]:
        name, args = key.name, key.args
        if name == "AND":
            return ["and", *(self.compile(k) for k in args)]
        if name == "OR":
            return ["or", self.compile(args[0]), self.compile(args[1])]
        if name == "NOT":
            return ["not", self.compile(args[0])]
        if name == "ALL":
            return ["all"]
        if name in _FLAGS:
            return list(_FLAGS[name])
        if name in ("KEYWORD", "UNKEYWORD"):
            return ["flag" if name == "KEYWORD" else "noflag", args[0]]
        if name == "SEQ":
            return ["uid", self.sequence_ranges(args[0])]
        if name == "UID":
            return ["uid", [list(r) for r in args[0].resolve(self.view.uids[-1] if self.view.uids else 0)]]
        if name in ("RECENT", "NEW", "OLD"):
            recent = ["uid", self.ranges_of([m.uid for m in self.view.messages.values() if m.recent])]
            if name == "NEW":  # RFC 3501 §6.4.4: RECENT UNSEEN
                return ["and", recent, ["noflag", "\\Seen"]]
            return recent if name == "RECENT" else ["not", recent]
        return self._content(name, args)

    def _content(self, name: str, args: tuple[Any, ...]) -> list[Any]:
        if name in _ADDRESSES:
            return ["address", _ADDRESSES[name], self.text(args[0])]
        if name == "SUBJECT":
            return ["subject", self.text(args[0])]
        if name in ("BODY", "TEXT"):
            return [name.lower(), self.text(args[0])]
        if name == "HEADER":
            return ["header", args[0].decode("ascii", "replace"), self.text(args[1])]
        if name in _DATES:
            return [name.lower(), args[0].isoformat()]
        if name in ("LARGER", "SMALLER"):
            return [name.lower(), int(args[0])]
        if name == "MODSEQ":
            self.uses_modseq = True
            return ["modseq", int(args[0])]
        raise No(f"Unsupported search key {name}")

    def sequence_ranges(self, sequence: SequenceSet) -> list[list[int]]:
        """Sequence numbers as UID ranges. Deviation from RFC 3501 §9 (BAD for numbers
        beyond EXISTS): like Dovecot, SEARCH just finds no message there."""
        uids = self.view.uids
        n = len(uids)
        out = []
        for lo, hi in sequence.resolve(n):
            hi = min(hi, n)
            if lo <= hi:
                out.append([uids[lo - 1], uids[hi - 1]])  # a contiguous run of this view
        return out

    @staticmethod
    def ranges_of(uids: list[int]) -> list[list[int]]:
        out: list[list[int]] = []
        for uid in sorted(uids):
            if out and out[-1][1] == uid - 1:
                out[-1][1] = uid
            else:
                out.append([uid, uid])
        return out


def candidate(m: Message) -> programs.Candidate:
    return programs.Candidate(m.uid, list(m.flags), m.size, m.internaldate, m.modseq, sha256=m.sha256)


def evaluate_locally(program: list[Any], view: MailboxView) -> list[Message]:
    """The messages of the view that match a program needing only the index summary."""
    messages = (view.messages[uid] for uid in view.uids)
    return [m for m in messages if not m.expunged and programs.matches(program, candidate(m))]
