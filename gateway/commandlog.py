"""One structured log line per command, the same shape in SMTP, IMAP and POP3.

``<protocol> session=… listener=… client=… user=… command=… arg=… status=… code=… ms=…``:
the session id ties a command to the connection's other log lines, ``user`` is who is
logged in (``-`` before), ``command`` the verb (``?`` for a line that is not a command we
know, ``-`` when no command was read or it was refused before its arguments were: a line
too long, a timeout, an IMAP syntax error), ``status`` and ``code``
the reply (SMTP ``535`` / ``5.7.8``, IMAP ``NO`` / ``AUTHENTICATIONFAILED``, POP3 ``-ERR`` /
``AUTH``). Only the verb of a known command is named: an unknown "verb" may be a
password a client sent out of turn.

Credentials never reach the log (issue #7): the arguments of LOGIN, PASS and USER are
``***``, those of AUTH and AUTHENTICATE a known mechanism's name only (the initial
response is the credentials, RFC 4954 §4, RFC 4959 §3, RFC 5034 §4). SASL continuation lines are never
passed here at all. Other arguments are cut to 80 characters and ``repr``-quoted, so a
client cannot forge log lines with CR or LF.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.server import Connection

#: Commands whose whole argument is a credential, or a login name that is often a
#: password typed into the wrong field (RFC 3501 §6.2.3, RFC 1939 §7); and HTTP spoken to
#: a mail port (SMTP's forbidden commands), whose URLs and headers may carry tokens.
_HIDDEN = frozenset({"LOGIN", "PASS", "USER", "GET", "POST", "CONNECT", "HEADER:"})
#: SASL commands: the mechanism is shown, the initial response never.
_SASL = frozenset({"AUTH", "AUTHENTICATE"})
#: Mechanism names a log may show (the IANA SASL registry's common ones); another first
#: word may be a client's credentials without a mechanism, and is shown as "?".
_MECHANISMS = frozenset(
    {
        "PLAIN",
        "LOGIN",
        "CRAM-MD5",
        "DIGEST-MD5",
        "SCRAM-SHA-1",
        "SCRAM-SHA-256",
        "XOAUTH2",
        "OAUTHBEARER",
        "GSSAPI",
        "NTLM",
        "EXTERNAL",
        "ANONYMOUS",
    }
)
_MAX_ARGUMENT = 80


@dataclass
class CommandRecord:
    """What the log line will say about the command being answered."""

    verb: str = "-"
    argument: str = ""
    started: float = field(default_factory=time.perf_counter)


def summarize(verb: str, argument: str) -> str:
    """The argument as the log shows it: never a credential."""
    argument = argument.strip(" ")
    if not argument:
        return ""
    if verb in _HIDDEN:
        return "***"
    if verb in _SASL:
        mechanism, _, rest = argument.partition(" ")
        mechanism = mechanism.upper() if mechanism.upper() in _MECHANISMS else "?"
        return f"{mechanism} ***" if rest.strip(" ") else mechanism
    return argument[:_MAX_ARGUMENT]


def log_command(
    logger: logging.Logger,
    conn: Connection,
    protocol: str,
    record: CommandRecord,
    *,
    user: str | None,
    status: str,
    code: str = "",
) -> None:
    """Write the command's line to ``logger`` (the protocol's own) at INFO."""
    if not logger.isEnabledFor(logging.INFO):
        return
    logger.info(
        "%s session=%s listener=%s client=%s user=%s command=%s arg=%r status=%s code=%s ms=%.1f",
        protocol,
        conn.session_id,
        conn.listener,
        conn.peer[0],
        user or "-",
        record.verb.replace(" ", "-"),  # IMAP "UID FETCH" stays one value
        summarize(record.verb, record.argument),
        status,
        code or "-",
        (time.perf_counter() - record.started) * 1000,
    )
