"""The not-authenticated state (RFC 3501 §6.2): STARTTLS, AUTHENTICATE (PLAIN, LOGIN;
RFC 4959 SASL-IR), LOGIN."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.functions import TemporaryFailure
from gateway.imap import grammar, syntax
from gateway.imap.responses import (
    AUTHENTICATIONFAILED,
    AUTHORIZATIONFAILED,
    PRIVACYREQUIRED,
    UNAVAILABLE,
    Bad,
    No,
    Response,
    Unavailable,
    ok,
)
from gateway.imap.states import AUTHENTICATED
from gateway.login import authenticate, pause

if TYPE_CHECKING:
    from gateway.imap.session import Session

#: RFC 4616 §2: authcid and passwd are at most 255 octets each.
_SASL_FIELD = 255


async def cmd_starttls(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.2.1: TLS begins after the tagged OK; not twice."""
    if s.conn.secure:
        raise Bad("TLS is already active")
    return Response("OK", "Begin TLS negotiation now", starttls=True)


async def cmd_login(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.2.3 LOGIN userid password."""
    args: syntax.Login = c.args
    _require_privacy(s)
    return await _login(s, _text(args.userid), _text(args.password))


async def cmd_authenticate(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.2.2 with PLAIN (RFC 4616) and LOGIN; RFC 4959 initial responses."""
    args: syntax.Authenticate = c.args
    if args.mechanism not in ("PLAIN", "LOGIN"):
        raise No("Unsupported authentication mechanism", "CANNOT")
    _require_privacy(s)
    if args.mechanism == "PLAIN":
        if args.initial is None:
            return Response(continuation=lambda line: _plain(s, _sasl_line(line)))
        return await _plain(s, args.initial)
    if args.initial is not None:
        return await _login_username(s, args.initial)
    # draft-murchison-sasl-login: "Username:" then "Password:" challenges.
    return Response(continuation=lambda line: _login_username(s, _sasl_line(line)), challenge=b"VXNlcm5hbWU6")


async def _login_username(s: Session, username: bytes) -> Response:
    async def password(line: bytes) -> Response:
        return await _login(s, _text(username), _text(_sasl_line(line)))

    return Response(continuation=password, challenge=b"UGFzc3dvcmQ6")


def _sasl_line(line: bytes) -> bytes:
    """RFC 3501 §6.2.2: a base64 line, or ``*`` to cancel (answered BAD)."""
    if line.strip() == b"*":
        raise Bad("Authentication cancelled")
    try:
        return syntax.decode_base64(line.strip()) if line.strip() else b""
    except grammar.ParseError:
        raise Bad("Invalid base64 in the SASL response") from None  # RFC 3501 §6.2.2: BAD


async def _plain(s: Session, message: bytes) -> Response:
    """RFC 4616 §2: [authzid] NUL authcid NUL passwd."""
    parts = message.split(b"\0")
    if len(parts) != 3 or not parts[1] or len(parts[1]) > _SASL_FIELD or len(parts[2]) > _SASL_FIELD:
        raise Bad("Malformed PLAIN response")
    authzid, authcid, password = (_text(p) for p in parts)
    return await _login(s, authcid, password, authzid)


def _require_privacy(s: Session) -> None:
    if not s.plaintext_permitted():
        raise No("Plaintext authentication disallowed without TLS", PRIVACYREQUIRED)  # RFC 3501 §6.2.3


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise Bad("Credentials must be UTF-8") from None


async def _login(s: Session, username: str, password: str, authzid: str = "") -> Response:
    try:
        result = await authenticate(s.conn, username, password)
    except TemporaryFailure as failure:
        raise Unavailable(failure.correlation_id) from None
    principal = result.principal
    if not principal:
        await pause(s.conn, s.settings.auth_failure_delay, result.delay)
        if result.throttled:  # RFC 5530 §3: UNAVAILABLE, "try again later"
            raise No("Too many failed logins, try again later", UNAVAILABLE)
        raise No("Authentication failed", AUTHENTICATIONFAILED)
    # RFC 4616 §2: acting as another user is refused.
    if authzid and authzid.lower() not in {username.lower(), principal.lower()}:
        await pause(s.conn, s.settings.auth_failure_delay)
        raise No("Not authorized to act as that user", AUTHORIZATIONFAILED)
    if not s.conn.hold_user(principal):  # the per-user connection limit (gateway/connlimits.py)
        bye = b"* BYE [LIMIT] Too many connections for this user\r\n"  # RFC 5530 §3 LIMIT
        return Response("NO", "Too many connections for this user", "LIMIT", untagged=[bye], close=True)
    s.user = principal
    s.state = AUTHENTICATED
    # RFC 3501 §7.2.1 / §6.2.3: the capabilities may change after login; say them.
    return ok("Logged in", code="CAPABILITY " + " ".join(s.capabilities()))

