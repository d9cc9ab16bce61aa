"""POP3 limits and policy, each beside the rule it serves.

Read from the environment once per gateway (``POP3_*``); tests put their own
:class:`Pop3Settings` in ``Gateway.services["pop3"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gateway.settings import EnvSettings, plaintext_permitted
from gateway.wire.lines import MinRate


@dataclass(frozen=True)
class Pop3Settings(EnvSettings):
    ENV_PREFIX: ClassVar[str] = "POP3"

    #: Seconds before answering a failed login (slows down password guessing).
    auth_failure_delay: float = 1.0
    #: RFC 1939 §3: an autologout timer of at least 10 minutes.
    idle_timeout: float = 600.0
    #: Bad commands (syntax, unknown, wrong state, failed logins ...) before we hang up.
    max_bad_commands: int = 10
    #: Commands a client may send before logging in (CAPA, USER, STLS ...).
    max_commands_before_login: int = 30
    #: Seconds from the greeting until the login must have succeeded.
    login_deadline: float = 120.0
    #: Slow clients (as Postfix's ``smtpd_min_data_rate``): once a line has begun, after
    #: ``rate_grace`` seconds octets must keep arriving at this many per second (0: no
    #: minimum); below it, -ERR and close.
    min_data_rate: float = 500.0
    rate_grace: float = 10.0
    #: The exclusive-access lock (RFC 1939 §4) is a lease of this many seconds, renewed
    #: while the session lives; a gateway that dies holds it no longer than that.
    lease_seconds: int = 300
    lease_renew_seconds: float = 60.0
    #: RFC 2595 §2.2: no USER/PASS or AUTH PLAIN without TLS, except (as Dovecot's
    #: ``disable_plaintext_auth`` does for local connections) from loopback.
    trust_loopback: bool = True
    allow_plaintext: bool = False
    #: Like Dovecot, set \Seen in UPDATE on the messages RETR returned and QUIT kept.
    mark_seen: bool = True
    #: After RETR n, start reading the next messages' blobs into the gateway's cache:
    #: clients (fetchmail, phones) retrieve one after another, and S3 answers in parallel.
    readahead: int = 4
    #: Message summaries per listing call at login (0: the function's page, 20,000).
    listing_page: int = 0
    #: Seconds a TLS handshake after STLS may take.
    tls_handshake_timeout: float = 30.0

    @property
    def min_rate(self) -> MinRate:
        return MinRate(self.min_data_rate, self.rate_grace)

    def plaintext_permitted(self, secure: bool, peer_host: str) -> bool:
        """May credentials travel in the clear on this connection?"""
        return plaintext_permitted(
            secure, peer_host, trust_loopback=self.trust_loopback, allow_plaintext=self.allow_plaintext
        )
