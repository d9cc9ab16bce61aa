"""SEARCH programs (RFC 3501 §6.4.4, RFC 7162 §3.1.5): what the IMAP gateway compiles a
SEARCH command into, and how a program is evaluated against one message.

Standard library only: the MailboxFunction evaluates programs over the index (operation
``search``), and the gateway evaluates programs that need nothing but the index summary
(flags, UID, size, dates, MODSEQ) against its session's view, at no AWS cost.

A program is JSON: a list whose first item names the node.

| node | meaning | needs |
|---|---|---|
| ``["all"]`` | every message | |
| ``["and", k, ...]`` / ``["or", a, b]`` / ``["not", k]`` | logic | |
| ``["uid", [[lo, hi], ...]]`` | UID in one of the inclusive ranges | |
| ``["flag", f]`` / ``["noflag", f]`` | flag set / not set (case-insensitive) | |
| ``["larger", n]`` / ``["smaller", n]`` | RFC822.SIZE > n / < n | |
| ``["before" \\| "on" \\| "since", "YYYY-MM-DD"]`` | internal date (UTC date) | |
| ``["modseq", n]`` | MODSEQ >= n (RFC 7162 §3.1.5) | |
| ``["sentbefore" \\| "senton" \\| "sentsince", "YYYY-MM-DD"]`` | Date: header's date | meta |
| ``["address", field, s]`` | ``from``/``to``/``cc``/``bcc`` envelope field contains s | meta |
| ``["subject", s]`` | envelope subject contains s | meta |
| ``["header", name, s]`` | a ``name`` header field contains s ("" = exists) | bytes |
| ``["body", s]`` / ``["text", s]`` | decoded body / header and body contain s | bytes |

Strings match as case-insensitive substrings of the decoded text (RFC 3501 §6.4.4:
"case-insensitive substring"), after RFC 2047 decoding of header fields and
Content-Transfer-Encoding and charset decoding of text parts.
"""

from __future__ import annotations

import contextlib
import datetime
import email
import email.header
import email.policy
import email.utils
import json
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailcore.errors import InvalidInput

#: Nesting limit of a program (the IMAP parser limits client input more tightly).
MAX_DEPTH = 64
MAX_NODES = 10_000
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INDEX_NODES = {"all", "and", "or", "not", "uid", "flag", "noflag", "larger", "smaller", "before", "on", "since", "modseq"}
_META_NODES = {"sentbefore", "senton", "sentsince", "address", "subject"}
_BYTES_NODES = {"header", "body", "text"}
#: RFC 3501 §7.4.2 envelope positions of the address fields.
ENVELOPE_FIELDS = {"from": 2, "sender": 3, "reply-to": 4, "to": 5, "cc": 6, "bcc": 7}


@dataclass
class Candidate:
    """One message as a program sees it. ``meta`` is the MIME metadata of
    :mod:`mailcore.mime` (needed by meta keys); ``raw`` returns its bytes (bytes keys)."""

    uid: int
    flags: list[str]
    size: int
    internaldate: int
    modseq: int
    meta: dict[str, Any] | None = None
    raw: Callable[[], bytes] | None = None
    sha256: str = ""


@dataclass(frozen=True)
class Needs:
    meta: bool
    raw: bool


def loads(text: str) -> list[Any]:
    """Parse and check a program; malformed ones raise :class:`InvalidInput`."""
    try:
        program = json.loads(text)
    except ValueError:
        raise InvalidInput("search program is not JSON") from None
    check(program)
    return program  # type: ignore[no-any-return]


#: Leaf nodes: their argument types (``date`` is a YYYY-MM-DD string).
_LEAVES: dict[str, tuple[str, ...]] = {
    "all": (),
    "uid": ("ranges",),
    **{k: ("str",) for k in ("flag", "noflag", "subject", "body", "text")},
    **{k: ("int",) for k in ("larger", "smaller", "modseq")},
    **{k: ("date",) for k in ("before", "on", "since", "sentbefore", "senton", "sentsince")},
    "address": ("field", "str"),
    "header": ("str", "str"),
}


def check(node: Any, depth: int = 0, count: list[int] | None = None) -> None:
    count = count if count is not None else [0]
    count[0] += 1
    if depth > MAX_DEPTH or count[0] > MAX_NODES:
        raise InvalidInput("search program too complex")
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise InvalidInput("search node must be a list naming its kind")
    kind, args = node[0], node[1:]
    if kind in ("and", "or", "not"):
        if (kind == "or" and len(args) != 2) or (kind == "not" and len(args) != 1):
            raise InvalidInput(f"bad arguments to {kind!r}")
        for child in args:
            check(child, depth + 1, count)
        return
    spec = _LEAVES.get(kind)
    if spec is None:
        raise InvalidInput(f"unknown search node {kind!r}")
    if len(args) != len(spec) or not all(_fits(t, a) for t, a in zip(spec, args)):
        raise InvalidInput(f"bad arguments to {kind!r}")


def _fits(kind: str, value: Any) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "date":
        return isinstance(value, str) and _DATE.fullmatch(value) is not None
    if kind == "field":
        return value in ENVELOPE_FIELDS
    return isinstance(value, list) and all(
        isinstance(r, list) and len(r) == 2 and all(_fits("int", x) for x in r) for r in value
    )


def needs(node: list[Any]) -> Needs:
    """What evaluating ``node`` reads besides the index summary."""
    kinds: set[str] = set()

    def walk(n: list[Any]) -> None:
        kinds.add(n[0])
        if n[0] in ("and", "or", "not"):
            for child in n[1:]:
                walk(child)

    walk(node)
    return Needs(meta=bool(kinds & _META_NODES), raw=bool(kinds & _BYTES_NODES))


def uid_bounds(node: list[Any]) -> tuple[int, int | None]:
    """The smallest UID range a program can match (from UID keys at its top level)."""
    lo, hi = 1, None
    keys = node[1:] if node[0] == "and" else [node]
    for key in keys:
        if key[0] == "uid":
            ranges = key[1]
            if not ranges:
                return 1, 0
            lo = max(lo, min(r[0] for r in ranges))
            top = max(r[1] for r in ranges)
            hi = top if hi is None else min(hi, top)
    return lo, hi


# -- evaluation --------------------------------------------------------------------------


def matches(node: list[Any], c: Candidate) -> bool:
    kind = node[0]
    if kind == "all":
        return True
    if kind == "and":
        return all(matches(child, c) for child in node[1:])
    if kind == "or":
        return matches(node[1], c) or matches(node[2], c)
    if kind == "not":
        return not matches(node[1], c)
    if kind in _INDEX_NODES:
        return _index_key(kind, node[1], c)
    if kind in ("sentbefore", "senton", "sentsince"):
        return _compare_dates(kind[4:], _sent_date(c), node[1])
    if kind == "address":
        return _contains(_addresses(c, node[1]), node[2])
    if kind == "subject":
        return _contains(_decode_header(_envelope(c)[1]), node[1])
    texts = text_of(c)
    if kind == "header":
        values = texts.headers.get(node[1].lower())
        return values is not None and any(_contains(v, node[2]) for v in values)
    if kind == "body":
        return _contains(texts.body, node[1])
    return _contains(texts.header_text, node[1]) or _contains(texts.body, node[1])  # "text"


def _index_key(kind: str, arg: Any, c: Candidate) -> bool:
    if kind == "uid":
        return any(lo <= c.uid <= hi for lo, hi in arg)
    if kind in ("flag", "noflag"):
        has = arg.lower() in {f.lower() for f in c.flags}
        return has if kind == "flag" else not has
    if kind == "larger":
        return c.size > int(arg)
    if kind == "smaller":
        return c.size < int(arg)
    if kind == "modseq":
        return c.modseq >= int(arg)
    # RFC 3501 §6.4.4: internal date "disregarding time and timezone"; we take its UTC date.
    day = datetime.datetime.fromtimestamp(c.internaldate, datetime.UTC).date()
    return _compare_dates(kind, day, arg)


def _compare_dates(kind: str, day: datetime.date, arg: str) -> bool:
    wanted = datetime.date.fromisoformat(arg)
    if kind == "before":
        return day < wanted
    if kind == "on":
        return day == wanted
    return day >= wanted  # since


def _envelope(c: Candidate) -> list[Any]:
    envelope = (c.meta or {}).get("envelope")
    return envelope if isinstance(envelope, list) and len(envelope) == 10 else [None] * 10


def _sent_date(c: Candidate) -> datetime.date:
    """The Date: field's date as written (RFC 3501 §6.4.4 SENT*: "disregarding time and
    timezone"); the internal date when there is none or it cannot be read."""
    value = (c.meta or {}).get("date") or _envelope(c)[0]
    if isinstance(value, str):
        parsed = email.utils.parsedate_tz(value)
        if parsed is not None:
            with contextlib.suppress(ValueError):
                return datetime.date(parsed[0], parsed[1], parsed[2])
    return datetime.datetime.fromtimestamp(c.internaldate, datetime.UTC).date()


def _addresses(c: Candidate, field: str) -> str:
    out = []
    for address in _envelope(c)[ENVELOPE_FIELDS[field]] or []:
        name, _adl, mailbox, host = (list(address) + [None] * 4)[:4]
        text = _decode_header(name) if name else ""
        if mailbox is not None:
            text += f" <{_utf8(mailbox)}@{_utf8(host or '')}>"
        out.append(text)
    return ", ".join(out)


def _utf8(value: str) -> str:
    """Metadata strings hold header bytes as latin-1 characters; read them as UTF-8 when they are."""
    with contextlib.suppress(UnicodeError):
        return value.encode("latin-1").decode("utf-8")
    return value


def _decode_header(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    text = _utf8(value)
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except Exception:  # malformed encoded words: search the text as it is
        return text


def _fold(text: str) -> str:
    return text.casefold()


def _contains(text: str, wanted: str) -> bool:
    return _fold(wanted) in _fold(text)


# -- message text, cached per blob ------------------------------------------------------------


@dataclass(frozen=True)
class MessageText:
    headers: dict[str, list[str]]
    header_text: str
    body: str


_TEXT_CACHE: OrderedDict[str, MessageText] = OrderedDict()
_TEXT_CACHE_ENTRIES = 2048


def text_of(c: Candidate) -> MessageText:
    """The decoded header fields and body text of a message (cached by blob hash: blobs
    never change)."""
    if c.sha256 and c.sha256 in _TEXT_CACHE:
        _TEXT_CACHE.move_to_end(c.sha256)
        return _TEXT_CACHE[c.sha256]
    raw = c.raw() if c.raw is not None else b""
    text = extract_text(raw)
    if c.sha256:
        _TEXT_CACHE[c.sha256] = text
        while len(_TEXT_CACHE) > _TEXT_CACHE_ENTRIES:
            _TEXT_CACHE.popitem(last=False)
    return text


def extract_text(raw: bytes) -> MessageText:
    """Header fields RFC 2047-decoded; text parts decoded from their transfer encoding and
    charset; other parts left out (RFC 3501 leaves to the server what BODY searches)."""
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:  # never fails in practice; a search must not
        return MessageText({}, "", raw.decode("latin-1"))
    headers: dict[str, list[str]] = {}
    lines = []
    for name, value in message.items():
        decoded = _decode_header(str(value).replace("\r", "").replace("\n", ""))
        headers.setdefault(name.lower(), []).append(decoded)
        lines.append(f"{name}: {decoded}")
    bodies: list[str] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        if part.get_content_maintype() not in ("text", "message"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            bodies.append(payload.decode(charset, "replace"))
        except LookupError:
            bodies.append(payload.decode("utf-8", "replace"))
    if not bodies and not message.is_multipart():
        payload = message.get_payload()
        bodies.append(payload if isinstance(payload, str) else "")
    return MessageText(headers, "\n".join(lines), "\n".join(bodies))
