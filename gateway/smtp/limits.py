"""The SMTP listener's limits, each with the rule it comes from.

Read once from the environment (template.yaml gives the gateway ``MESSAGE_SIZE_LIMIT``);
tests build their own :class:`SmtpLimits` with small timeouts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.wire.lines import MinRate

#: RFC 5321 §4.5.3.1.4: a command line is at most 512 octets, CRLF included.
COMMAND_LINE = 512
#: Extensions lengthen MAIL: SIZE +26 (RFC 1870 §3), BODY +16 (RFC 6152 §2),
#: RET and ENVID +100 (RFC 3461 §4), SMTPUTF8 +10 (RFC 6531 §3.1).
MAIL_LINE = COMMAND_LINE + 26 + 16 + 100 + 10
#: NOTIFY and ORCPT lengthen RCPT by 500 (RFC 3461 §4), SMTPUTF8 addresses by 10 (RFC 6531 §3.1).
RCPT_LINE = COMMAND_LINE + 500 + 10
#: The longest line read before the verb is known.
LONGEST_COMMAND_LINE = max(MAIL_LINE, RCPT_LINE)

#: Template parameter ``MessageSizeLimit`` (35 MiB): what SIZE advertises (RFC 1870 §4).
DEFAULT_MESSAGE_SIZE = 35 * 1024 * 1024
#: Messages up to this size (trace fields included) go to the IngestFunction inline
#: rather than through S3 staging (DESIGN.md contract 1).
DEFAULT_INLINE_SIZE = 256 * 1024
#: A synchronous Lambda invoke carries at most 6 MB; base64 makes 4 MiB into 5.6 MB.
MAX_INLINE_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class SmtpLimits:
    #: RFC 1870 §4: advertised in ``SIZE``, enforced at MAIL (declared) and after the data.
    message_size: int = DEFAULT_MESSAGE_SIZE
    #: RFC 5321 §4.5.3.1.8: at least 100 recipients must be buffered; more get 452 4.5.3
    #: (RFC 5321 §4.5.3.1.10), and the client sends them in another transaction.
    recipients: int = 100
    #: Replies of 5xx before the session is closed with 421 (Postfix ``smtpd_hard_error_limit``).
    bad_commands: int = 20
    #: RFC 5321 §4.5.3.2.7: the server waits at least 5 minutes for the next command.
    command_timeout: float = 300.0
    #: RFC 5321 §4.5.3.2.5/6: a client waits 3 minutes per data block and 10 for the reply to
    #: the final dot; the server waits at least as long as for a command for each block.
    data_timeout: float = 300.0
    #: TLS handshake after STARTTLS (RFC 3207 §4); asyncio's default is 60 s.
    tls_handshake_timeout: float = 60.0
    #: Largest message handed to the delivery inline (0: every message is staged in S3).
    inline_size: int = DEFAULT_INLINE_SIZE
    #: Slow clients (Postfix ``smtpd_min_data_rate``, 500): once a command line, the DATA
    #: or a BDAT chunk has begun, after ``rate_grace`` seconds octets must keep arriving
    #: at this many per second (0: no minimum); below it, 421 4.4.2 and close.
    min_data_rate: float = 500.0
    rate_grace: float = 10.0
    #: Postfix ``smtpd_junk_command_limit`` (100): NOOP, VRFY, RSET, HELP, EHLO and HELO
    #: beyond this many since the last accepted message get 421 4.7.0 and close (0: no limit).
    junk_commands: int = 100
    #: Submission: seconds from the greeting until AUTH must have succeeded; a command
    #: wait beyond it gets 421 4.4.2 and close (RFC 5321 §4.5.3.2.7 asks no more of a
    #: client that does not log in).
    login_deadline: float = 120.0

    def __post_init__(self) -> None:
        if not 0 <= self.inline_size <= MAX_INLINE_SIZE:
            raise ValueError(f"inline_size must be within 0..{MAX_INLINE_SIZE}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SmtpLimits:
        env = os.environ if env is None else env
        return cls(
            message_size=int(env.get("MESSAGE_SIZE_LIMIT") or DEFAULT_MESSAGE_SIZE),
            recipients=int(env.get("SMTP_MAX_RECIPIENTS") or 100),
            bad_commands=int(env.get("SMTP_BAD_COMMAND_LIMIT") or 20),
            command_timeout=float(env.get("SMTP_COMMAND_TIMEOUT") or 300.0),
            data_timeout=float(env.get("SMTP_DATA_TIMEOUT") or 300.0),
            inline_size=int(env.get("SMTP_INLINE_SIZE") or DEFAULT_INLINE_SIZE),
            min_data_rate=float(env.get("SMTP_MIN_DATA_RATE") or 500.0),
            rate_grace=float(env.get("SMTP_RATE_GRACE") or 10.0),
            junk_commands=int(env.get("SMTP_JUNK_COMMAND_LIMIT") or 100),
            login_deadline=float(env.get("SMTP_LOGIN_DEADLINE") or 120.0),
        )

    @property
    def min_rate(self) -> MinRate:
        return MinRate(self.min_data_rate, self.rate_grace)
