"""IMAP limits and policy, each beside the rule it serves.

Read from the environment once per gateway (``IMAP_*``, e.g. ``IMAP_IDLE_TIMEOUT``);
tests put their own :class:`ImapSettings` in ``Gateway.services["imap"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gateway.imap.grammar import Limits
from gateway.settings import EnvSettings, plaintext_permitted
from gateway.wire.lines import MinRate


@dataclass(frozen=True)
class ImapSettings(EnvSettings):
    ENV_PREFIX: ClassVar[str] = "IMAP"

    #: RFC 3501 leaves the line length to the server; RFC 7162 §4 asks clients to keep
    #: command lines under 8192 octets and servers to accept at least that. Dovecot: 64 KiB.
    max_line: int = 65_536
    #: A literal other than an APPEND message (a password, a search string).
    max_literal: int = 65_536
    #: A whole command, literals included (APPEND messages excepted).
    max_command: int = 1_048_576
    #: An APPEND message (RFC 7889 APPENDLIMIT); larger ones get NO [TOOBIG] before any
    #: octet is read.
    max_message: int = 50 * 1024 * 1024
    #: Parentheses / NOT / OR nesting in one command.
    max_depth: int = 16
    #: Items in one sequence set.
    max_sequence_items: int = 10_000
    #: BAD answers before the server hangs up (STYLE.md: a budget of bad commands).
    max_bad_commands: int = 20
    #: Commands before LOGIN/AUTHENTICATE succeeds.
    max_commands_before_login: int = 50
    #: RFC 3501 §5.4: the autologout timer is at least 30 minutes (it also bounds IDLE:
    #: RFC 2177 §3 asks clients to re-issue IDLE at least every 29 minutes).
    idle_timeout: float = 1800.0
    #: Before login, a shorter timer (RFC 3501 §5.4 allows it for unauthenticated sessions).
    login_timeout: float = 60.0
    #: And the whole session, from the greeting, has this long to log in.
    login_deadline: float = 120.0
    #: Slow clients (as Postfix's ``smtpd_min_data_rate``): once a line or a literal has
    #: begun, after ``rate_grace`` seconds octets must keep arriving at this many per
    #: second (0: no minimum); below it, BYE and close.
    min_data_rate: float = 500.0
    rate_grace: float = 10.0
    #: Seconds before answering a failed login (slows down password guessing).
    auth_failure_delay: float = 1.0
    #: The gateway's poller asks once per interval what changed in every mailbox its
    #: sessions have selected (one function call for all of them).
    poll_interval: float = 2.0
    #: At least this long between two polls, however many NOOPs ask for a fresh one.
    poll_min_gap: float = 0.1
    #: RFC 3501 §2.3.1.1 / RFC 2595 §3.2: credentials in the clear only over TLS, except
    #: (like Dovecot's disable_plaintext_auth for local connections) from loopback.
    trust_loopback: bool = True
    allow_plaintext: bool = False
    #: Seconds a TLS handshake after STARTTLS may take.
    tls_handshake_timeout: float = 30.0
    #: UIDs per function call for STORE, COPY, MOVE and FETCH metadata (each call stays
    #: well inside a Lambda timeout and the 6 MB payload).
    uids_per_call: int = 500
    metadata_per_call: int = 200
    #: Message summaries per ``select`` page (0: the function's own page size, 20,000).
    select_page: int = 0

    @property
    def min_rate(self) -> MinRate:
        return MinRate(self.min_data_rate, self.rate_grace)

    @property
    def limits(self) -> Limits:
        return Limits(max_depth=self.max_depth, max_sequence_items=self.max_sequence_items)

    def plaintext_permitted(self, secure: bool, peer_host: str) -> bool:
        """May credentials travel in the clear on this connection?"""
        return plaintext_permitted(
            secure, peer_host, trust_loopback=self.trust_loopback, allow_plaintext=self.allow_plaintext
        )
