"""IMAP syntax (RFC 3501 §9, RFC 7888 literals): the lexical productions and values,
parsing with no I/O. The command arguments built from them are in
:mod:`gateway.imap.syntax`.

``syntax.parse_command(buf) -> (Command, rest)`` reads one whole command from ``buf``, which
holds the lines received so far (each with its CRLF) and the literals in between. When
the command goes on in a literal that has not arrived yet, it raises
:class:`NeedLiteral` (size, synchronizing or not, and whether it is an APPEND message):
the session checks the size against its limits *before* reading the literal, sends
``+`` for a synchronizing one (RFC 3501 §7.5), reads it (or streams an APPEND message to
S3 and hands the parser a :class:`Staged` stand-in), appends the next line and parses
again. A syntax error raises :class:`ParseError`, which the session answers with ``BAD``.

The productions are methods of :class:`Parser` named after the RFC 3501 §9 ABNF rules.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: RFC 3501 §9 number: 32-bit unsigned; RFC 7162 §7 mod-sequence-value: 63-bit.
MAX_NUMBER = 2**32 - 1
MAX_MODSEQ = 2**63 - 1
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# RFC 3501 §9 ATOM-CHAR: any CHAR except atom-specials "(" ")" "{" SP CTL "%" "*" DQUOTE "\" "]".
_ATOM = re.compile(rb"[^(){ %*\"\\\]\x00-\x1f\x7f-\xff]+")
_ASTRING = re.compile(rb"[^(){ %*\"\\\x00-\x1f\x7f-\xff]+")  # ATOM-CHAR / resp-specials
_TAG = re.compile(rb"[^(){ %*\"\\+\x00-\x1f\x7f-\xff]+")  # astring chars except "+"
_LIST_CHARS = re.compile(rb"[^(){ \"\\\x00-\x1f\x7f-\xff]+")  # ATOM-CHAR / list-wildcards / "]"
_DIGITS = re.compile(rb"[0-9]+")
_LITERAL = re.compile(rb"\{([0-9]{1,20})(\+?)\}\r\n")
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')
_UNESCAPE = re.compile(rb'\\(["\\])')
_DATE_TEXT = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(rb'"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"')


class ParseError(Exception):
    """Syntax error: the session answers ``BAD`` (RFC 3501 §7.1.3)."""


class NeedLiteral(Exception):
    """The command goes on in a literal that has not been read yet."""

    def __init__(self, offset: int, size: int, synchronizing: bool, message: bool) -> None:
        super().__init__(f"literal of {size} octets needed")
        #: Where the literal's ``{`` is in the buffer (the key for ``provided``/``external``).
        self.offset = offset
        self.size = size
        self.synchronizing = synchronizing
        #: An APPEND message: streamed to S3 by the session instead of buffered.
        self.message = message


@dataclass(frozen=True)
class Staged:
    """An APPEND message literal that the session streamed to S3 (in place of its bytes)."""

    key: str
    size: int


@dataclass(frozen=True)
class Limits:
    #: Parentheses and NOT/OR nesting (search keys, lists).
    max_depth: int = 16
    #: Comma-separated items in one sequence set.
    max_sequence_items: int = 10_000


# -- values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SequenceSet:
    """RFC 3501 §9 sequence-set; ``None`` stands for ``*``. Ranges keep the client's order."""

    ranges: tuple[tuple[int | None, int | None], ...]

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Inclusive (low, high) ranges with ``*`` = ``largest`` (RFC 3501 §9: ``n:*`` with
        n above the largest value still includes the largest)."""
        out = []
        for a, b in self.ranges:
            lo, hi = largest if a is None else a, largest if b is None else b
            out.append((min(lo, hi), max(lo, hi)))
        return out

    @property
    def uses_star(self) -> bool:
        return any(a is None or b is None for a, b in self.ranges)


@dataclass(frozen=True)
class Section:
    """RFC 3501 §6.4.5 section-spec: part numbers and a text specifier."""

    part: tuple[int, ...] = ()
    #: "", "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT" or "MIME".
    text: str = ""
    fields: tuple[str, ...] = ()

    def spec(self) -> str:
        """As echoed in the response (RFC 3501 §7.4.2 BODY[<section>])."""
        out = ".".join(str(p) for p in self.part)
        if self.text:
            out += ("." if out else "") + self.text
        if self.text.startswith("HEADER.FIELDS"):
            out += " (" + " ".join(self.fields) + ")"
        return out


@dataclass(frozen=True)
class FetchAtt:
    """One fetch-att (RFC 3501 §6.4.5): ``name`` is ENVELOPE, FLAGS, INTERNALDATE,
    RFC822, RFC822.HEADER, RFC822.SIZE, RFC822.TEXT, BODY, BODYSTRUCTURE, UID, MODSEQ or
    BODY[] (with ``section``, ``peek``, ``partial`` = (origin, octets))."""

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None


@dataclass(frozen=True)
class SearchKey:
    """One RFC 3501 §6.4.4 search-key: ``name`` and its arguments (bytes for strings,
    :class:`datetime.date`, int, :class:`SequenceSet`, or child keys)."""

    name: str
    args: tuple[Any, ...] = ()


# -- the parser -------------------------------------------------------------------------


class Parser:
    """Productions over ``buf`` from ``pos``. ``provided`` holds the offsets of literals
    whose data the session has put into ``buf``; ``external`` the APPEND messages it
    streamed elsewhere."""

    def __init__(
        self,
        buf: bytes,
        pos: int = 0,
        provided: frozenset[int] | set[int] = frozenset(),
        external: Mapping[int, Staged] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.buf = buf
        self.pos = pos
        self.provided = provided
        self.external = external or {}
        self.limits = limits or Limits()
        self.depth = 0

    # -- characters ------------------------------------------------------------------

    def peek(self, n: int = 1) -> bytes:
        return self.buf[self.pos : self.pos + n]

    def at(self, text: bytes) -> bool:
        return self.buf[self.pos : self.pos + len(text)].upper() == text

    def expect(self, text: bytes, what: str | None = None) -> None:
        if not self.at(text):
            raise ParseError(f"expected {what or text.decode()}")
        self.pos += len(text)

    def sp(self) -> None:
        self.expect(b" ", "a space")

    def crlf(self) -> None:
        if self.buf[self.pos : self.pos + 2] != b"\r\n":
            raise ParseError("unexpected characters at the end of the command")
        self.pos += 2

    def at_end(self) -> bool:
        return self.buf[self.pos : self.pos + 2] == b"\r\n"

    def _match(self, pattern: re.Pattern[bytes], what: str) -> re.Match[bytes]:
        m = pattern.match(self.buf, self.pos)
        if not m:
            raise ParseError(f"expected {what}")
        self.pos = m.end()
        return m

    def nest(self) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise ParseError("too deeply nested")

    def unnest(self) -> None:
        self.depth -= 1

    # -- RFC 3501 §9 basic productions -------------------------------------------------

    def tag(self) -> str:
        return self._match(_TAG, "a tag").group().decode("ascii")

    def atom(self) -> str:
        return self._match(_ATOM, "an atom").group().decode("ascii")

    def number(self, maximum: int = MAX_NUMBER) -> int:
        value = int(self._match(_DIGITS, "a number").group())
        if value > maximum:
            raise ParseError("number out of range")
        return value

    def nz_number(self) -> int:
        value = self.number()
        if value == 0:
            raise ParseError("zero is not allowed here")
        return value

    def mod_sequence_value(self) -> int:
        """RFC 7162 §7: 1*DIGIT, up to 2^63 - 1."""
        return self.number(MAX_MODSEQ)

    def quoted(self) -> bytes:
        m = self._match(_QUOTED, "a quoted string")
        # Deviation from RFC 3501 §9 (TEXT-CHAR is 7-bit): 8-bit UTF-8 is accepted in
        # quoted strings, as RFC 6855 allows once UTF8=ACCEPT is enabled (Dovecot too).
        return _UNESCAPE.sub(rb"\1", m.group(1))

    def literal(self, message: bool = False) -> bytes | Staged:
        """RFC 3501 §4.3 literal, RFC 7888 §3 non-synchronizing ``{n+}``."""
        start = self.pos
        m = self._match(_LITERAL, "a literal")
        size = int(m.group(1))
        if start in self.external:
            return self.external[start]
        if start not in self.provided:
            self.pos = start
            raise NeedLiteral(start, size, synchronizing=not m.group(2), message=message)
        data = self.buf[self.pos : self.pos + size]
        if len(data) != size:
            raise ParseError("literal shorter than announced")
        self.pos += size
        if message:
            raise ParseError("message literal was not staged")  # the session always stages
        return data

    def string(self) -> bytes:
        if self.peek() == b'"':
            return self.quoted()
        if self.peek() == b"{":
            value = self.literal()
            assert isinstance(value, bytes)
            return value
        raise ParseError("expected a string")

    def astring(self) -> bytes:
        if self.peek() in (b'"', b"{"):
            return self.string()
        return self._match(_ASTRING, "an atom or string").group()

    def nstring(self) -> bytes | None:
        if self.at(b"NIL") and not _ASTRING.match(self.buf, self.pos + 3):
            self.pos += 3
            return None
        return self.string()

    def mailbox(self) -> bytes:
        """RFC 3501 §9 mailbox; INBOX's case is folded by the index (RFC 3501 §5.1)."""
        return self.astring()

    def list_mailbox(self) -> bytes:
        if self.peek() in (b'"', b"{"):
            return self.string()
        return self._match(_LIST_CHARS, "a mailbox pattern").group()

    def flag(self) -> str:
        """RFC 3501 §9 flag: a system flag, a keyword, or a flag-extension."""
        if self.peek() == b"\\":
            self.pos += 1
            return "\\" + self.atom()
        return self.atom()

    def flag_list(self) -> tuple[str, ...]:
        self.expect(b"(")
        flags: list[str] = []
        while self.peek() != b")":
            if flags:
                self.sp()
            flags.append(self.flag())
        self.pos += 1
        return tuple(flags)

    def date(self) -> datetime.date:
        """RFC 3501 §9 date: date-text or quoted date-text."""
        quoted = self.peek() == b'"'
        if quoted:
            self.pos += 1
        m = self._match(_DATE_TEXT, "a date (dd-Mon-yyyy)")
        if quoted:
            self.expect(b'"')
        return _date(m.group(1), m.group(2), m.group(3))

    def date_time(self) -> datetime.datetime:
        """RFC 3501 §9 date-time: ``"dd-Mon-yyyy hh:mm:ss +zzzz"``."""
        m = self._match(_DATE_TIME, 'a date-time ("dd-Mon-yyyy hh:mm:ss +zzzz")')
        day = _date(m.group(1).strip(), m.group(2), m.group(3))
        hour, minute, second = int(m.group(4)), int(m.group(5)), int(m.group(6))
        offset = datetime.timedelta(hours=int(m.group(8)), minutes=int(m.group(9)))
        if hour > 23 or minute > 59 or second > 60 or offset >= datetime.timedelta(hours=24):
            raise ParseError("invalid date-time")
        zone = datetime.timezone(-offset if m.group(7) == b"-" else offset)
        return datetime.datetime(day.year, day.month, day.day, hour, minute, min(second, 59), tzinfo=zone)

    def seq_number(self) -> int | None:
        if self.peek() == b"*":
            self.pos += 1
            return None
        return self.nz_number()

    def sequence_set(self) -> SequenceSet:
        """RFC 3501 §9 sequence-set, at most ``max_sequence_items`` items."""
        ranges = []
        while True:
            first = self.seq_number()
            last = first
            if self.peek() == b":":
                self.pos += 1
                last = self.seq_number()
            ranges.append((first, last))
            if len(ranges) > self.limits.max_sequence_items:
                raise ParseError("sequence set has too many items")
            if self.peek() != b",":
                return SequenceSet(tuple(ranges))
            self.pos += 1

    def parenthesized(self, item: Callable[[], Any]) -> list[Any]:
        """``"(" [item *(SP item)] ")"``."""
        self.expect(b"(")
        self.nest()
        items: list[Any] = []
        while self.peek() != b")":
            if items:
                self.sp()
            items.append(item())
        self.pos += 1
        self.unnest()
        return items


def _date(day: bytes, month: bytes, year: bytes) -> datetime.date:
    try:
        return datetime.date(int(year), _MONTHS.index(month.decode().upper()) + 1, int(day))
    except ValueError:
        raise ParseError("invalid date") from None


