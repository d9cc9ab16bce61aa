"""Gateway settings, read from the environment (template.yaml sets them in the cloud)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.connlimits import ConnectionLimits

#: Listener name -> (environment variable, local default port). The cloud uses the
#: well-known ports (RFC 5321 §4.5.4 25, RFC 6409 587, RFC 8314 465/993/995, RFC 3501 143,
#: RFC 1939 110); locally they are unprivileged.
LISTENERS: dict[str, tuple[str, int]] = {
    "smtp": ("SMTP_PORT", 2525),
    "submission": ("SUBMISSION_PORT", 2587),
    "submissions": ("SUBMISSIONS_PORT", 2465),
    "imap": ("IMAP_PORT", 1143),
    "imaps": ("IMAPS_PORT", 1993),
    "pop3": ("POP3_PORT", 1110),
    "pop3s": ("POP3S_PORT", 1995),
}
#: The protocol each listener speaks.
PROTOCOL: dict[str, str] = {
    "smtp": "smtp",
    "submission": "smtp",
    "submissions": "smtp",
    "imap": "imap",
    "imaps": "imap",
    "pop3": "pop3",
    "pop3s": "pop3",
}
#: Listeners that start TLS at once (RFC 8314 §3.3); the others offer STARTTLS/STLS.
IMPLICIT_TLS = frozenset({"submissions", "imaps", "pop3s"})
#: Function logical ID -> environment variable holding its deployed name.
FUNCTIONS: dict[str, str] = {
    "AuthFunction": "AUTH_FUNCTION",
    "IngestFunction": "INGEST_FUNCTION",
    "MailboxFunction": "MAILBOX_FUNCTION",
    "SubmitFunction": "SUBMIT_FUNCTION",
}


@dataclass(frozen=True)
class GatewayConfig:
    bind: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: {n: p for n, (_, p) in LISTENERS.items()})
    hostname: str = "localhost"
    mail_bucket: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    function_names: dict[str, str] = field(default_factory=dict)
    #: TCP port the load balancer's health check connects to (0: none).
    health_port: int = 0
    #: Listeners whose connections begin with a PROXY protocol header (gateway/proxy.py);
    #: on them a connection without a valid one is dropped.
    proxy_protocol: frozenset[str] = frozenset()
    #: Seconds the PROXY header may take (HAProxy's proxy-protocol.txt §1: at least 3).
    proxy_header_timeout: float = 5.0
    #: Seconds the TLS handshake of an implicit-TLS listener may take.
    tls_handshake_timeout: float = 30.0
    #: Seconds between looks at the certificate and key files for a change (0: never).
    tls_reload_seconds: float = 60.0
    #: Seconds between reads of the TLS_SECRET_ARN secret for a new version (0: never;
    #: gateway/secret_tls.py).
    tls_secret_refresh_seconds: float = 3600.0
    #: Open connections in total, per client address, per IMAP user (gateway/connlimits.py).
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        env = os.environ if env is None else env
        return cls(
            bind=env.get("GATEWAY_BIND", "127.0.0.1"),
            ports={name: int(env.get(var, default)) for name, (var, default) in LISTENERS.items()},
            hostname=env.get("MAIL_HOSTNAME", "localhost"),
            mail_bucket=env.get("MAIL_BUCKET", ""),
            tls_cert_file=env.get("TLS_CERT_FILE", ""),
            tls_key_file=env.get("TLS_KEY_FILE", ""),
            function_names={logical: env[var] for logical, var in FUNCTIONS.items() if env.get(var)},
            health_port=int(env.get("HEALTH_PORT", 0)),
            proxy_protocol=proxy_listeners(env.get("PROXY_PROTOCOL_LISTENERS", "")),
            proxy_header_timeout=float(env.get("PROXY_PROTOCOL_TIMEOUT") or 5.0),
            tls_handshake_timeout=float(env.get("TLS_HANDSHAKE_TIMEOUT") or 30.0),
            tls_reload_seconds=float(env.get("TLS_RELOAD_SECONDS") or 60.0),
            tls_secret_refresh_seconds=float(env.get("TLS_SECRET_REFRESH_SECONDS") or 3600.0),
            connection_limits=ConnectionLimits.from_env(env),
        )


def proxy_listeners(setting: str) -> frozenset[str]:
    """``PROXY_PROTOCOL_LISTENERS``: listener names, comma-separated, or ``all``."""
    names = {name.strip() for name in setting.split(",") if name.strip()}
    if names == {"all"}:
        return frozenset(LISTENERS)
    unknown = names - set(LISTENERS)
    if unknown:
        raise ValueError(f"PROXY_PROTOCOL_LISTENERS names unknown listeners: {', '.join(sorted(unknown))}")
    return frozenset(names)
