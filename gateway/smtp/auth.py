"""SMTP AUTH (RFC 4954) without I/O: the SASL mechanisms, the client's responses, the replies.

Two mechanisms, both sending the password in the clear and so offered only over TLS
(RFC 4954 §4, RFC 8314 §3): PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login, the
one Outlook and many devices still use). An exchange is a small state machine: it is
started with the mechanism and the optional initial response, and each client response
either yields the next challenge (a ``334``) or the credentials to check.

The AuthFunction decides whether the credentials are right; nothing here logs them, nor
puts them in an exception's text (STYLE.md: log redaction of credentials).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.smtp.replies import Action, Reply, reply

#: RFC 4954 §4: a client response is a line of its own; RFC 4954 §6 (5.5.6) lets the server
#: refuse one longer than its buffer. 12288 octets, as Cyrus SASL and Dovecot accept.
SASL_LINE_LIMIT = 12288

# -- replies (RFC 4954 §6 with the enhanced codes of RFC 5248) ---------------------------------
S235_AUTHENTICATED = reply(235, "2.7.0", "Authentication successful")
S454_TEMPORARY = reply(454, "4.7.0", "Temporary authentication failure")
S454_THROTTLED = reply(454, "4.7.0", "Temporary authentication failure, try again later")  # too many failures
S421_AUTH_THROTTLED = reply(421, "4.7.0", "Too many failed authentications, try again later").then(Action.CLOSE)
S500_LINE_TOO_LONG = reply(500, "5.5.6", "Authentication Exchange line is too long")
S501_CANCELLED = reply(501, "5.0.0", "Authentication cancelled")  # RFC 4954 §4: "*"
S501_BAD_BASE64 = reply(501, "5.5.2", "Cannot decode response")  # RFC 4954 §4
S501_SYNTAX = reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
S503_ALREADY_AUTHENTICATED = reply(503, "5.5.1", "Error: already authenticated")  # RFC 4954 §4
S503_EHLO_FIRST = reply(503, "5.5.1", "Error: send EHLO first")  # RFC 5321 §4.1.1.1: no extensions after HELO
S503_IN_TRANSACTION = reply(503, "5.5.1", "Error: AUTH not permitted during a mail transaction")  # RFC 4954 §4
S504_UNKNOWN_MECHANISM = reply(504, "5.5.4", "Unrecognized authentication type")  # RFC 4954 §4
S530_STARTTLS_FIRST = reply(530, "5.7.0", "Must issue a STARTTLS command first")  # RFC 3207 §4
S530_AUTH_REQUIRED = reply(530, "5.7.0", "Authentication required")  # RFC 4954 §6
S535_FAILED = reply(535, "5.7.8", "Error: authentication failed")  # RFC 4954 §6


class SaslError(Exception):
    """A response the exchange cannot go on with; ``reply`` ends the AUTH command."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)  # never the client's bytes: they may hold a password
        self.reply = reply


@dataclass(frozen=True)
class Credentials:
    """What the client asserted; ``repr`` leaves the password out."""

    authzid: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Challenge(Reply):
    """A ``334`` server challenge (RFC 4954 §4): the loop writes it, reads the client's
    response line and hands the decoded bytes to ``continuation``. No enhanced code on
    3xx replies (RFC 2034 §3)."""

    continuation: Callable[[bytes], Awaitable[Reply]] | None = field(default=None, compare=False, repr=False)


def challenge(text: bytes, continuation: Callable[[bytes], Awaitable[Reply]]) -> Challenge:
    """RFC 4954 §4: ``334`` SP base64-encoded challenge ("334 " alone when empty)."""
    return Challenge(334, "", (base64.b64encode(text).decode("ascii"),), continuation=continuation)


def decode_response(data: bytes | str) -> bytes:
    """RFC 4954 §4: a client response (or an initial response) is base64; ``=`` is the
    empty response. Anything else that is not strict base64 is 501 5.5.2."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    raw = raw.strip(b" \t")
    if raw == b"=":
        return b""
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError(S501_BAD_BASE64) from None


def _text(data: bytes) -> str:
    try:
        text = data.decode("utf-8")  # RFC 4616 §2: UTF-8
    except UnicodeDecodeError:
        raise SaslError(S535_FAILED) from None
    if "\x00" in text:
        raise SaslError(S535_FAILED)
    return text


@dataclass(frozen=True)
class AuthCommand:
    mechanism: str
    #: None: no initial response (the server sends an empty challenge); b"" for "=".
    initial_response: bytes | None


def parse_auth_command(argument: str) -> AuthCommand:
    """RFC 4954 §4 ``"AUTH" SP sasl-mech [SP initial-response]``."""
    words = argument.split()
    if not 1 <= len(words) <= 2:
        raise SaslError(S501_SYNTAX)
    mechanism = words[0].upper()
    if mechanism not in MECHANISMS:
        raise SaslError(S504_UNKNOWN_MECHANISM)
    return AuthCommand(mechanism, decode_response(words[1]) if len(words) == 2 else None)


Step = bytes | Credentials  # a challenge to send, or the credentials the exchange produced


class Plain:
    """RFC 4616 §2: ``[authzid] NUL authcid NUL passwd``, in one response."""

    def begin(self, initial: bytes | None) -> Step:
        return b"" if initial is None else self.respond(initial)

    def respond(self, response: bytes) -> Step:
        parts = response.split(b"\x00")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SaslError(S535_FAILED)
        authzid, username, password = (_text(p) for p in parts)
        return Credentials(authzid, username, password)


class Login:
    """The LOGIN mechanism (draft-murchison-sasl-login-00 §2): the server asks
    "Username:" and "Password:", the client answers each; an initial response is the
    user name (as Microsoft's clients send it, MS-XLOGIN §3.1.5.1)."""

    def __init__(self) -> None:
        self.username: str | None = None

    def begin(self, initial: bytes | None) -> Step:
        return b"Username:" if initial is None else self.respond(initial)

    def respond(self, response: bytes) -> Step:
        if self.username is None:
            self.username = _text(response)
            return b"Password:"
        return Credentials("", self.username, _text(response))


Mechanism = Plain | Login
#: What EHLO advertises (RFC 4954 §3), in this order.
MECHANISMS: dict[str, Callable[[], Mechanism]] = {"PLAIN": Plain, "LOGIN": Login}
