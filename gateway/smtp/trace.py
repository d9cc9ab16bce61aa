"""Trace header fields the receiving server adds (RFC 5321 §4.4, RFC 5322 §3.6.7).

This listener is the delivery SMTP server for local mailboxes (the MX role never relays),
so it writes both: ``Return-Path`` with the reverse-path ("When the delivery SMTP server
makes the final delivery of a message, it inserts a return-path line at the beginning of
the mail data", RFC 5321 §4.4) and its ``Received`` line under it.
"""

from __future__ import annotations

import email.utils
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.smtp.grammar import Mailbox

#: Our name in the comment of the BY clause.
SOFTWARE = "serverless-mail"


@dataclass(frozen=True)
class TlsInfo:
    version: str
    cipher: str
    bits: int


@dataclass(frozen=True)
class TraceInfo:
    helo: str
    client_ip: str
    hostname: str
    esmtp: bool
    smtputf8: bool
    tls: TlsInfo | None
    transaction_id: str
    recipients: tuple[str, ...]


def return_path(reverse_path: Mailbox | None) -> str:
    """RFC 5321 §4.4: ``Return-Path: <reverse-path>``; ``<>`` for the null path."""
    return f"Return-Path: <{reverse_path if reverse_path is not None else ''}>\r\n"


def _address_literal(ip: str) -> str:
    """RFC 5321 §4.1.3: ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return "[unknown]"
    if isinstance(address, ipaddress.IPv6Address):
        return f"[IPv6:{address.compressed}]"
    return f"[{address}]"


def protocol(esmtp: bool, smtputf8: bool, tls: bool) -> str:
    """The WITH keyword: RFC 3848 (ESMTP, ESMTPS) and RFC 6531 §4.3 (UTF8SMTP, UTF8SMTPS)."""
    if smtputf8:
        return "UTF8SMTPS" if tls else "UTF8SMTP"
    if esmtp:
        return "ESMTPS" if tls else "ESMTP"
    return "SMTP"


def received(info: TraceInfo, now: datetime | None = None) -> str:
    """RFC 5321 §4.4 Time-stamp-line, folded like Postfix's::

        Received: from client.example ([192.0.2.1])
                (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256 bits))
                by mx.example.com (serverless-mail) with ESMTPS id 3f2a9c01d4e5-1
                for <bob@example.com>; Thu, 26 Nov 2026 10:00:00 +0000

    ``for`` names the recipient only when there is exactly one, so that a message to
    several recipients does not show each of them the others (Postfix does the same).
    """
    when = email.utils.format_datetime(now or datetime.now(UTC))
    lines = [f"Received: from {info.helo} ({_address_literal(info.client_ip)})"]
    if info.tls is not None:
        lines.append(f"\t(using {info.tls.version} with cipher {info.tls.cipher} ({info.tls.bits} bits))")
    by = f"\tby {info.hostname} ({SOFTWARE}) with {protocol(info.esmtp, info.smtputf8, info.tls is not None)}"
    lines.append(f"{by} id {info.transaction_id}")
    if len(info.recipients) == 1:
        lines.append(f"\tfor <{info.recipients[0]}>; {when}")
    else:
        lines[-1] += f"; {when}"
    return "\r\n".join(lines) + "\r\n"
