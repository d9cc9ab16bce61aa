"""SMTP replies: a code, an enhanced status code and text; the catalog every handler uses.

RFC 5321 §4.2 (reply codes), RFC 3463 (enhanced status codes ``class.subject.detail``),
RFC 2034 §3 (the enhanced code follows the reply code on every line of 2xx, 4xx and 5xx
replies, except the greeting and the reply to HELO/EHLO). Texts follow Postfix where it
has a well-known wording, so operators recognise them in logs.

Texts never carry exception names or AWS error text; a temporary failure carries only the
correlation id that is also in the logs (DESIGN.md, one error taxonomy).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Action(enum.Enum):
    """What the session does after writing a reply."""

    NONE = "none"
    CLOSE = "close"  # RFC 5321 §3.8: 221/421 and then close the channel
    STARTTLS = "starttls"  # RFC 3207 §4: 220, then the TLS handshake
    DATA = "data"  # RFC 5321 §4.1.1.4: 354, then the mail data


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    lines: tuple[str, ...]
    action: Action = Action.NONE

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def is_error(self) -> bool:
        return self.code >= 400

    def with_text(self, *lines: str) -> Reply:
        return replace(self, lines=tuple(lines))

    def then(self, action: Action) -> Reply:
        return replace(self, action=action)

    def render(self) -> bytes:
        """RFC 5321 §4.2.1: ``code-text`` on every line but the last, ``code text`` on it."""
        out = []
        last = len(self.lines) - 1
        for index, line in enumerate(self.lines):
            separator = " " if index == last else "-"
            prefix = f"{self.enhanced} " if self.enhanced else ""
            out.append(f"{self.code}{separator}{prefix}{line}\r\n")
        return "".join(out).encode("utf-8")


def reply(code: int, enhanced: str, *lines: str) -> Reply:
    return Reply(code, enhanced, lines)


# -- 2xx ------------------------------------------------------------------------------
S214_HELP = reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY STARTTLS")
S221_BYE = reply(221, "2.0.0", "Bye").then(Action.CLOSE)
S221_HTTP = reply(221, "2.7.0", "Error: I can break rules, too. Goodbye.").then(Action.CLOSE)
S250_OK = reply(250, "2.0.0", "Ok")
S250_SENDER_OK = reply(250, "2.1.0", "Ok")
S250_RECIPIENT_OK = reply(250, "2.1.5", "Ok")
S250_QUEUED = reply(250, "2.0.0", "Ok: queued")
S250_CHUNK_OK = reply(250, "2.0.0", "Ok: chunk received")
# RFC 5321 §3.5.3: 252 when the server will not verify but will accept and try delivery.
S252_CANNOT_VRFY = reply(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery")

# -- 3xx (no enhanced code, RFC 2034 §3) ---------------------------------------------------
S354_DATA = reply(354, "", "End data with <CR><LF>.<CR><LF>").then(Action.DATA)

# -- 4xx ------------------------------------------------------------------------------
S421_TIMEOUT = reply(421, "4.4.2", "Error: timeout exceeded").then(Action.CLOSE)
S421_TOO_MANY_ERRORS = reply(421, "4.7.0", "Error: too many errors").then(Action.CLOSE)
S421_TOO_MANY_CONNECTIONS = reply(421, "4.7.0", "Error: too many connections, try again later").then(Action.CLOSE)
S421_SHUTTING_DOWN = reply(421, "4.3.2", "Service shutting down, closing transmission channel").then(Action.CLOSE)
S451_TEMPORARY = reply(451, "4.3.0", "Error: temporary failure, try again later")
# RFC 5321 §4.5.3.1.10: "452 Too many recipients"; RFC 3463 X.5.3.
S452_TOO_MANY_RECIPIENTS = reply(452, "4.5.3", "Error: too many recipients")
S454_TLS_UNAVAILABLE = reply(454, "4.7.0", "TLS not available due to local problem")

# -- 5xx: syntax (RFC 3463 X.5.x protocol status) --------------------------------------------
S500_UNRECOGNIZED = reply(500, "5.5.2", "Error: command not recognized")
S500_LINE_TOO_LONG = reply(500, "5.5.2", "Error: line too long")  # RFC 5321 §4.5.3.1.4
S500_BAD_SYNTAX = reply(500, "5.5.2", "Error: bad syntax")
S501_SYNTAX = reply(501, "5.5.4", "Syntax error in parameters or arguments")
S501_BAD_SENDER = reply(501, "5.1.7", "Bad sender address syntax")
S501_BAD_RECIPIENT = reply(501, "5.1.3", "Bad recipient address syntax")
S501_PATH_TOO_LONG = reply(501, "5.1.3", "Path too long")  # RFC 5321 §4.5.3.1.3
S502_EXPN_DISABLED = reply(502, "5.5.1", "EXPN command is disabled")  # RFC 5321 §7.3
S503_SEND_HELO_FIRST = reply(503, "5.5.1", "Error: send HELO/EHLO first")
S503_NESTED_MAIL = reply(503, "5.5.1", "Error: nested MAIL command")
S503_NEED_MAIL = reply(503, "5.5.1", "Error: need MAIL command")
S503_NEED_RCPT = reply(503, "5.5.1", "Error: need RCPT command")
S503_BAD_SEQUENCE = reply(503, "5.5.1", "Error: bad sequence of commands")
S503_DATA_AFTER_BDAT = reply(503, "5.5.1", "Error: DATA after BDAT in one transaction")  # RFC 3030 §3
S503_TRANSACTION_IN_PROGRESS = reply(503, "5.5.1", "Error: MAIL transaction in progress")
S503_AUTH_NOT_ENABLED = reply(503, "5.5.1", "Error: authentication not enabled")
S503_TLS_ACTIVE = reply(503, "5.5.1", "Error: TLS already active")
S555_UNSUPPORTED_PARAMETER = reply(555, "5.5.4", "Unsupported option")  # RFC 5321 §4.1.1.11

# -- 5xx: user and policy ---------------------------------------------------------------
S550_NO_SUCH_USER = reply(550, "5.1.1", "Recipient address rejected: User unknown")
S550_NO_LOCAL_RECIPIENT = reply(550, "5.1.1", "Error: no local recipient left for this message")
S552_TOO_BIG = reply(552, "5.3.4", "Message size exceeds fixed limit")  # RFC 1870 §6
S553_NON_ASCII = reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")  # RFC 6531 §3.5
S554_RELAY_DENIED = reply(554, "5.7.1", "Relay access denied")
S554_NO_VALID_RECIPIENTS = reply(554, "5.5.1", "Error: no valid recipients")  # RFC 5321 §3.3
S554_TRANSACTION_FAILED = reply(554, "5.3.0", "Transaction failed")
S554_PIPELINED_STARTTLS = reply(554, "5.5.1", "Error: command pipelining after STARTTLS").then(Action.CLOSE)


def greeting(hostname: str) -> Reply:
    """RFC 5321 §4.2 and §3.1: ``220 <domain>``; no enhanced code (RFC 2034 §3)."""
    return reply(220, "", f"{hostname} ESMTP")


def starttls_ready() -> Reply:
    return reply(220, "2.0.0", "Ready to start TLS").then(Action.STARTTLS)
