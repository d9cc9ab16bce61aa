"""RFC 3464 delivery status notifications, read back with the standard email package."""

from __future__ import annotations

import email
import email.policy
from email.message import Message

import pytest
from mailcore.dsn import MAX_RETURNED, RecipientReport, build_report, header_section, wants_report

ORIGINAL = (
    b"Received: from client by mail.example.test\r\n"
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@remote.test, carol@remote.test\r\n"
    b"Subject: Lunch?\r\n"
    b"Message-ID: <m1@example.test>\r\n"
    b"\r\n"
    b"Shall we?\r\n"
)
ARRIVAL = 1_790_000_000
NOW = ARRIVAL + 3600

FAILED = RecipientReport(
    recipient="bob@remote.test",
    action="failed",
    status="5.1.1",
    diagnostic="550 5.1.1 <bob@remote.test>: no such user",
    remote_mta="mx.remote.test",
    original_recipient="rfc822;Bob@Remote.test",
    last_attempt=NOW,
)
EXPIRED = RecipientReport(
    recipient="carol@remote.test",
    action="failed",
    status="4.4.7",
    diagnostic="connect to mx.remote.test[127.0.0.21]:25: Connection refused",
    diagnostic_type="",
    last_attempt=NOW,
)


def parse(data: bytes) -> Message:
    return email.message_from_bytes(data, policy=email.policy.compat32)


def report(**kwargs) -> Message:
    args = {
        "reporting_mta": "mail.example.test",
        "sender": "alice@example.test",
        "reports": [FAILED, EXPIRED],
        "original": ORIGINAL,
        "arrival": ARRIVAL,
        "now": NOW,
    }
    return parse(build_report(**{**args, **kwargs}))


def test_a_report_is_multipart_report_of_three_parts_rfc6522():
    message = report()
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"  # RFC 3464 §2
    parts = message.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert message["To"] == "<alice@example.test>"
    assert message["From"] == "Mail Delivery System <MAILER-DAEMON@mail.example.test>"
    assert message["Auto-Submitted"] == "auto-replied"  # RFC 3834 §5
    assert message["Message-ID"].endswith("@mail.example.test>")
    assert "bob@remote.test" in parts[0].get_payload()


def test_per_message_and_per_recipient_fields_rfc3464_2():
    status = report(envid="QQ314159").get_payload()[1]
    per_message, bob, carol = status.get_payload()  # the email package parses the field blocks
    assert per_message["Reporting-MTA"] == "dns;mail.example.test"
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert email.utils.parsedate_to_datetime(per_message["Arrival-Date"]).timestamp() == ARRIVAL
    assert bob["Original-Recipient"] == "rfc822;Bob@Remote.test"
    assert bob["Final-Recipient"] == "rfc822;bob@remote.test"
    assert (bob["Action"], bob["Status"]) == ("failed", "5.1.1")
    assert bob["Remote-MTA"] == "dns;mx.remote.test"
    assert bob["Diagnostic-Code"] == "smtp;550 5.1.1 <bob@remote.test>: no such user"
    assert email.utils.parsedate_to_datetime(bob["Last-Attempt-Date"]).timestamp() == NOW
    assert (carol["Action"], carol["Status"]) == ("failed", "4.4.7")
    assert carol["Remote-MTA"] is None
    assert carol["Diagnostic-Code"].startswith("X-Mailcore;connect to mx.remote.test")


def test_the_original_headers_come_back_without_the_body():
    headers = report().get_payload()[2]
    text = headers.get_payload()
    assert "Subject: Lunch?" in text and "Message-ID: <m1@example.test>" in text
    assert "Shall we?" not in text


def test_ret_full_returns_the_whole_message_rfc3461_4_3():
    attached = report(ret="FULL").get_payload()[2]
    assert attached.get_content_type() == "message/rfc822"
    (inner,) = attached.get_payload()
    assert inner["Subject"] == "Lunch?" and inner.get_payload() == "Shall we?\r\n"


def test_ret_full_of_a_large_message_returns_its_headers_only():
    # Postfix's bounce_size_limit: a report must fit a queue record (SQS: 256 KiB)
    large = ORIGINAL + b"x" * MAX_RETURNED
    attached = report(ret="FULL", original=large).get_payload()[2]
    assert attached.get_content_type() == "text/rfc822-headers"
    assert "Subject: Lunch?" in attached.get_payload() and "xxxx" not in attached.get_payload()


def test_success_reports_say_delivered():
    delivered = RecipientReport("bob@remote.test", "delivered", "2.0.0")
    message = report(reports=[delivered])
    assert message["Subject"] == "Successful Mail Delivery Report"
    assert "delivered to the mailbox" in message.get_payload()[0].get_payload()
    assert message.get_payload()[2]["Content-Description"] == "Delivered Message Headers"


def test_delay_reports_say_until_when():
    delayed = RecipientReport("bob@remote.test", "delayed", "4.4.1", will_retry_until=NOW + 86400)
    message = report(reports=[delayed])
    assert message["Subject"].startswith("Delayed Mail")
    block = message.get_payload()[1].get_payload()[1]
    assert block["Action"] == "delayed" and block["Will-Retry-Until"]


def test_fields_stay_on_one_line_whatever_the_server_said():
    noisy = RecipientReport("bob@remote.test", "failed", "5.0.0", diagnostic="550 first\r\nInjected: yes" + "x" * 2000)
    data = build_report(reporting_mta="m", sender="a@b", reports=[noisy], original=ORIGINAL, arrival=ARRIVAL)
    block = parse(data).get_payload()[1].get_payload()[1]
    assert block["Injected"] is None
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))


def test_eight_bit_headers_are_declared():
    original = "Subject: Grüße\r\n\r\nBody\r\n".encode()
    data = build_report(reporting_mta="m", sender="a@b", reports=[FAILED], original=original, arrival=ARRIVAL)
    assert parse(data).get_payload()[2]["Content-Transfer-Encoding"] == "8bit"


@pytest.mark.parametrize(
    ("message", "head"),
    [
        (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", b"A: 1\r\nB: 2\r\n"),
        (b"A: 1\nB: 2\n\nbody\n", b"A: 1\nB: 2\r\n"),
        (b"A: 1\r\n", b"A: 1\r\n"),
    ],
)
def test_header_section(message, head):
    assert header_section(message) == head


def test_unknown_actions_are_refused():
    with pytest.raises(ValueError):
        build_report(
            reporting_mta="m",
            sender="a@b",
            reports=[RecipientReport("x@y", "bounced", "5.0.0")],
            original=ORIGINAL,
            arrival=ARRIVAL,
        )


@pytest.mark.parametrize(
    ("notify", "kind", "wanted"),
    [("", "FAILURE", True), ("", "DELAY", True), ("", "SUCCESS", False), ("NEVER", "FAILURE", False),
     ("NEVER", "DELAY", False), ("SUCCESS,DELAY", "FAILURE", False), ("failure", "FAILURE", True),
     ("SUCCESS, FAILURE", "FAILURE", True), ("FAILURE", "DELAY", False)],
)
def test_notify_rfc3461_4_1(notify, kind, wanted):
    assert wants_report(notify, kind) is wanted
