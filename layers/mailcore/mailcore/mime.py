"""MIME metadata computed once at ingest, so IMAP can answer FETCH ENVELOPE, BODY,
BODYSTRUCTURE and BODY[section]<partial> from the index without re-parsing.

Pure functions; ``analyze`` never raises. Behaviour follows Dovecot where RFCs leave room:

* Strings in the JSON form are header bytes decoded as **latin-1** (one char per byte), so
  ``s.encode("latin-1")`` restores the exact bytes; ``render`` does that. (surrogateescape
  would give lone surrogates, which are not valid UTF-8 for JSON or DynamoDB.)
* Sizes are raw octets of the stored message and lines count LF characters. Dovecot reports
  CRLF-normalised sizes; the two agree for CRLF input, which is what SMTP delivers.
* Malformed MIME degrades to ``text/plain`` (RFC 2045 §5.2): a syntactically invalid
  Content-Type, and a multipart without a boundary or without any delimiter line. (Dovecot
  keeps such a multipart and reports one empty text/plain child; we keep the content.)
* Header fields are split by hand (the first empty line ends a header, RFC 5322 §2.1):
  ``email``'s compat32 parser stops at the first malformed line (e.g. ``Subject : x``) and
  gives no byte offsets, which HEADER.FIELDS needs. RFC 2047 decoding uses ``email.header``.
"""

from __future__ import annotations

import contextlib
import email.header
import itertools
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

_MAX_DEPTH = 50  # nesting limit for multipart/message parts (Dovecot: 100)
_BLANK = re.compile(rb"\n\r?\n")
_TOKEN = re.compile(r'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+')  # RFC 2045 §5.1 token (8-bit tolerated)
_ATEXT = re.compile(r'[^\x00-\x20\x7f()<>\[\]:;@\\,."]+')  # RFC 5322 §3.2.3 atext run
# whitespace, domain-literal (kept with brackets), special, or atom
_ADDR_LEX = re.compile(r'[ \t\r\n]+|\[[^\]]*\]?|[<>:;@,.]|[^\x00-\x20\x7f()<>\[\]:;@\\,."]+')
_VALUE = re.compile(r"[^;\s]*")  # unquoted parameter value, lenient like Dovecot ("name==?utf-8?...")
_EXT_KEY = re.compile(r"([^*]*)\*(\d*)(\*?)$")  # RFC 2231 §3/§4 name*N* parameters
_ENCODED_WORD = re.compile(r"(=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=)(?:[ \t]+(?==\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=))?")
_MISSING_MAILBOX, _MISSING_DOMAIN = "MISSING_MAILBOX", "MISSING_DOMAIN"  # Dovecot's placeholders


@dataclass(frozen=True)
class MessageMetadata:
    size: int
    envelope: list[Any]
    bodystructure: list[Any]
    body: list[Any]
    sections: dict[str, dict[str, list[int]]]  # "header"/"body" ranges; "text" for message/rfc822 parts
    message_id: str | None
    subject: str | None
    sender: str | None
    date: str | None

    def to_item(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_item(cls, d: dict[str, Any]) -> MessageMetadata:
        """Inverse of ``to_item``; DynamoDB Decimals become ints."""
        fields: dict[str, Any] = {k: _ints(d.get(k)) for k in cls.__dataclass_fields__}
        return cls(**fields)


def _ints(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _ints(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_ints(x) for x in v]
    return int(v) if isinstance(v, Decimal) else v


class _Hit(NamedTuple):
    """A delimiter line: which open boundary, closing or not, its start, where the content
    before it ends (the CRLF before it belongs to it, RFC 2046 §5.1.1), the next line."""

    which: int
    close: bool
    line: int
    cut: int
    after: int | None


class _Part:
    header: list[int]
    body: list[int]
    hdr: dict[str, str]
    ctype: tuple[str, str, list[tuple[str, str]]]
    ext: dict[str, Any]
    children: list[_Part] | None = None
    message: _Part | None = None


# ---- RFC 5322 §2.2 header fields -------------------------------------------------------
def _split_fields(block: bytes) -> list[bytes]:
    """Raw fields (with folding and line ends) of a header block, up to the empty line."""
    fields: list[bytes] = []
    for line in re.findall(rb"[^\n]*\n|[^\n]+$", block):
        if line in (b"\n", b"\r\n"):
            break
        if fields and line[:1] in b" \t":
            fields[-1] += line  # RFC 5322 §2.2.3 folding
        else:
            fields.append(line)
    return fields


def _field_name(field: bytes) -> str | None:
    colon = field.find(b":")
    return field[:colon].rstrip(b" \t").decode("latin-1").lower() if colon > 0 else None


def _field_value(field: bytes) -> str:
    value = re.sub(rb"\r?\n", b"", field[field.find(b":") + 1 :])  # unfold
    return value.lstrip(b" \t").decode("latin-1")


def header_fields(header_bytes: bytes, names: list[str], exclude: bool) -> bytes:
    """RFC 3501 §6.4.5 HEADER.FIELDS (exclude=False) / HEADER.FIELDS.NOT: the fields as they
    are in the message, then the blank line."""
    wanted = {(n.decode("latin-1") if isinstance(n, bytes) else n).lower() for n in names}
    out = [f if f.endswith(b"\n") else f + b"\r\n" for f in _split_fields(header_bytes)
           if (_field_name(f) in wanted) != exclude]
    return b"".join(out) + b"\r\n"


# ---- RFC 5322 §3.2 lexical tokens --------------------------------------------------------
def _lex(s: str, i: int) -> tuple[str, int]:
    """Comment (RFC 5322 §3.2.2, nests) or quoted-string (§3.2.4) starting at s[i]: its
    unescaped text and the index after it (an unterminated one runs to the end)."""
    nests = s[i] == "("
    close, depth, out = ")" if nests else '"', 1, []
    i += 1
    while i < len(s):
        c, i = s[i], i + 1
        if c == "\\":
            out.append(s[i : i + 1])
            i += 1
            continue
        depth += (nests and c == "(") - (c == close)
        if depth == 0:
            break
        out.append(c)
    return "".join(out), i


def _skip_cfws(s: str, i: int) -> int:
    while i < len(s) and (s[i] in " \t\r\n" or s[i] == "("):
        i = i + 1 if s[i] != "(" else _lex(s, i)[1]
    return i


# ---- RFC 2045 §5.1 Content-Type, RFC 2183, RFC 3282, RFC 2231 ---------------------------
def _parameters(s: str, i: int) -> list[tuple[str, str]]:
    """``*(";" attribute "=" value)``; broken parameters are skipped. RFC 2231 continuations
    are merged like Dovecot: ``name*`` keeps the charset'lang'%XX form, and merged
    parameters follow the plain ones."""
    plain: list[tuple[str, str]] = []
    ext: list[tuple[str, int, bool, str]] = []
    while (i := s.find(";", i)) >= 0:
        i = _skip_cfws(s, i + 1)
        key = _TOKEN.match(s, i)
        if not key or s[(i := _skip_cfws(s, key.end())) : i + 1] != "=":
            continue
        i = _skip_cfws(s, i + 1)
        if s[i : i + 1] == '"':
            value, i = _lex(s, i)
        else:
            value = _VALUE.match(s, i).group()  # type: ignore[union-attr]  # always matches
            i += len(value)
        m = _EXT_KEY.match(key.group())
        if m:
            ext.append((m[1], int(m[2] or 0), m[3] == "*" or not m[2], value))
        else:
            plain.append((key.group(), value))
    ext.sort(key=lambda p: (p[0], p[1]))
    for _, run in itertools.groupby(ext, key=lambda p: p[0].lower()):
        group = list(run)
        if [p[1] for p in group] != list(range(len(group))):  # missing index: keep them apart
            plain += [(f"{k}*{n}{'*' * e}", v) for k, n, e, v in group]
            continue
        extended = any(p[2] for p in group)
        value = "''" if extended and not group[0][2] else ""
        value += "".join(v.replace("%", "%25") if extended and not e else v for _, _, e, v in group)
        plain.append((group[0][0] + "*" * extended, value))
    return plain


def _content_type(value: str) -> tuple[str, str, list[tuple[str, str]]] | None:
    """RFC 2045 §5.1 ``type "/" subtype *(";" parameter)``; None when invalid."""
    kind = _TOKEN.match(value, _skip_cfws(value, 0))
    if not kind or value[(i := _skip_cfws(value, kind.end())) : i + 1] != "/":
        return None
    sub = _TOKEN.match(value, _skip_cfws(value, i + 1))
    return (kind.group(), sub.group(), _parameters(value, sub.end())) if sub else None


def _flat(params: list[tuple[str, str]]) -> list[str]:
    return [x for pair in params for x in pair]


def _disposition(value: str | None) -> list[Any] | None:
    """RFC 2183 ``disposition-type *(";" parameter)`` -> (type (params) | NIL)."""
    kind = _TOKEN.match(value, _skip_cfws(value, 0)) if value is not None else None
    return [kind.group(), _flat(_parameters(value, kind.end())) or None] if kind and value else None


def _language(value: str | None) -> list[str] | None:
    """RFC 3282 ``1#Language-tag`` -> list of tags."""
    tags = []
    for piece in (value or "").split(","):
        tag = _ATEXT.match(piece, _skip_cfws(piece, 0))
        if not tag:
            break
        tags.append(tag.group())
    return tags or None


def _encoding(value: str | None) -> str | None:
    """RFC 2045 §6.1 mechanism: a single token, else the default applies."""
    tok = _TOKEN.match(value, _skip_cfws(value, 0)) if value is not None else None
    return tok.group() if tok and value is not None and _skip_cfws(value, tok.end()) == len(value) else None


# ---- RFC 5322 §3.4 address lists -> RFC 3501 §7.4.2 address structures ------------------

_Tok = tuple[str, str, bool]  # kind ("w" word, "(" comment, or a special), text, whitespace before


def _tokens(s: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, ws = 0, False
    while i < len(s):
        if s[i] in '("':
            text, end = _lex(s, i)
            kind = "(" if s[i] == "(" else "w"
        else:
            m = _ADDR_LEX.match(s, i)
            text, end = (m.group(), m.end()) if m else (s[i], i + 1)
            kind = text if text in tuple("<>:;@,.") else "w"
            if text[0] in " \t\r\n":
                i, ws = end, True
                continue
        toks.append((kind, text, ws))
        i, ws = end, kind == "("
    return toks


def _words(toks: list[_Tok]) -> str:
    out = ""
    for _, text, ws in toks:
        out += (" " if ws and out else "") + text
    return out


def _joined(toks: list[_Tok]) -> str:
    return "".join(t[1] for t in toks if t[0] != "(")


def _next_address(toks: list[_Tok], i: int, in_group: bool) -> int:
    while i < len(toks):
        if toks[i][0] == ",":
            return i + 1
        if toks[i][0] == ";" and in_group:
            return i
        i += 1
    return i


def _angle_addr(toks: list[_Tok]) -> tuple[str | None, str, str]:
    """``"<" [obs-route] addr-spec ">"`` contents -> (adl, mailbox, host)."""
    adl = None
    kinds = [t[0] for t in toks]
    if kinds[:1] == ["@"] and ":" in kinds:
        adl, toks = _joined(toks[: kinds.index(":")]), toks[kinds.index(":") + 1 :]
    at = next((n for n, t in enumerate(toks) if t[0] == "@"), len(toks))
    return adl, _joined(toks[:at]) or _MISSING_MAILBOX, _joined(toks[at + 1 :]) or _MISSING_DOMAIN


def _address(toks: list[_Tok], i: int, out: list[list[str | None]], in_group: bool) -> int:
    """Parse one address (or group) at toks[i] into ``out``; returns the next index."""
    phrase, comment = [], None
    while i < len(toks) and toks[i][0] in ("w", ".", "("):
        if toks[i][0] == "(":
            comment = toks[i][1]  # Dovecot: a comment names an addr-spec without a phrase
        else:
            phrase.append(toks[i])
        i += 1
    kind = toks[i][0] if i < len(toks) else ""
    if kind == ":" and not in_group:  # RFC 3501: group start (NIL NIL name NIL) ... end (NIL NIL NIL NIL)
        out.append([None, None, _words(phrase), None])
        i += 1
        while i < len(toks) and toks[i][0] != ";":
            i = _address(toks, i, out, True)
        out.append([None, None, None, None])
        return _next_address(toks, i + 1, False)
    if kind == "<":
        end = next((n for n in range(i, len(toks)) if toks[n][0] == ">"), len(toks))
        out.append([_words(phrase) or None, *_angle_addr(toks[i + 1 : end])])
        return _next_address(toks, end + 1, in_group)
    host = None
    if kind == "@":
        i += 1
        start = i
        while i < len(toks) and toks[i][0] in ("w", ".", "(") and not (i > start and toks[i][2] and toks[i][0] == "w"):
            comment = toks[i][1] if toks[i][0] == "(" else comment
            i += 1
        host = _joined(toks[start:i])
    if phrase or host is not None:
        local = _joined(phrase) if host is not None else _words(phrase)
        out.append([comment or None, None, local or _MISSING_MAILBOX, host or _MISSING_DOMAIN])
    return _next_address(toks, i, in_group)


def _address_list(value: str | None) -> list[list[str | None]] | None:
    out: list[list[str | None]] = []
    toks, i = _tokens(value or ""), 0
    while i < len(toks):
        i = _address(toks, i, out, False)
    return out or None


def _envelope(hdr: dict[str, str]) -> list[Any]:
    """RFC 3501 §7.4.2 ENVELOPE; sender and reply-to default to from."""
    frm = _address_list(hdr.get("from"))
    return [hdr.get("date"), hdr.get("subject"), frm,
            _address_list(hdr.get("sender")) or frm, _address_list(hdr.get("reply-to")) or frm,
            _address_list(hdr.get("to")), _address_list(hdr.get("cc")), _address_list(hdr.get("bcc")),
            hdr.get("in-reply-to"), hdr.get("message-id")]


# ---- RFC 2046 §5.1 entity structure ------------------------------------------------------
def _find_boundary(raw: bytes, pos: int, stack: list[bytes], limit: int | None = None) -> _Hit | None:
    """First line at or after the line start ``pos`` that begins with "--" and an open
    boundary (only the prefix must match; the longest, then innermost, wins, like Dovecot)."""
    end = len(raw) if limit is None else limit
    ls = pos if raw.startswith(b"--", pos) else raw.find(b"\n--", pos, end) + 1 or -1  # -1: none
    while stack and 0 <= ls < end:
        best = None
        for k, b in enumerate(stack):
            if raw.startswith(b, ls + 2) and (best is None or len(b) >= len(stack[best])):
                best = k
        if best is not None:
            close = raw.startswith(b"--", ls + 2 + len(stack[best]))
            cut = ls if ls == pos else ls - (2 if ls - 2 >= pos and raw[ls - 2] == 13 else 1)
            nl = raw.find(b"\n", ls)
            return _Hit(best, close, ls, cut, nl + 1 if nl >= 0 else None)
        ls = raw.find(b"\n--", ls, end) + 1 or -1
    return None


def _content_headers(p: _Part, mime: bool, digest: bool) -> None:
    """Content-* fields count only in MIME entities: a multipart child, or one with
    MIME-Version or Content-Type (Dovecot's non-strict rule)."""
    get = p.hdr.get if mime else (lambda _name: None)
    ct_value = get("content-type")
    ct = _content_type(ct_value) if ct_value is not None else None
    # RFC 2046 §5.1.5: default message/rfc822 in a digest; RFC 2045 §5.2: else text/plain
    p.ctype = ct or (("message", "rfc822", []) if digest and ct_value is None else ("text", "plain", []))
    p.ext = {"id": get("content-id"), "description": get("content-description"),
             "encoding": _encoding(get("content-transfer-encoding")), "md5": get("content-md5"),
             "disposition": _disposition(get("content-disposition")),
             "language": _language(get("content-language")), "location": get("content-location")}


def _parse(raw: bytes, start: int, stack: list[bytes], depth: int, in_multipart: bool = False,
           digest: bool = False) -> tuple[_Part, _Hit | None]:
    """Parse the entity at ``start``; returns it and the delimiter that ended it (None: EOF)."""
    p = _Part()
    hit = _find_boundary(raw, start, stack)  # where this part ends at the latest
    if raw.startswith(b"\n", start) or raw.startswith(b"\r\n", start):  # empty header
        hend, in_header = raw.find(b"\n", start) + 1, False
    else:  # RFC 5322 §2.1: the header ends with the first empty line, or a delimiter ends it (Dovecot)
        m = _BLANK.search(raw, start, hit.line if hit else len(raw))
        hend, in_header = (m.end(), False) if m else (hit.cut if hit else len(raw), True)
    if hit and hit.line == hend:  # a delimiter on the body's first line takes no CRLF from it
        hit = hit._replace(cut=hend)
    p.header = [start, hend]
    p.hdr = {}
    for f in _split_fields(raw[start:hend]):
        name = _field_name(f)
        if name is not None and name not in p.hdr:
            p.hdr[name] = _field_value(f)  # the first of repeated fields counts
    mime = in_multipart or "mime-version" in p.hdr or "content-type" in p.hdr
    _content_headers(p, mime, digest)
    kind = (p.ctype[0].lower(), p.ctype[1].lower())
    if not in_header and depth < _MAX_DEPTH and kind[0] == "multipart":
        return _multipart(raw, p, hend, stack, depth, kind[1] == "digest")
    if not in_header and depth < _MAX_DEPTH and kind == ("message", "rfc822"):
        p.message, hit = _parse(raw, hend, stack, depth + 1)
    if kind[0] == "multipart" or (kind == ("message", "rfc822") and p.message is None):
        p.ctype = ("text", "plain", [])
    p.body = [hend, hit.cut if hit else len(raw)]
    return p, hit


def _multipart(raw: bytes, p: _Part, hend: int, stack: list[bytes], depth: int,
               digest: bool) -> tuple[_Part, _Hit | None]:
    """RFC 2046 §5.1.1 body: preamble, parts between delimiters, close delimiter, epilogue.
    An outer delimiter ends the multipart early; a missing close delimiter is tolerated."""
    boundary = next((v for k, v in p.ctype[2] if k.lower() == "boundary"), "")
    inner, children = [*stack, boundary.encode("latin-1")] if boundary else stack, []
    hit = _find_boundary(raw, hend, inner)
    while hit and hit.which == len(stack) and not hit.close and hit.after is not None:
        child, hit = _parse(raw, hit.after, inner, depth + 1, True, digest)
        children.append(child)
    if hit and hit.which == len(stack):  # ours: the epilogue runs to an outer delimiter
        hit = _find_boundary(raw, hit.after, stack) if hit.after is not None else None
    if children:
        p.children = children
    else:  # no boundary or no delimiter line: degrade to text/plain (RFC 2045 §5.2)
        p.ctype = ("text", "plain", [])
    p.body = [hend, hit.cut if hit else len(raw)]
    return p, hit


# ---- RFC 3501 §7.4.2 BODY / BODYSTRUCTURE, §6.4.5 section numbers ------------------------
def _body(raw: bytes, p: _Part, extended: bool) -> list[Any]:
    kind, sub, params = p.ctype
    x = p.ext
    if p.children:  # body-type-mpart: 1*body SP subtype [SP body-ext-mpart]
        parts: list[Any] = [_body(raw, c, extended) for c in p.children]
        return [*parts, sub] + ([_flat(params) or None, x["disposition"], x["language"], x["location"]] if extended else [])
    flat = _flat(params)
    text = kind.lower() == "text"
    if text and not any(k.lower() == "charset" for k, _ in params):
        flat += ["charset", "us-ascii"]
    start, end = p.body
    lines = raw.count(b"\n", start, end)
    if p.message:
        kind, sub = "message", "rfc822"
    out: list[Any] = [kind, sub, flat or None, x["id"], x["description"], x["encoding"] or "7bit", end - start]
    if p.message:  # body-type-msg: envelope body lines
        out += [_envelope(p.message.hdr), _body(raw, p.message, extended), lines]
    elif text:
        out.append(lines)
    return out + ([x["md5"], x["disposition"], x["language"], x["location"]] if extended else [])


def _sections(root: _Part) -> dict[str, dict[str, list[int]]]:
    """RFC 3501 §6.4.5: multipart children are numbered from 1; a message/rfc822 part's
    numbers are those of its message; a non-multipart message has just part 1 (its body)."""
    sections = {"": {"header": root.header, "body": root.body}}

    def add(p: _Part, path: str) -> None:
        sections[path] = {"header": p.header, "body": p.body}
        if p.children:
            number(p, path)
        elif p.message:
            sections[path]["text"] = p.message.body
            number(p.message, path)

    def number(m: _Part, path: str) -> None:
        prefix = path + "." if path else ""
        for n, child in enumerate(m.children or [m], 1):
            add(child, prefix + str(n))

    number(root, "")
    return sections


def _human(value: str | None, decode: bool = False) -> str | None:
    """Display form: 8-bit bytes read as UTF-8 when they are, RFC 2047 encoded-words decoded
    one by one (whitespace between adjacent ones dropped, RFC 2047 §6.2)."""
    if value is None:
        return None
    with contextlib.suppress(UnicodeError):
        value = value.encode("latin-1").decode("utf-8")
    return _ENCODED_WORD.sub(_decode_word, value) if decode else value


def _decode_word(m: re.Match[str]) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(m[1])))
    except Exception:  # malformed or unknown charset: keep the word as it is
        return m[1]


def _analyze(raw: bytes) -> MessageMetadata:
    root, _ = _parse(raw, 0, [], 0)
    envelope = _envelope(root.hdr)
    sender = next((f"{a[2]}@{a[3]}" for a in envelope[2] or [] if a[3] is not None), None)
    message_id = root.hdr.get("message-id")
    return MessageMetadata(
        size=len(raw), envelope=envelope, bodystructure=_body(raw, root, True), body=_body(raw, root, False),
        sections=_sections(root), message_id=message_id.strip() if message_id is not None else None,
        subject=_human(root.hdr.get("subject"), decode=True), sender=_human(sender), date=root.hdr.get("date"))


def analyze(raw: bytes) -> MessageMetadata:
    raw = bytes(raw)
    try:
        return _analyze(raw)
    except Exception:  # a parser bug must not lose mail: fall back to one text/plain body
        n, lines = len(raw), raw.count(b"\n")
        plain = ["text", "plain", ["charset", "us-ascii"], None, None, "7bit", n, lines]
        return MessageMetadata(n, [None] * 10, [*plain, None, None, None, None], plain,
                               {"": {"header": [0, 0], "body": [0, n]}, "1": {"header": [0, 0], "body": [0, n]}},
                               None, None, None, None)


# ---- RFC 3501 §4 / §9 syntax ---------------------------------------------------------------
def _string(b: bytes) -> bytes:
    """RFC 3501 §4.3: quoted string, or a literal for CR, LF, 8-bit or more than four
    quoted-specials (Dovecot's rule). NUL is allowed in neither; it becomes 0x80 as in Dovecot."""
    b = b.replace(b"\0", b"\x80")
    if re.search(rb"[\r\n\x80-\xff]", b) or b.count(b'"') + b.count(b"\\") > 4:
        return b"{%d}\r\n%s" % (len(b), b)
    return b'"' + re.sub(rb'(["\\])', rb"\\\1", b) + b'"'


def render(value: Any) -> bytes:
    """IMAP syntax for envelope/body structures: None -> NIL, int -> number, str -> string
    (latin-1 bytes), list -> parenthesized list. Leading list items are written without
    separators, which yields RFC 3501 §9 ``1*body`` and ``1*address``; others are SP-separated."""
    if value is None:
        return b"NIL"
    if isinstance(value, bytes):
        return _string(value)
    if isinstance(value, str):
        try:
            return _string(value.encode("latin-1"))
        except UnicodeEncodeError:
            return _string(value.encode("utf-8"))
    if isinstance(value, list | tuple):
        lead = next((n for n, v in enumerate(value) if not isinstance(v, list | tuple)), len(value))
        head = b"".join(render(v) for v in value[:lead])
        tail = b" ".join(render(v) for v in value[lead:])
        return b"(" + head + (b" " if head and tail else b"") + tail + b")"
    if isinstance(value, int | Decimal):
        return b"%d" % int(value)
    raise TypeError(f"cannot render {type(value).__name__}")


def section_bytes(raw: bytes, meta: MessageMetadata, section: str, part: str = "") -> bytes:
    """RFC 3501 §6.4.5 BODY[section.part]: part is "", "HEADER", "TEXT" or "MIME" (apply
    ``header_fields`` to HEADER for HEADER.FIELDS). BODY[] is the message, BODY[n] a part's
    body; HEADER/TEXT exist for the message and message/rfc822 parts, MIME for parts.
    A section that does not exist gives b"" (callers may check ``section in meta.sections``)."""
    sec, part = meta.sections.get(section), part.upper()
    if sec is None:
        return b""
    if part == "":
        start, end = (0, len(raw)) if section == "" else sec["body"]
    elif part == "MIME" and section:
        start, end = sec["header"]
    elif part in ("HEADER", "TEXT") and section == "":
        start, end = sec["header" if part == "HEADER" else "body"]
    elif part in ("HEADER", "TEXT") and "text" in sec:
        start, end = (sec["body"][0], sec["text"][0]) if part == "HEADER" else sec["text"]
    else:
        return b""
    return raw[start:end]
