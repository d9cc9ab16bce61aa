"""SMTP command grammar: the ABNF of RFC 5321 §4.1.2 and the ESMTP parameters, without I/O.

Each parser is named after the production it reads and either returns a value or raises
:class:`GrammarError` carrying the reply the client gets (a failed parse is a value that
becomes a 5xx, never an exception that escapes the session).

Non-ASCII text (RFC 6531 §3.3 extends atext, qtext and sub-domain with UTF-8) is parsed
here always; whether the transaction may use it (``MAIL ... SMTPUTF8``) is the
handler's decision.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from gateway.smtp import replies
from gateway.smtp.replies import Reply

#: RFC 5321 §4.5.3.1.1: a local part is at most 64 octets.
MAX_LOCAL_PART = 64
#: RFC 5321 §4.5.3.1.3: a reverse-path or forward-path is at most 256 octets, brackets included.
MAX_PATH = 256
#: RFC 3461 §4.4: ENVID is at most 100 characters; §4.2: ORCPT at most 500.
MAX_ENVID = 100
MAX_ORCPT = 500


class GrammarError(Exception):
    """Input that does not match the grammar; ``reply`` is what the client is told."""

    def __init__(self, reply: Reply, detail: str = "") -> None:
        super().__init__(detail or reply.text)
        self.reply = reply


# RFC 5322 §3.2.3 atext, plus UTF8-non-ascii (RFC 6531 §3.3).
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
# RFC 5321 §4.1.2 Quoted-string: qtextSMTP is %d32-33 / %d35-91 / %d93-126, quoted-pairSMTP
# is backslash and %d32-126; UTF8-non-ascii in both (RFC 6531 §3.3).
_QUOTED_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*)"')
# RFC 5321 §4.1.2 sub-domain = Let-dig [Ldh-str]; U-labels per RFC 6531 §3.3.
_LET_DIG = r"A-Za-z0-9\u0080-\U0010ffff"
_SUB_DOMAIN = rf"[{_LET_DIG}](?:[{_LET_DIG}\-]*[{_LET_DIG}])?"
_DOMAIN = re.compile(rf"{_SUB_DOMAIN}(?:\.{_SUB_DOMAIN})*")
# RFC 5321 §4.1.3 address-literal: "[" ... "]" with no brackets or backslash inside (dcontent).
_ADDRESS_LITERAL = re.compile(r"\[([\x21-\x5a\x5e-\x7e]+)\]")
# RFC 5321 §4.1.2 A-d-l = At-domain *( "," At-domain ), At-domain = "@" Domain.
_AT_DOMAIN_LIST = re.compile(rf"@{_DOMAIN.pattern}(?:,@{_DOMAIN.pattern})*:")
# RFC 5321 §4.1.2 esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-").
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
# RFC 5321 §4.1.2 esmtp-value = 1*(%d33-60 / %d62-126), UTF-8 allowed by RFC 6531 §3.3.
_ESMTP_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+")
# RFC 3461 §4 xtext: xchar (%d33-126 except "+" and "=") or hexchar ("+" 2HEXDIG, upper case).
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")
# Control characters other than HT never belong in a command line (RFC 5321 §4.1.1).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# EHLO names seen in the wild are not always domains (``my_host``); accept these characters.
_EHLO_NAME = re.compile(r"[A-Za-z0-9_\-.]+")


def is_dot_string(text: str) -> bool:
    """RFC 5321 §4.1.2 Dot-string (UTF-8 atext allowed, RFC 6531 §3.3)."""
    return _DOT_STRING.fullmatch(text) is not None


def is_domain(text: str) -> bool:
    """RFC 5321 §4.1.2 Domain (U-labels allowed, RFC 6531 §3.3)."""
    return _DOMAIN.fullmatch(text) is not None


@dataclass(frozen=True)
class CommandLine:
    verb: str
    argument: str


@dataclass(frozen=True)
class Mailbox:
    """RFC 5321 §4.1.2 Mailbox = Local-part "@" ( Domain / address-literal )."""

    local_part: str  # as written: a Dot-string, or a Quoted-string with its quotes
    domain: str  # a Domain, or an address literal with its brackets
    route: tuple[str, ...] = ()  # the A-d-l source route, if the client gave one

    @property
    def quoted(self) -> bool:
        return self.local_part.startswith('"')

    @property
    def unquoted_local_part(self) -> str:
        """The local part's content: RFC 5322 §3.4.1 makes ``"bob"`` and ``bob`` equal."""
        match = _QUOTED_STRING.fullmatch(self.local_part)
        if match is None:
            return self.local_part
        return re.sub(r"\\(.)", r"\1", match.group(1))

    @property
    def literal(self) -> bool:
        return self.domain.startswith("[")

    def __str__(self) -> str:
        return f"{self.local_part}@{self.domain}"


@dataclass(frozen=True)
class MailParameters:
    """Parameters of MAIL FROM (RFC 1870, 6152, 6531, 3461)."""

    size: int | None = None
    body: str = "7BIT"
    smtputf8: bool = False
    ret: str = ""
    envid: str = ""


@dataclass(frozen=True)
class RcptParameters:
    """Parameters of RCPT TO (RFC 3461 §4.1, §4.2)."""

    notify: tuple[str, ...] = ()
    orcpt: str = ""


@dataclass(frozen=True)
class MailCommand:
    reverse_path: Mailbox | None  # None is the null reverse-path "<>"
    parameters: MailParameters = field(default_factory=MailParameters)


@dataclass(frozen=True)
class RcptCommand:
    forward_path: Mailbox
    postmaster: bool = False  # RFC 5321 §4.1.1.3 "<Postmaster>" without a domain
    parameters: RcptParameters = field(default_factory=RcptParameters)


@dataclass(frozen=True)
class BdatCommand:
    chunk_size: int
    last: bool


def parse_command_line(line: bytes) -> CommandLine:
    """RFC 5321 §4.1.1: a verb, then SP and an argument; verbs are case-insensitive.

    Deviation from RFC 5321 §4.1.1: runs of spaces or tabs separate the verb and the
    argument, and trailing white space is ignored (clients send both; Postfix accepts).
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise GrammarError(replies.S500_BAD_SYNTAX, "not UTF-8") from error
    if _CONTROL.search(text):
        raise GrammarError(replies.S500_BAD_SYNTAX, "control character")
    parts = text.strip(" \t").split(maxsplit=1)
    if not parts:
        raise GrammarError(replies.S500_BAD_SYNTAX, "empty line")
    return CommandLine(parts[0].upper(), parts[1] if len(parts) > 1 else "")


def parse_ehlo_domain(argument: str) -> str:
    """RFC 5321 §4.1.1.1 ``EHLO SP ( Domain / address-literal )``.

    Deviation: like Postfix, any host-name-like word is accepted (``my_host``); RFC 5321
    §4.1.4 forbids refusing a session because the name does not resolve or match.
    """
    # RFC 6531 §3.7.1: the EHLO name is ASCII (A-labels) even in an SMTPUTF8 session.
    if argument.isascii() and (_address_literal(argument) or _EHLO_NAME.fullmatch(argument)):
        return argument
    raise GrammarError(replies.S501_SYNTAX.with_text("Syntax: EHLO hostname"))


def _address_literal(text: str) -> bool:
    """RFC 5321 §4.1.3: IPv4, ``IPv6:`` or a General-address-literal (``tag:content``)."""
    match = _ADDRESS_LITERAL.fullmatch(text)
    if match is None:
        return False
    content = match.group(1)
    tag, colon, rest = content.partition(":")
    if not colon:
        try:
            return isinstance(ipaddress.ip_address(content), ipaddress.IPv4Address)
        except ValueError:
            return False
    if tag.upper() == "IPV6":
        try:
            return isinstance(ipaddress.ip_address(rest), ipaddress.IPv6Address)
        except ValueError:
            return False
    # General-address-literal: Standardized-tag ":" 1*dcontent (RFC 5321 §4.1.3).
    return bool(_ESMTP_KEYWORD.fullmatch(tag)) and bool(rest)


def parse_mailbox(text: str, start: int = 0) -> tuple[Mailbox, int]:
    """RFC 5321 §4.1.2 Mailbox at ``text[start:]``: the mailbox and the index after it."""
    if text.startswith('"', start):
        quoted = _QUOTED_STRING.match(text, start)
        if quoted is None:
            raise GrammarError(replies.S501_SYNTAX, "unterminated quoted string")
        local, position = quoted.group(0), quoted.end()
    else:
        dot_string = _DOT_STRING.match(text, start)
        if dot_string is None:
            raise GrammarError(replies.S501_SYNTAX, "no local part")
        local, position = dot_string.group(0), dot_string.end()
    if not text.startswith("@", position):
        raise GrammarError(replies.S501_SYNTAX, "no domain")
    position += 1
    if text.startswith("[", position):
        end = text.find("]", position)
        if end < 0 or not _address_literal(text[position : end + 1]):
            raise GrammarError(replies.S501_SYNTAX, "bad address literal")
        return Mailbox(local, text[position : end + 1]), end + 1
    domain = _DOMAIN.match(text, position)
    if domain is None:
        raise GrammarError(replies.S501_SYNTAX, "bad domain")
    return Mailbox(local, domain.group(0)), domain.end()


def parse_path(text: str) -> tuple[Mailbox, str]:
    """RFC 5321 §4.1.2 Path = "<" [ A-d-l ":" ] Mailbox ">"; returns the rest of the line.

    Deviation from RFC 5321 §4.1.2: a path without angle brackets is read up to the next
    space (Postfix does so with ``strict_rfc821_envelopes = no``).
    """
    if not text.startswith("<"):
        word, _, rest = text.partition(" ")
        mailbox, end = parse_mailbox(word)
        if end != len(word):
            raise GrammarError(replies.S501_SYNTAX, "junk after address")
        _check_path_length(f"<{word}>")
        return mailbox, f" {rest}" if rest else ""
    route: tuple[str, ...] = ()
    position = 1
    adl = _AT_DOMAIN_LIST.match(text, position)
    if adl is not None:
        # RFC 5321 §3.6.1 and Appendix C: the source route is kept but never followed.
        route = tuple(part[1:] for part in adl.group(0)[:-1].split(","))
        position = adl.end()
    mailbox, position = parse_mailbox(text, position)
    if not text.startswith(">", position):
        raise GrammarError(replies.S501_SYNTAX, "missing >")
    _check_path_length(text[: position + 1])
    return Mailbox(mailbox.local_part, mailbox.domain, route), text[position + 1 :]


def _check_path_length(path: str) -> None:
    if len(path.encode("utf-8")) > MAX_PATH:  # RFC 5321 §4.5.3.1.3
        raise GrammarError(replies.S501_PATH_TOO_LONG)


def parse_reverse_path(text: str) -> tuple[Mailbox | None, str]:
    """RFC 5321 §4.1.2 Reverse-path = Path / "<>"; ``None`` is the null path (bounces)."""
    if text.startswith("<>"):
        return None, text[2:]
    try:
        return parse_path(text)
    except GrammarError as error:
        raise GrammarError(_sender_reply(error.reply), str(error)) from None


def _sender_reply(reply: Reply) -> Reply:
    return replies.S501_PATH_TOO_LONG if reply is replies.S501_PATH_TOO_LONG else replies.S501_BAD_SENDER


def parse_forward_path(text: str) -> tuple[Mailbox, bool, str]:
    """RFC 5321 §4.1.1.3: ``"<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path``.

    Returns the mailbox, whether it was the bare ``<Postmaster>``, and the rest.
    """
    if text[:12].lower() == "<postmaster>":
        return Mailbox("postmaster", ""), True, text[12:]
    try:
        mailbox, rest = parse_path(text)
    except GrammarError as error:
        reply = error.reply if error.reply is replies.S501_PATH_TOO_LONG else replies.S501_BAD_RECIPIENT
        raise GrammarError(reply, str(error)) from None
    if len(mailbox.unquoted_local_part.encode("utf-8")) > MAX_LOCAL_PART:  # RFC 5321 §4.5.3.1.1
        raise GrammarError(replies.S501_BAD_RECIPIENT.with_text("Local part too long"))
    return mailbox, False, rest


def parse_esmtp_parameters(text: str) -> dict[str, str | None]:
    """RFC 5321 §4.1.2 ``esmtp-param *(SP esmtp-param)``, keywords upper-cased.

    A keyword given twice is a syntax error (RFC 1869 §4.2 leaves it to the server).
    """
    parameters: dict[str, str | None] = {}
    for word in text.split():
        keyword, equals, value = word.partition("=")
        if not _ESMTP_KEYWORD.fullmatch(keyword) or (equals and not _ESMTP_VALUE.fullmatch(value)):
            raise GrammarError(replies.S501_SYNTAX, f"bad parameter {word!r}")
        key = keyword.upper()
        if key in parameters:
            raise GrammarError(replies.S501_SYNTAX.with_text(f"Duplicate parameter {key}"))
        parameters[key] = value if equals else None
    return parameters


def decode_xtext(text: str) -> str:
    """RFC 3461 §4: xtext, ``+XX`` standing for the octet with that hexadecimal value."""
    if not _XTEXT.fullmatch(text):
        raise GrammarError(replies.S501_SYNTAX, "bad xtext")
    return _HEXCHAR.sub(lambda m: chr(int(m.group(1), 16)), text)


def _unsupported(keyword: str) -> GrammarError:
    # RFC 5321 §4.1.1.11: parameters the server does not know get 555.
    return GrammarError(replies.S555_UNSUPPORTED_PARAMETER.with_text(f"Unsupported option: {keyword}"))


def parse_mail_parameters(text: str) -> MailParameters:
    """RFC 5321 §4.1.2 Mail-parameters, with the keywords of the extensions we advertise."""
    values = parse_esmtp_parameters(text)
    size, body, smtputf8, ret, envid = None, "7BIT", False, "", ""
    for key, value in values.items():
        if key == "SIZE":  # RFC 1870 §3: size-value = 1*20DIGIT
            if value is None or not value.isascii() or not value.isdigit() or len(value) > 20:
                raise GrammarError(replies.S501_SYNTAX.with_text("Bad SIZE parameter"))
            size = int(value)
        elif key == "BODY":  # RFC 6152 §2: 7BIT / 8BITMIME (BINARYMIME is not offered)
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise _unsupported(f"BODY={value}")
            body = value.upper()
        elif key == "SMTPUTF8":  # RFC 6531 §3.4: no value
            if value is not None:
                raise GrammarError(replies.S501_SYNTAX.with_text("SMTPUTF8 takes no value"))
            smtputf8 = True
        elif key == "RET":  # RFC 3461 §4.3: FULL / HDRS
            if value is None or value.upper() not in ("FULL", "HDRS"):
                raise GrammarError(replies.S501_SYNTAX.with_text("Bad RET parameter"))
            ret = value.upper()
        elif key == "ENVID":  # RFC 3461 §4.4: xtext, at most 100 characters
            if value is None or len(value) > MAX_ENVID:
                raise GrammarError(replies.S501_SYNTAX.with_text("Bad ENVID parameter"))
            envid = decode_xtext(value)
        else:
            raise _unsupported(key)
    return MailParameters(size, body, smtputf8, ret, envid)


_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def parse_rcpt_parameters(text: str) -> RcptParameters:
    """RFC 3461 §4.1 NOTIFY and §4.2 ORCPT; nothing else is known on RCPT."""
    values = parse_esmtp_parameters(text)
    notify: tuple[str, ...] = ()
    orcpt = ""
    for key, value in values.items():
        if key == "NOTIFY":  # "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" )
            items = tuple((value or "").upper().split(","))
            if items != ("NEVER",) and (not set(items) <= _NOTIFY_VALUES or len(set(items)) != len(items)):
                raise GrammarError(replies.S501_SYNTAX.with_text("Bad NOTIFY parameter"))
            notify = items
        elif key == "ORCPT":  # addr-type ";" xtext
            addr_type, semicolon, address = (value or "").partition(";")
            if not semicolon or not _ESMTP_KEYWORD.fullmatch(addr_type) or len(value or "") > MAX_ORCPT:
                raise GrammarError(replies.S501_SYNTAX.with_text("Bad ORCPT parameter"))
            orcpt = f"{addr_type.lower()};{decode_xtext(address)}"
        else:
            raise _unsupported(key)
    return RcptParameters(notify, orcpt)


_FROM = re.compile(r"FROM:[ \t]*", re.IGNORECASE)
_TO = re.compile(r"TO:[ \t]*", re.IGNORECASE)


def parse_mail_command(argument: str) -> MailCommand:
    """RFC 5321 §4.1.1.2 ``"FROM:" Reverse-path [SP Mail-parameters]``.

    Deviation: white space after the colon is accepted (common; Postfix accepts it).
    """
    prefix = _FROM.match(argument)
    if prefix is None:
        raise GrammarError(replies.S501_SYNTAX.with_text("Syntax: MAIL FROM:<address>"))
    path, rest = parse_reverse_path(argument[prefix.end() :])
    if rest and not rest.startswith(" "):
        raise GrammarError(replies.S501_BAD_SENDER, "junk after path")
    return MailCommand(path, parse_mail_parameters(rest))


def parse_rcpt_command(argument: str) -> RcptCommand:
    """RFC 5321 §4.1.1.3 ``"TO:" ( "<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path )
    [SP Rcpt-parameters]``."""
    prefix = _TO.match(argument)
    if prefix is None:
        raise GrammarError(replies.S501_SYNTAX.with_text("Syntax: RCPT TO:<address>"))
    mailbox, postmaster, rest = parse_forward_path(argument[prefix.end() :])
    if rest and not rest.startswith(" "):
        raise GrammarError(replies.S501_BAD_RECIPIENT, "junk after path")
    return RcptCommand(mailbox, postmaster, parse_rcpt_parameters(rest))


#: A chunk size we can represent; RFC 3030 §2 gives no bound (chunk-size = 1*DIGIT).
_MAX_CHUNK_DIGITS = 18


def parse_bdat_command(argument: str) -> BdatCommand:
    """RFC 3030 §2 ``bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ]``, end-marker "LAST"."""
    words = argument.split()
    if not 1 <= len(words) <= 2 or not words[0].isascii() or not words[0].isdigit():
        raise GrammarError(replies.S501_SYNTAX.with_text("Syntax: BDAT size [LAST]"))
    if len(words[0]) > _MAX_CHUNK_DIGITS or (len(words) == 2 and words[1].upper() != "LAST"):
        raise GrammarError(replies.S501_SYNTAX.with_text("Syntax: BDAT size [LAST]"))
    return BdatCommand(int(words[0]), len(words) == 2)
