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
        )
