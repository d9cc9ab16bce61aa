"""Configuration read from the environment, once per call site, never at import."""

from __future__ import annotations

import os
from dataclasses import dataclass


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
        )
