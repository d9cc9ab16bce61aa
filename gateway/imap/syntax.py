"""IMAP command arguments (RFC 3501 §6, with RFC 7888 LITERAL+, RFC 4466/5258
LIST-EXTENDED, RFC 7162 CONDSTORE, RFC 4731 ESEARCH, RFC 6851 MOVE, RFC 2971 ID, RFC 5161
ENABLE, RFC 4959 SASL-IR): one argument parser per command, over the productions of
:mod:`gateway.imap.grammar`, and ``parse_command(buf) -> (Command, rest)``.

``buf`` holds the lines received so far (each with its CRLF) and the literals in between.
When the command goes on in a literal that has not arrived yet, parsing raises
:class:`~gateway.imap.grammar.NeedLiteral`; a syntax error raises
:class:`~gateway.imap.grammar.ParseError` carrying the tag (see :func:`error_tag`).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.imap.grammar import (
    FetchAtt,
    Limits,
    ParseError,
    Parser,
    SearchKey,
    Section,
    SequenceSet,
    Staged,
)

_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
#: RFC 3501 §6.4.5 macros.
FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_ATT_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SIMPLE_ATTS = {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
                "BODY", "BODYSTRUCTURE", "UID", "MODSEQ"}



# -- command arguments ----------------------------------------------------------------


@dataclass(frozen=True)
class NoArgs:
    pass


@dataclass(frozen=True)
class Login:
    userid: bytes
    password: bytes


@dataclass(frozen=True)
class Authenticate:
    mechanism: str
    initial: bytes | None  # RFC 4959 SASL-IR: decoded; b"" for "="


@dataclass(frozen=True)
class MailboxArg:
    mailbox: bytes


@dataclass(frozen=True)
class Select:
    mailbox: bytes
    condstore: bool = False


@dataclass(frozen=True)
class Rename:
    mailbox: bytes
    new_name: bytes


@dataclass(frozen=True)
class ListCommand:
    """RFC 3501 §6.3.8 LIST / §6.3.9 LSUB, RFC 5258 LIST-EXTENDED options."""

    reference: bytes
    patterns: tuple[bytes, ...]
    selection: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status_items: tuple[str, ...] = ()


@dataclass(frozen=True)
class StatusCommand:
    mailbox: bytes
    items: tuple[str, ...]


@dataclass(frozen=True)
class Append:
    mailbox: bytes
    flags: tuple[str, ...]
    date: datetime.datetime | None
    message: Staged


@dataclass(frozen=True)
class Fetch:
    sequence: SequenceSet
    atts: tuple[FetchAtt, ...]
    changed_since: int | None = None


@dataclass(frozen=True)
class Store:
    sequence: SequenceSet
    mode: str  # "+", "-" or "="
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None


@dataclass(frozen=True)
class Copy:
    sequence: SequenceSet
    mailbox: bytes


@dataclass(frozen=True)
class Search:
    key: SearchKey  # an AND of the keys given
    charset: str | None = None
    #: RFC 4731 ESEARCH RETURN options; None: a plain SEARCH answer.
    returns: frozenset[str] | None = None


@dataclass(frozen=True)
class UidExpunge:
    sequence: SequenceSet


@dataclass(frozen=True)
class Enable:
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class Id:
    fields: tuple[tuple[bytes, bytes | None], ...] | None


@dataclass(frozen=True)
class Command:
    tag: str
    #: Upper case; UID commands are "UID FETCH", "UID STORE", ...
    name: str
    args: Any = field(default_factory=NoArgs)


# -- command arguments (RFC 3501 §6) ---------------------------------------------------


def _no_args(p: Parser) -> NoArgs:
    return NoArgs()


def _login(p: Parser) -> Login:
    p.sp()
    userid = p.astring()
    p.sp()
    return Login(userid, p.astring())


def _authenticate(p: Parser) -> Authenticate:
    """RFC 3501 §6.2.2, RFC 4959 §3: ``AUTHENTICATE mech [SP (base64 / "=")]``."""
    p.sp()
    mechanism = p.atom().upper()
    initial = None
    if p.peek() == b" ":
        p.sp()
        if p.peek() == b"=":
            p.pos += 1
            initial = b""
        else:
            initial = decode_base64(p._match(_BASE64, "base64").group())
    return Authenticate(mechanism, initial)


def decode_base64(text: bytes) -> bytes:
    if not text or len(text) % 4:
        raise ParseError("invalid base64")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ParseError("invalid base64") from None


def _mailbox(p: Parser) -> MailboxArg:
    p.sp()
    return MailboxArg(p.mailbox())


def _select(p: Parser) -> Select:
    """RFC 3501 §6.3.1, RFC 4466 §2.1 select-params, RFC 7162 §3.1.8 CONDSTORE."""
    p.sp()
    mailbox = p.mailbox()
    condstore = False
    if p.peek() == b" ":
        p.sp()
        params = p.parenthesized(p.atom)
        for param in params:
            if param.upper() != "CONDSTORE":
                raise ParseError(f"unknown SELECT parameter {param}")
            condstore = True
    return Select(mailbox, condstore)


def _rename(p: Parser) -> Rename:
    p.sp()
    old = p.mailbox()
    p.sp()
    return Rename(old, p.mailbox())


_LIST_SELECTION = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"}
_LIST_RETURN = {"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"}


def _list(p: Parser) -> ListCommand:
    """RFC 3501 §6.3.8 and RFC 5258 §3 (LIST-EXTENDED), RFC 6154 §3, RFC 5819 (LIST-STATUS)."""
    p.sp()
    selection: set[str] = set()
    if p.peek() == b"(":
        for option in p.parenthesized(p.atom):
            if option.upper() not in _LIST_SELECTION:
                raise ParseError(f"unknown LIST selection option {option}")
            selection.add(option.upper())
        p.sp()
        if selection == {"RECURSIVEMATCH"}:
            raise ParseError("RECURSIVEMATCH needs another selection option")  # RFC 5258 §3
    reference = p.mailbox()
    p.sp()
    patterns = tuple(p.parenthesized(p.list_mailbox)) if p.peek() == b"(" else (p.list_mailbox(),)
    returns: set[str] = set()
    status: tuple[str, ...] = ()
    if p.peek() == b" ":
        p.sp()
        p.expect(b"RETURN")
        p.sp()
        p.expect(b"(")
        while p.peek() != b")":
            if returns:
                p.sp()
            option = p.atom().upper()
            if option not in _LIST_RETURN:
                raise ParseError(f"unknown LIST return option {option}")
            if option == "STATUS":
                p.sp()
                status = tuple(_status_items(p))
            returns.add(option)
        p.pos += 1
    return ListCommand(reference, patterns, frozenset(selection), frozenset(returns), status)


def _lsub(p: Parser) -> ListCommand:
    p.sp()
    reference = p.mailbox()
    p.sp()
    return ListCommand(reference, (p.list_mailbox(),), frozenset({"SUBSCRIBED", "LSUB"}))


STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ")


def _status_items(p: Parser) -> list[str]:
    items = [a.upper() for a in p.parenthesized(p.atom)]
    if not items or any(i not in STATUS_ITEMS for i in items):
        raise ParseError("unknown STATUS item")
    return items


def _status(p: Parser) -> StatusCommand:
    """RFC 3501 §6.3.10, RFC 7162 §3.1.6 HIGHESTMODSEQ."""
    p.sp()
    mailbox = p.mailbox()
    p.sp()
    return StatusCommand(mailbox, tuple(_status_items(p)))


def _append(p: Parser) -> Append:
    """RFC 3501 §6.3.11 ``APPEND mailbox [SP flag-list] [SP date-time] SP literal``."""
    p.sp()
    mailbox = p.mailbox()
    p.sp()
    flags: tuple[str, ...] = ()
    date = None
    if p.peek() == b"(":
        flags = p.flag_list()
        p.sp()
    if p.peek() == b'"':
        date = p.date_time()
        p.sp()
    message = p.literal(message=True)
    assert isinstance(message, Staged)
    return Append(mailbox, flags, date, message)


def _fetch_att(p: Parser) -> FetchAtt:
    """RFC 3501 §9 fetch-att, RFC 7162 §3.1.4.1 MODSEQ."""
    m = p._match(_ATT_NAME, "a fetch attribute")
    name = m.group().decode().upper()
    if name in ("BODY", "BODY.PEEK") and p.peek() == b"[":
        section = _section(p)
        partial = None
        if p.peek() == b"<":
            p.pos += 1
            origin = p.number()
            p.expect(b".")
            partial = (origin, p.nz_number())
            p.expect(b">")
        return FetchAtt("BODY[]", section, peek=name == "BODY.PEEK", partial=partial)
    if name not in _SIMPLE_ATTS:
        raise ParseError(f"unknown fetch attribute {name[:40]}")
    return FetchAtt(name)


def _section(p: Parser) -> Section:
    """RFC 3501 §9 section: ``"[" [section-spec] "]"``."""
    p.expect(b"[")
    part: list[int] = []
    text = ""
    fields: tuple[str, ...] = ()
    while p.peek().isdigit():
        part.append(p.nz_number())
        if p.peek() != b".":
            break
        p.pos += 1
    if p.peek() != b"]":
        m = p._match(re.compile(rb"HEADER\.FIELDS\.NOT|HEADER\.FIELDS|HEADER|TEXT|MIME", re.I), "a section")
        text = m.group().decode().upper()
        if text == "MIME" and not part:
            raise ParseError("MIME needs a part number")  # RFC 3501 §6.4.5
        if text.startswith("HEADER.FIELDS"):
            p.sp()
            names = p.parenthesized(p.astring)
            if not names:
                raise ParseError("empty header list")
            fields = tuple(n.decode("ascii", "replace").upper() for n in names)
    elif part and p.buf[p.pos - 1 : p.pos] == b".":
        raise ParseError("section ends with a dot")
    p.expect(b"]")
    return Section(tuple(part), text, fields)


def _fetch(p: Parser) -> Fetch:
    """RFC 3501 §6.4.5, RFC 7162 §3.1.4.1 CHANGEDSINCE modifier."""
    p.sp()
    sequence = p.sequence_set()
    p.sp()
    if p.peek() == b"(":
        atts = tuple(p.parenthesized(lambda: _fetch_att(p)))
        if not atts:
            raise ParseError("empty fetch attribute list")
    else:
        start = p.pos
        word = p._match(_WORD, "a fetch attribute").group().decode().upper()
        if word in FETCH_MACROS and p.peek() in (b" ", b"\r"):
            atts = tuple(FetchAtt(n) for n in FETCH_MACROS[word])
        else:
            p.pos = start
            atts = (_fetch_att(p),)
    changed_since = None
    if p.peek() == b" ":
        p.sp()
        for modifier in p.parenthesized(lambda: _modifier(p, (b"CHANGEDSINCE",))):
            changed_since = modifier[1]
    return Fetch(sequence, atts, changed_since)


def _modifier(p: Parser, names: tuple[bytes, ...]) -> tuple[str, int]:
    for name in names:
        if p.at(name):
            p.pos += len(name)
            p.sp()
            return name.decode(), p.mod_sequence_value()
    raise ParseError("unknown modifier")


def _store(p: Parser) -> Store:
    """RFC 3501 §6.4.6, RFC 7162 §3.1.3 UNCHANGEDSINCE."""
    p.sp()
    sequence = p.sequence_set()
    p.sp()
    unchanged_since = None
    if p.peek() == b"(":
        for modifier in p.parenthesized(lambda: _modifier(p, (b"UNCHANGEDSINCE",))):
            unchanged_since = modifier[1]
        p.sp()
    m = p._match(re.compile(rb"([+-]?)FLAGS(\.SILENT)?", re.I), "[+|-]FLAGS[.SILENT]")
    mode = m.group(1).decode() or "="
    p.sp()
    if p.peek() == b"(":
        flags = p.flag_list()
    else:
        flags_list = [p.flag()]
        while p.peek() == b" ":
            p.sp()
            flags_list.append(p.flag())
        flags = tuple(flags_list)
    if any(f == "\\Recent" or f.upper() == "\\RECENT" for f in flags):
        raise ParseError("\\Recent cannot be stored")  # RFC 3501 §2.3.2
    return Store(sequence, mode, bool(m.group(2)), flags, unchanged_since)


def _copy(p: Parser) -> Copy:
    p.sp()
    sequence = p.sequence_set()
    p.sp()
    return Copy(sequence, p.mailbox())


_SEARCH_FLAGS = {
    "ANSWERED": ("flag", "\\Answered"), "DELETED": ("flag", "\\Deleted"), "DRAFT": ("flag", "\\Draft"),
    "FLAGGED": ("flag", "\\Flagged"), "SEEN": ("flag", "\\Seen"),
    "UNANSWERED": ("noflag", "\\Answered"), "UNDELETED": ("noflag", "\\Deleted"), "UNDRAFT": ("noflag", "\\Draft"),
    "UNFLAGGED": ("noflag", "\\Flagged"), "UNSEEN": ("noflag", "\\Seen"),
}
_SEARCH_BARE = {"ALL", "NEW", "OLD", "RECENT", *_SEARCH_FLAGS}
_SEARCH_STRING = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_SEARCH_DATE = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}
_SEARCH_NUMBER = {"LARGER", "SMALLER"}
_WORD = re.compile(rb"[A-Za-z]+")


def _search_key(p: Parser) -> SearchKey:
    """RFC 3501 §9 search-key, RFC 7162 §3.1.5 MODSEQ."""
    c = p.peek()
    if c == b"(":
        return SearchKey("AND", tuple(p.parenthesized(lambda: _search_key(p))))
    if c == b"*" or c.isdigit():
        return SearchKey("SEQ", (p.sequence_set(),))
    word = p._match(_WORD, "a search key").group().decode().upper()
    if word in _SEARCH_BARE:
        return SearchKey(word)
    p.sp()
    if word in ("NOT", "OR"):
        p.nest()
        keys = [_search_key(p)]
        if word == "OR":
            p.sp()
            keys.append(_search_key(p))
        p.unnest()
        return SearchKey(word, tuple(keys))
    argument = _SEARCH_ARGUMENTS.get(word)
    if argument is None:
        raise ParseError(f"unknown search key {word[:40]}")
    return SearchKey(word, argument(p))


def _header_key(p: Parser) -> tuple[bytes, bytes]:
    name = p.astring()
    p.sp()
    return name, p.astring()


def _modseq_key(p: Parser) -> tuple[int]:
    if p.peek() == b'"':  # RFC 7162 §3.1.5 entry-name SP entry-type-req (metadata is ignored)
        p.string()
        p.sp()
        p.atom()
        p.sp()
    return (p.mod_sequence_value(),)


_SEARCH_ARGUMENTS: dict[str, Callable[[Parser], tuple[Any, ...]]] = {
    **{k: (lambda p: (p.astring(),)) for k in _SEARCH_STRING},
    **{k: (lambda p: (p.date(),)) for k in _SEARCH_DATE},
    **{k: (lambda p: (p.number(),)) for k in _SEARCH_NUMBER},
    "KEYWORD": lambda p: (p.atom(),),
    "UNKEYWORD": lambda p: (p.atom(),),
    "HEADER": _header_key,
    "UID": lambda p: (p.sequence_set(),),
    "MODSEQ": _modseq_key,
}


_ESEARCH_RETURN = {"MIN", "MAX", "ALL", "COUNT"}


def _search(p: Parser) -> Search:
    """RFC 3501 §6.4.4 ``SEARCH [CHARSET astring] 1*(SP search-key)``, RFC 4731 §3 RETURN."""
    p.sp()
    returns: frozenset[str] | None = None
    if p.at(b"RETURN "):
        p.pos += 7
        options = {o.upper() for o in p.parenthesized(p.atom)}
        if options - _ESEARCH_RETURN:
            raise ParseError("unknown SEARCH RETURN option")
        returns = frozenset(options or {"ALL"})  # RFC 4731 §3.1: () means (ALL)
        p.sp()
    charset = None
    if p.at(b"CHARSET "):
        p.pos += 8
        charset = p.astring().decode("ascii", "replace").upper()
        p.sp()
    keys = [_search_key(p)]
    while p.peek() == b" ":
        p.sp()
        keys.append(_search_key(p))
    return Search(SearchKey("AND", tuple(keys)), charset, returns)


def _uid_expunge(p: Parser) -> UidExpunge:
    p.sp()
    return UidExpunge(p.sequence_set())


def _enable(p: Parser) -> Enable:
    """RFC 5161 §3.1 ``ENABLE 1*(SP capability)``."""
    caps = []
    while p.peek() == b" ":
        p.sp()
        caps.append(p.atom().upper())
    if not caps:
        raise ParseError("ENABLE needs a capability")
    return Enable(tuple(caps))


def _id(p: Parser) -> Id:
    """RFC 2971 §3.3 ``ID SP ("(" string SP nstring *(SP string SP nstring) ")" / nil)``."""
    p.sp()
    if p.at(b"NIL"):
        p.pos += 3
        return Id(None)
    p.expect(b"(")
    pairs: list[tuple[bytes, bytes | None]] = []
    while p.peek() != b")":
        if pairs:
            p.sp()
        key = p.string()
        p.sp()
        pairs.append((key, p.nstring()))
        if len(pairs) > 30:
            raise ParseError("too many ID fields")  # RFC 2971 §3.3: at most 30
    p.pos += 1
    return Id(tuple(pairs))


#: Command name -> its argument parser. UID commands have their own entries.
ARGUMENTS: dict[str, Callable[[Parser], Any]] = {
    "CAPABILITY": _no_args, "NOOP": _no_args, "LOGOUT": _no_args, "STARTTLS": _no_args,
    "LOGIN": _login, "AUTHENTICATE": _authenticate,
    "SELECT": _select, "EXAMINE": _select, "CREATE": _mailbox, "DELETE": _mailbox, "RENAME": _rename,
    "SUBSCRIBE": _mailbox, "UNSUBSCRIBE": _mailbox, "LIST": _list, "LSUB": _lsub, "STATUS": _status,
    "APPEND": _append, "CHECK": _no_args, "CLOSE": _no_args, "UNSELECT": _no_args, "EXPUNGE": _no_args,
    "SEARCH": _search, "FETCH": _fetch, "STORE": _store, "COPY": _copy, "MOVE": _copy,
    "UID SEARCH": _search, "UID FETCH": _fetch, "UID STORE": _store, "UID COPY": _copy, "UID MOVE": _copy,
    "UID EXPUNGE": _uid_expunge, "IDLE": _no_args, "NAMESPACE": _no_args, "ENABLE": _enable, "ID": _id,
}


def parse_command_name(buf: bytes) -> tuple[str, str, int]:
    """The tag, the command name and where the arguments start. Raises
    :class:`ParseError` (``args[1]`` is the tag when one was read)."""
    p = Parser(buf)
    tag = p.tag()
    try:
        p.sp()
        name = p.atom().upper()
        if name == "UID":
            p.sp()
            name = "UID " + p.atom().upper()
    except ParseError as error:
        raise ParseError(str(error), tag) from None
    if name not in ARGUMENTS:
        raise ParseError(f"unknown command {name[:40]}", tag)
    return tag, name, p.pos


def parse_command(
    buf: bytes,
    provided: frozenset[int] | set[int] = frozenset(),
    external: Mapping[int, Staged] | None = None,
    limits: Limits | None = None,
) -> tuple[Command, bytes]:
    """One command from ``buf`` -> (the command, what follows it)."""
    tag, name, pos = parse_command_name(buf)
    p = Parser(buf, pos, provided, external, limits)
    try:
        args = ARGUMENTS[name](p)
        p.crlf()
    except ParseError as error:
        raise ParseError(str(error), tag) from None
    return Command(tag, name, args), buf[p.pos :]


def error_tag(error: ParseError) -> str | None:
    return error.args[1] if len(error.args) > 1 else None
