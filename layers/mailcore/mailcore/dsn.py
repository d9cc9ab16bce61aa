"""Delivery status notifications: RFC 3464 reports in an RFC 6522 multipart/report.

:func:`build_report` makes the whole message, as bytes with CRLF line ends:

1. a text/plain explanation for people;
2. message/delivery-status: the per-message fields (RFC 3464 §2.2) and one block of
   per-recipient fields per recipient (§2.3): Final-Recipient, Action, Status,
   Remote-MTA and Diagnostic-Code when a server answered, Last-Attempt-Date;
3. the original message: its header section as text/rfc822-headers (RFC 6522 §4), or
   all of it as message/rfc822 when the sender asked for RET=FULL (RFC 3461 §4.3) and it
   is at most :data:`MAX_RETURNED` octets.

A DSN travels with the null reverse-path (RFC 3464 §2, RFC 5321 §4.5.5), so it can
never cause another; the caller sees to that, and to never reporting on a message that
had the null reverse-path itself.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
#: What each report action answers to in NOTIFY (RFC 3461 §4.1).
NOTIFY_KIND = {"failed": "FAILURE", "delayed": "DELAY", "relayed": "SUCCESS", "delivered": "SUCCESS", "expanded": "SUCCESS"}
#: RET=FULL returns the whole message up to this size, its header section beyond (as
#: Postfix's bounce_size_limit): a report must fit a queue record and a mailbox.
MAX_RETURNED = 50_000
#: RFC 5322 §2.1.1: a line is at most 998 characters; leave room for the field name.
_MAX_FIELD = 900


def wants_report(notify: str, kind: str) -> bool:
    """RFC 3461 §4.1 NOTIFY: NEVER, or a list of SUCCESS, FAILURE, DELAY. Absent, it is
    FAILURE or FAILURE,DELAY at the MTA's discretion: here FAILURE,DELAY, as Postfix and
    Sendmail have it (a delay warning once, after ``RELAY_DELAY_WARNING_SECONDS``)."""
    values = {v.strip().upper() for v in notify.split(",") if v.strip()}
    if not values:
        return kind in ("FAILURE", "DELAY")
    return "NEVER" not in values and kind in values


def asked(recipients: Sequence[str], notify: Sequence[str], recipient: str, action: str) -> bool:
    """Whether ``recipient``'s NOTIFY (``notify`` runs beside ``recipients``, "" where
    absent) asks for a report with ``action``."""
    index = {r: i for i, r in enumerate(recipients)}.get(recipient, -1)
    return wants_report(notify[index] if 0 <= index < len(notify) else "", NOTIFY_KIND[action])


@dataclass(frozen=True)
class RecipientReport:
    """One recipient's block (RFC 3464 §2.3)."""

    recipient: str
    action: str
    status: str
    diagnostic: str = ""
    #: "smtp" when ``diagnostic`` is a server's reply; else our own words (an X- type).
    diagnostic_type: str = "smtp"
    remote_mta: str = ""
    #: The ORCPT of the envelope, "addr-type;address" (RFC 3461 §4.2).
    original_recipient: str = ""
    last_attempt: int = 0
    will_retry_until: int = 0


def rfc5322_date(epoch: float) -> str:
    """RFC 5322 §3.3 date-time, in UTC ("+0000", a known zone, not "-0000")."""
    return format_datetime(datetime.fromtimestamp(epoch, UTC))


def _clean(value: str) -> str:
    """One line, no control characters, not too long (a field value must not fold here)."""
    value = re.sub(r"[\x00-\x1f\x7f]+", " ", value).strip()
    return value[:_MAX_FIELD]


def header_section(message: bytes) -> bytes:
    """The header section of ``message`` without the empty line after it (RFC 5322 §2.1)."""
    match = re.search(rb"\r?\n\r?\n", message)
    head = message if match is None else message[: match.start()]
    return head.rstrip(b"\r\n") + b"\r\n"


def _crlf(data: bytes) -> bytes:
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def _human_text(reporting_mta: str, reports: Sequence[RecipientReport]) -> str:
    failed = [r for r in reports if r.action == "failed"]
    delayed = [r for r in reports if r.action == "delayed"]
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    if failed:
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. It's attached below.",
            "",
        ]
    if delayed:
        lines += [
            "Your message could not be delivered yet to one or more recipients.",
            "It will be tried again; you need not send it again.",
            "",
        ]
    if any(r.action in ("delivered", "expanded") for r in reports):
        lines += ["Your message was delivered to the mailbox of one or more recipients, as you", "asked to be told.", ""]
    if any(r.action == "relayed" for r in reports):
        lines += [
            "Your message was handed to the mail server of one or more recipients, as",
            "you asked to be told. That server does not report delivery, so this is the",
            "last notice from here; it may still return the message if it cannot deliver it.",
            "",
        ]
    for r in reports:
        reason = r.diagnostic or r.status
        where = f" (from {r.remote_mta})" if r.remote_mta else ""
        lines.append(f"<{r.recipient}>: {r.action}{where}: {_clean(reason)}")
    return "\r\n".join(lines) + "\r\n"


def _recipient_block(r: RecipientReport) -> list[str]:
    if r.action not in ACTIONS:
        raise ValueError(f"unknown action {r.action!r}")
    fields = []
    if r.original_recipient:
        kind, _, address = r.original_recipient.partition(";")
        fields.append(f"Original-Recipient: {kind.strip() or 'rfc822'};{_clean(address)}")
    fields += [
        f"Final-Recipient: rfc822;{_clean(r.recipient)}",
        f"Action: {r.action}",
        f"Status: {r.status}",
    ]
    if r.remote_mta:
        fields.append(f"Remote-MTA: dns;{_clean(r.remote_mta)}")
    if r.diagnostic:
        kind = "smtp" if r.diagnostic_type == "smtp" else "X-Mailcore"
        fields.append(f"Diagnostic-Code: {kind};{_clean(r.diagnostic)}")
    if r.last_attempt:
        fields.append(f"Last-Attempt-Date: {rfc5322_date(r.last_attempt)}")
    if r.will_retry_until:
        fields.append(f"Will-Retry-Until: {rfc5322_date(r.will_retry_until)}")
    return fields


def build_report(
    *,
    reporting_mta: str,
    sender: str,
    reports: Sequence[RecipientReport],
    original: bytes,
    arrival: float,
    envid: str = "",
    ret: str = "",
    now: float | None = None,
    message_id: str = "",
) -> bytes:
    """The DSN to send to ``sender`` about ``original``'s ``reports``."""
    if not reports:
        raise ValueError("a report needs at least one recipient")
    now = time.time() if now is None else now
    token = uuid.uuid4().hex
    boundary = f"=_report_{token[:24]}"
    message_id = message_id or f"<dsn.{token}@{reporting_mta}>"
    failed = any(r.action == "failed" for r in reports)
    delayed = any(r.action == "delayed" for r in reports)
    if failed:
        subject = "Undelivered Mail Returned to Sender"
    elif delayed:
        subject = "Delayed Mail (still being retried)"
    else:
        subject = "Successful Mail Delivery Report"
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {rfc5322_date(now)}",
        f"Message-ID: {message_id}",
        # RFC 3834 §5: a machine's reply; autoresponders must not answer it.
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    per_message = [f"Reporting-MTA: dns;{reporting_mta}"]
    if envid:
        per_message.append(f"Original-Envelope-Id: {_clean(envid)}")
    per_message.append(f"Arrival-Date: {rfc5322_date(arrival)}")
    status_lines = per_message
    for r in reports:
        status_lines += ["", *_recipient_block(r)]
    full = ret.upper() == "FULL" and len(original) <= MAX_RETURNED
    original = _crlf(original)
    attached = original if full else header_section(original)
    eight_bit = any(b > 127 for b in attached)
    parts = [
        b"Content-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + _human_text(reporting_mta, reports).encode("utf-8"),
        b"Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n"
        + "\r\n".join(status_lines).encode("utf-8")
        + b"\r\n",
        (
            b"Content-Description: " + (b"Undelivered " if failed or delayed else b"Delivered ")
            + (b"Message" if full else b"Message Headers") + b"\r\n"
            b"Content-Type: " + (b"message/rfc822" if full else b"text/rfc822-headers") + b"\r\n"
            + (b"Content-Transfer-Encoding: 8bit\r\n" if eight_bit else b"")
            + b"\r\n"
            + attached
        ),
    ]
    # RFC 2046 §5.1.1: the CRLF before a boundary belongs to the boundary, so a part
    # keeps its own last line end.
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    preamble = b"This is a MIME-encapsulated message.\r\n\r\n"
    return "\r\n".join(headers).encode("utf-8") + b"\r\n\r\n" + preamble + body


def report_id(*parts: str) -> str:
    """A stable identifier for a report (for deduplicating its delivery)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
