"""Configuration read from the environment, once per call site, never at import."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ThrottlePolicy:
    """Authentication throttling (:mod:`mailcore.throttle`): failures are counted per
    client address and per account in fixed windows of ``window`` seconds.

    An address's first ``address_free`` failures cost nothing; each one after waits
    ``base_delay`` seconds, doubled per failure up to ``max_delay``; at ``address_limit``
    failures the address is refused until its window ends. The same delays count for an
    account from ``account_free``; at ``account_limit`` the account is refused to the
    addresses that have failures, never to a fresh one (a guesser cannot lock its owner out).
    """

    window: int = 900
    address_free: int = 5
    address_limit: int = 30
    account_free: int = 10
    account_limit: int = 50
    base_delay: int = 1
    max_delay: int = 15

    def delay(self, failures: int, free: int) -> int:
        """Seconds the ``failures``-th failure is answered late, and the next try waits."""
        over = failures - free
        if over <= 0:
            return 0
        return min(self.max_delay, self.base_delay << min(over - 1, 30))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ThrottlePolicy:
        defaults = cls()
        return cls(
            window=int(env.get("THROTTLE_WINDOW_SECONDS") or defaults.window),
            address_free=int(env.get("THROTTLE_ADDRESS_FREE") or defaults.address_free),
            address_limit=int(env.get("THROTTLE_ADDRESS_LIMIT") or defaults.address_limit),
            account_free=int(env.get("THROTTLE_ACCOUNT_FREE") or defaults.account_free),
            account_limit=int(env.get("THROTTLE_ACCOUNT_LIMIT") or defaults.account_limit),
            base_delay=int(env.get("THROTTLE_BASE_DELAY") or defaults.base_delay),
            max_delay=int(env.get("THROTTLE_MAX_DELAY") or defaults.max_delay),
        )


@dataclass(frozen=True)
class Settings:
    """Resource names a function gets from template.yaml (Globals.Function.Environment)."""

    accounts_table: str
    mailboxes_table: str
    messages_table: str
    mail_bucket: str
    event_bus_name: str = ""
    outbound_queue_url: str = ""
    mail_domain: str = ""
    mail_hostname: str = "localhost"
    # -- submission and relay (functions/submit, functions/relay) --
    #: SSM parameter path of the DKIM keys: ``<path>/<domain>`` (SecureString).
    dkim_parameter_path: str = ""
    #: Put a copy of each submitted message into the sender's Sent mailbox.
    save_sent: bool = False
    #: Outbound messages up to this size ride inline in their queue record.
    outbound_inline_limit: int = 131072
    #: ``host[:port]`` of the DNS server for MX lookups ("": the system's resolver).
    relay_dns_server: str = ""
    #: TCP port of remote MXs (RFC 5321 §4.5.4: 25; tests use another).
    relay_smtp_port: int = 25
    #: How long a message is retried before it bounces (RFC 5321 §4.5.4.1: 4-5 days).
    relay_lifetime: int = 5 * 24 * 3600
    #: Backoff between attempts: the first wait, doubled each time up to the last.
    relay_retry_min: int = 300
    relay_retry_max: int = 4 * 3600
    #: After this long deferred, the sender gets one "delayed" report (RFC 3461 §4.1
    #: DELAY; Sendmail's Timeout.queuewarn, 4 hours); 0: never.
    relay_delay_warning: int = 4 * 3600
    # -- authentication (functions/auth) --
    #: The DynamoDB table of failure counters ("": no throttling, as for mailctl).
    throttle_table: str = ""
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        missing = [
            name for name in ("ACCOUNTS_TABLE", "MAILBOXES_TABLE", "MESSAGES_TABLE", "MAIL_BUCKET") if not env.get(name)
        ]
        if missing:
            raise RuntimeError(f"missing environment: {', '.join(missing)}")
        return cls(
            accounts_table=env["ACCOUNTS_TABLE"],
            mailboxes_table=env["MAILBOXES_TABLE"],
            messages_table=env["MESSAGES_TABLE"],
            mail_bucket=env["MAIL_BUCKET"],
            event_bus_name=env.get("EVENT_BUS_NAME", ""),
            outbound_queue_url=env.get("OUTBOUND_QUEUE_URL", ""),
            mail_domain=env.get("MAIL_DOMAIN", ""),
            mail_hostname=env.get("MAIL_HOSTNAME", "localhost"),
            dkim_parameter_path=env.get("DKIM_PARAMETER_PATH", "").rstrip("/"),
            save_sent=env.get("SAVE_SENT", "").lower() in ("1", "true", "yes"),
            outbound_inline_limit=int(env.get("OUTBOUND_INLINE_LIMIT") or 131072),
            relay_dns_server=env.get("RELAY_DNS_SERVER", ""),
            relay_smtp_port=int(env.get("RELAY_SMTP_PORT") or 25),
            relay_lifetime=int(env.get("RELAY_LIFETIME_SECONDS") or 5 * 24 * 3600),
            relay_retry_min=int(env.get("RELAY_RETRY_MIN_SECONDS") or 300),
            relay_retry_max=int(env.get("RELAY_RETRY_MAX_SECONDS") or 4 * 3600),
            relay_delay_warning=int(env.get("RELAY_DELAY_WARNING_SECONDS") or 4 * 3600),
            throttle_table=env.get("THROTTLE_TABLE", ""),
            throttle=ThrottlePolicy.from_env(env),
        )
