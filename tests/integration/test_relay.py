"""The relay, end to end on loopback: submit through the SubmitFunction, then the
OutboundQueue drives the real RelayFunction (as Lambda's SQS event source would) to real
SMTP servers (aiosmtpd on 127.0.0.21/.22) found through a real DNS server.

Each test names its remote domains afresh and publishes their records in the session's
zone; the relay reaches nothing outside 127.0.0.0/8.
"""

from __future__ import annotations

import base64
import email
import email.policy
import email.utils
import json
import secrets
import smtplib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from email.message import Message

import boto3
import dkim as dkimpy
import dns.resolver
import pytest
from mailcore.accounting import count_requests
from mailcore.aws import Clients
from mailcore.contracts import RELAY_REQUESTS, RelayRecord, Submit, parse_request
from mailcore.mailboxes import INBOX
from mailcore.outbound import OutboundQueue, decode_inline, encode_inline
from mailcore.relay import Relay, backoff
from mailcore.settings import Settings
from mailcore.store import Store
from mailcore.submission import submit

from devstack.eventsource import sqs_event
from mailctl.cli import main as mailctl
from tests.dnsserver import DnsServer
from tests.integration.conftest import new_user
from tests.loopback import BUSY, REFUSING, SCRIPTED, SINKS, ScriptedServer

# The loopback world's fixtures: dns_server, remote_mx, relay_env, pump.
pytest_plugins = ["tests.outbound"]

BODY = b"A line of text, to make it four kilobytes.\r\n" * 93


def message(sender: str, to: str, subject: str = "Hello") -> bytes:
    head = f"From: <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{secrets.token_hex(8)}@test>\r\n"
    return head.encode() + b"\r\n" + BODY


@pytest.fixture
def zone(dns_server: DnsServer):
    return dns_server.zone


def remote(zone, *mx: tuple[int, str], a: str = "") -> str:
    """A new remote domain with MX records ``(preference, address)`` (host names made up)."""
    domain = f"r{secrets.token_hex(5)}.test"
    for i, (preference, address) in enumerate(mx):
        host = f"mx{i}.{domain}"
        zone.add(domain, "MX", f"{preference} {host}.")
        zone.add(host, "A", address)
    if a:
        zone.add(domain, "A", a)
    return domain


def send(function_transport, user: str, recipients: list[str], raw: bytes | None = None, **kwargs) -> dict:
    raw = raw or message(user, ", ".join(recipients))
    request = Submit(user=user, sender=kwargs.pop("sender", user), recipients=recipients,
                     message=base64.b64encode(raw).decode(), dedup_key=secrets.token_hex(8), **kwargs)
    result = function_transport.invoke("SubmitFunction", request.to_event())
    assert result["ok"], result
    return result


def inbox(store: Store, user: str) -> list[bytes]:
    mailbox = store.mailboxes.get(user, INBOX)
    return [store.messages.read(mailbox.mailbox_id, r.uid)[1] for r in store.messages.list_range(mailbox.mailbox_id)]


def reports(store: Store, user: str) -> list[Message]:
    """The delivery status notifications in ``user``'s INBOX, parsed by the email package."""
    parsed = [email.message_from_bytes(m, policy=email.policy.compat32) for m in inbox(store, user)]
    return [m for m in parsed if m.get_content_type() == "multipart/report"]


@pytest.fixture
def mail_events(local_stack) -> Iterator:
    """The bus's events, through a rule to a queue of this test's own (removed afterwards)."""
    sqs, events = boto3.client("sqs"), boto3.client("events")
    bus = local_stack.resources["MailEventBus"]
    name = f"relay-events-{secrets.token_hex(4)}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name=name, EventBusName=bus, EventPattern=json.dumps({"source": ["serverless-mail"]}))
    events.put_targets(Rule=name, EventBusName=bus, Targets=[{"Id": "q", "Arn": arn}])

    def read(detail_type: str | None = None) -> list[dict]:
        got = []
        while True:
            batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            if not batch:
                break
            for m in batch:
                got.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        read.seen.extend(got)  # type: ignore[attr-defined]
        return [e for e in read.seen if detail_type in (None, e["detail-type"])]  # type: ignore[attr-defined]

    read.seen = []  # type: ignore[attr-defined]
    try:
        yield read
    finally:
        events.remove_targets(Rule=name, EventBusName=bus, Ids=["q"])
        events.delete_rule(Name=name, EventBusName=bus)
        sqs.delete_queue(QueueUrl=url)


# -- delivery and MX choice: RFC 5321 §5.1 -------------------------------------------------


def test_a_submitted_message_reaches_the_remote_mx(user, function_transport, pump, zone, relay_env, mail_events, local_stack):
    # GIVEN a remote domain whose MX is the server on 127.0.0.21 (it offers STARTTLS)
    domain = remote(zone, (10, SINKS[0]))
    rcpt = f"friend@{domain}"
    # WHEN a user submits a message to it, and the queue runs
    result = send(function_transport, user, [rcpt])
    assert pump.run() == 1
    # THEN the MX received it once, from our host name, over TLS (RFC 7435 opportunistic)
    (got,) = relay_env.received(rcpt)
    assert (got.sender, got.recipients) == (user, [rcpt])
    assert got.helo == local_stack.environment["MAIL_HOSTNAME"]
    assert got.tls
    assert f"Message-ID: {result['message_id']}".encode() in got.data
    assert any(o.startswith("SIZE=") for o in got.mail_options)  # RFC 1870
    # AND MessageSent is on the bus
    (sent,) = mail_events("MessageSent")
    assert sent["detail"]["recipients"] == [rcpt] and sent["detail"]["message_id"] == result["message_id"]
    assert sent["detail"]["server"] == f"mx0.{domain}[{SINKS[0]}]" and sent["detail"]["tls"] is True


def test_the_most_preferred_mx_gets_the_mail(user, function_transport, pump, zone, relay_env):
    domain = remote(zone, (20, SINKS[1]), (10, SINKS[0]))
    send(function_transport, user, [f"a@{domain}"])
    pump.run()
    assert [len(relay_env.sinks[s].to(f"a@{domain}")) for s in SINKS] == [1, 0]


def test_the_next_mx_is_tried_when_one_refuses_or_is_busy(user, function_transport, pump, zone, relay_env):
    # GIVEN the best MX refuses connections and the next greets with 421 (RFC 5321 §3.1)
    domain = remote(zone, (10, REFUSING), (20, BUSY), (30, SINKS[1]))
    busy_before = relay_env.busy.connections
    send(function_transport, user, [f"a@{domain}"])
    pump.run()
    # THEN the third, plain-text one got it
    (got,) = relay_env.sinks[SINKS[1]].to(f"a@{domain}")
    assert not got.tls
    assert relay_env.busy.connections == busy_before + 1


def test_a_domain_without_mx_gets_mail_at_its_address(user, function_transport, pump, zone, relay_env):
    domain = remote(zone, a=SINKS[1])  # RFC 5321 §5.1 implicit MX
    send(function_transport, user, [f"a@{domain}"])
    pump.run()
    assert len(relay_env.sinks[SINKS[1]].to(f"a@{domain}")) == 1


@pytest.fixture
def scripted(relay_env) -> Iterator[ScriptedServer]:
    server = ScriptedServer(SCRIPTED, relay_env.port)
    yield server
    server.stop()


def test_a_failed_tls_handshake_falls_back_to_plain_text_rfc7435(user, function_transport, pump, zone, scripted):
    # GIVEN an MX that offers STARTTLS and then botches the handshake
    domain = remote(zone, (10, SCRIPTED))
    send(function_transport, user, [f"a@{domain}", f"b@{domain}"])
    pump.run()
    # THEN the relay tried TLS, then delivered on a new plain-text connection (no STARTTLS)
    first, second = scripted.commands
    assert first == ["EHLO", "STARTTLS"]
    assert "STARTTLS" not in second and second[:4] == ["EHLO", "MAIL", "RCPT", "RCPT"]
    (data,) = scripted.messages
    assert b"Subject: Hello" in data
    # AND MAIL and both RCPTs came in one write (RFC 2920 §3.1 PIPELINING)
    assert any(c.count(b"\r\n") == 3 and c.startswith(b"MAIL FROM:") for c in scripted.chunks)


# -- failures: bounces (RFC 3464) and retries ------------------------------------------------


def test_a_5xx_recipient_bounces_with_an_rfc3464_report(store, user, function_transport, pump, zone, relay_env, mail_events):
    # GIVEN a remote MX that knows one of two recipients
    domain = remote(zone, (10, SINKS[1]))
    good, bad = f"good@{domain}", f"bad@{domain}"
    relay_env.sinks[SINKS[1]].rcpt_replies[bad] = "550 5.1.1 <bad>: Recipient address rejected: User unknown"
    result = send(function_transport, user, [good, bad], orcpt=["", f"rfc822;Bad@{domain}"], envid="ENV-1")
    # WHEN the queue runs
    pump.run()
    # THEN the good one got it, and the sender has a report on the bad one in its INBOX
    assert [m.recipients for m in relay_env.sinks[SINKS[1]].to(good)] == [[good]]
    (report,) = reports(store, user)
    assert report.get_param("report-type") == "delivery-status"
    assert report["To"] == f"<{user}>"
    human, status, headers = report.get_payload()
    assert bad in human.get_payload() and good not in human.get_payload()
    per_message, block = status.get_payload()
    assert per_message["Reporting-MTA"].startswith("dns;")
    assert per_message["Original-Envelope-Id"] == "ENV-1"
    assert block["Original-Recipient"] == f"rfc822;Bad@{domain}"
    assert block["Final-Recipient"] == f"rfc822;{bad}"
    assert (block["Action"], block["Status"]) == ("failed", "5.1.1")
    assert block["Remote-MTA"] == f"dns;mx0.{domain}"
    assert block["Diagnostic-Code"] == "smtp;550 5.1.1 <bad>: Recipient address rejected: User unknown"
    assert headers.get_content_type() == "text/rfc822-headers"
    assert f"Message-ID: {result['message_id']}" in headers.get_payload()
    assert BODY.decode()[:20] not in headers.get_payload()
    # AND the report arrived with the null reverse-path (RFC 3464 §2), as MessageBounced says
    (raw,) = [m for m in inbox(store, user) if b"multipart/report" in m]
    assert raw.startswith(b"Return-Path: <>\r\n")
    (bounced,) = mail_events("MessageBounced")
    assert bounced["detail"]["statuses"] == {bad: "5.1.1"} and bounced["detail"]["report"] is True
    assert [e["detail"]["recipients"] for e in mail_events("MessageSent")] == [[good]]


def test_a_null_mx_bounces_at_once(store, user, function_transport, pump, zone):
    domain = f"r{secrets.token_hex(5)}.test"
    zone.add(domain, "MX", "0 .")  # RFC 7505
    send(function_transport, user, [f"a@{domain}"])
    pump.run()
    (report,) = reports(store, user)
    block = report.get_payload()[1].get_payload()[1]
    assert (block["Action"], block["Status"]) == ("failed", "5.1.10")
    assert "null MX" in block["Diagnostic-Code"]


def test_a_domain_that_does_not_exist_bounces(store, user, function_transport, pump):
    send(function_transport, user, [f"a@nx-{secrets.token_hex(4)}.test"])
    pump.run()
    (report,) = reports(store, user)
    assert report.get_payload()[1].get_payload()[1]["Status"] == "5.1.2"


def test_a_4xx_is_retried_and_then_delivered(store, user, function_transport, pump, zone, relay_env, mail_events):
    # GIVEN an MX that answers the first DATA with 451
    domain = remote(zone, (10, SINKS[1]))
    relay_env.sinks[SINKS[1]].data_replies.append("451 4.3.0 Please try again later")
    send(function_transport, user, [f"a@{domain}"])
    # WHEN the queue runs (the retry is due at once here: RELAY_RETRY_MIN_SECONDS=0)
    assert pump.run() == 2
    # THEN the second attempt delivered it, and nobody got a report
    assert len(relay_env.sinks[SINKS[1]].to(f"a@{domain}")) == 1
    assert reports(store, user) == []
    (delayed,) = mail_events("DeliveryDelayed")
    assert delayed["detail"]["status"] == "4.3.0" and delayed["detail"]["attempts"] == 1
    (sent,) = mail_events("MessageSent")
    assert sent["detail"]["attempts"] == 2


def test_a_dns_failure_is_retried(user, function_transport, pump, zone, relay_env, mail_events):
    domain = remote(zone, (10, SINKS[1]))
    zone.fail(domain)  # SERVFAIL
    send(function_transport, user, [f"a@{domain}"])
    pump.deliver(pump.receive())
    (delayed,) = mail_events("DeliveryDelayed")
    assert delayed["detail"]["status"] == "4.4.3"
    zone.heal(domain)
    pump.run()
    assert len(relay_env.sinks[SINKS[1]].to(f"a@{domain}")) == 1


def test_retries_end_with_a_report_after_the_lifetime(store, user, function_transport, pump, zone, relay_env, monkeypatch):
    # GIVEN a lifetime that is over at the first temporary failure
    monkeypatch.setenv("RELAY_LIFETIME_SECONDS", "0")
    domain = remote(zone, (10, REFUSING))
    send(function_transport, user, [f"a@{domain}"])
    assert pump.run() == 1  # no retry
    (report,) = reports(store, user)
    block = report.get_payload()[1].get_payload()[1]
    assert (block["Action"], block["Status"]) == ("failed", "4.4.7")  # RFC 3463 X.4.7 delivery time expired
    assert "Connection refused" in block["Diagnostic-Code"]


def test_no_report_on_a_report(store, user, function_transport, pump, zone, mail_events):
    # RFC 3464 §2: a message with the null reverse-path never causes a report
    domain = f"r{secrets.token_hex(5)}.test"
    zone.add(domain, "MX", "0 .")
    send(function_transport, user, [f"a@{domain}"], sender="")
    pump.run()
    assert reports(store, user) == []
    (bounced,) = mail_events("MessageBounced")
    assert bounced["detail"]["report"] is False


def test_notify_success_past_a_server_without_dsn_gets_a_relayed_report(store, user, function_transport, pump, zone, relay_env, mail_events):
    # GIVEN a recipient whose NOTIFY asks for SUCCESS, at a server that does not offer DSN
    domain = remote(zone, (10, SINKS[1]))
    rcpt = f"a@{domain}"
    send(function_transport, user, [rcpt, f"b@{domain}"], notify=["SUCCESS,FAILURE", ""])
    # WHEN it is relayed
    pump.run()
    # THEN the sender is told it was relayed, for that recipient only (RFC 3461 §6.2.2.2)
    assert len(relay_env.sinks[SINKS[1]].to(rcpt)) == 1
    (report,) = reports(store, user)
    assert report["Subject"] == "Successful Mail Delivery Report"
    human, status, headers = report.get_payload()
    assert rcpt in human.get_payload() and "does not report delivery" in human.get_payload()
    (block,) = status.get_payload()[1:]
    assert (block["Final-Recipient"], block["Action"], block["Status"]) == (f"rfc822;{rcpt}", "relayed", "2.0.0")
    assert block["Remote-MTA"] == f"dns;mx0.{domain}"
    assert headers["Content-Description"] == "Delivered Message Headers"
    assert mail_events("MessageBounced") == []


def test_notify_success_at_a_server_with_dsn_is_left_to_it(store, user, function_transport, pump, zone, relay_env):
    # GIVEN a server that offers DSN (RFC 3461 §4)
    server = ScriptedServer(SCRIPTED, relay_env.port, break_tls=False, extensions=("PIPELINING", "DSN", "8BITMIME"))
    try:
        domain = remote(zone, (10, SCRIPTED))
        send(function_transport, user, [f"a@{domain}"], notify=["SUCCESS"])
        pump.run()
        # THEN the request went along with the recipient, and the report is that server's to send
        assert len(server.messages) == 1
        assert b"NOTIFY=SUCCESS" in b"".join(server.chunks)
        assert reports(store, user) == []
    finally:
        server.stop()


@pytest.mark.parametrize(("notify", "warned"), [("", True), ("DELAY", True), ("FAILURE", False)])
def test_a_message_deferred_past_the_warning_time_gets_one_delayed_report(relay, zone, notify, warned):
    # GIVEN a message that has waited two hours, its server still refusing, and the
    # warning due after one
    relay.settings = replace(relay.settings, relay_delay_warning=3600, relay_lifetime=5 * 24 * 3600)
    domain = remote(zone, (10, REFUSING))
    first = int(time.time()) - 7200
    waiting = record(domain=domain, recipients=[f"a@{domain}"], notify=[notify], first_attempt=first, attempts=3)
    # WHEN it is tried again
    relay.process(waiting, None, time.monotonic() + 60, [])
    # THEN it goes back on the queue, marked as warned
    again = [r for r, _ in relay.queue.sqs.sent if r.sender]
    assert [(r.hop, r.warned) for r in again] == [(1, True)]
    # AND, as NOTIFY asks (absent: FAILURE,DELAY), the sender (not ours: through the
    # queue, with the null reverse-path) gets a "delayed" report with its Will-Retry-Until
    notices = [r for r, _ in relay.queue.sqs.sent if not r.sender]
    assert len(notices) == (1 if warned else 0)
    if warned:
        (notice,) = notices
        assert notice.recipients == [waiting.sender]
        report = email.message_from_bytes(decode_inline(notice.message), policy=email.policy.compat32)
        assert report["Subject"] == "Delayed Mail (still being retried)"
        block = report.get_payload()[1].get_payload()[1]
        assert (block["Action"], block["Status"]) == ("delayed", "4.4.1")
        assert email.utils.parsedate_to_datetime(block["Will-Retry-Until"]).timestamp() == first + 5 * 24 * 3600
    # AND the next attempt, still deferred, tells nobody again
    relay.queue.sqs.sent.clear()
    relay.process(again[0], None, time.monotonic() + 60, [])
    assert [r.warned for r, _ in relay.queue.sqs.sent] == [True]


def test_notify_success_at_final_delivery_reports_delivered_to_the_remote_sender(store, user, gateway, pump, zone, relay_env):
    # GIVEN a sender elsewhere, whose MX is the server on 127.0.0.22
    domain = remote(zone, (10, SINKS[1]))
    sender = f"alice@{domain}"
    # WHEN it delivers to our user over port 25, asking for SUCCESS (RFC 3461 §4.1)
    with smtplib.SMTP(*gateway.listening["smtp"], timeout=30) as client:
        client.ehlo("mx.sender.example")
        client.sendmail(sender, [user], message(sender, user), rcpt_options=["NOTIFY=SUCCESS", f"ORCPT=rfc822;{user}"])
    # AND the queue runs
    pump.run()
    # THEN the sender's MX gets a "delivered" report, with the null reverse-path (RFC 3464 §2)
    (got,) = relay_env.sinks[SINKS[1]].to(sender)
    assert got.sender == "<>"  # aiosmtpd keeps the null path as written
    report = email.message_from_bytes(got.data, policy=email.policy.compat32)
    assert report["Subject"] == "Successful Mail Delivery Report"
    block = report.get_payload()[1].get_payload()[1]
    assert (block["Final-Recipient"], block["Action"], block["Status"]) == (f"rfc822;{user}", "delivered", "2.0.0")
    assert block["Original-Recipient"] == f"rfc822;{user}"
    # AND the message itself is in the INBOX, with no report there
    assert len(inbox(store, user)) == 1 and reports(store, user) == []


def test_notify_success_between_our_users_reports_once_into_the_sender_inbox(store, domain, user, function_transport):
    # GIVEN two more users of ours, one asking for SUCCESS, one not
    bob, carol = new_user(store, domain), new_user(store, domain)
    raw = message(user, f"{bob}, {carol}")
    request = Submit(user=user, sender=user, recipients=[bob, carol], message=base64.b64encode(raw).decode(),
                     notify=["SUCCESS", ""], dedup_key="k-" + secrets.token_hex(4))
    # WHEN the submission runs twice (the gateway's first call timed out after it had delivered)
    for _ in range(2):
        assert function_transport.invoke("SubmitFunction", request.to_event())["ok"]
    # THEN both have the message once, and the sender one report on bob only (RFC 3461 §6.2.2.1)
    assert len(inbox(store, bob)) == 1 and len(inbox(store, carol)) == 1
    (report,) = reports(store, user)
    (block,) = report.get_payload()[1].get_payload()[1:]
    assert (block["Final-Recipient"], block["Action"]) == (f"rfc822;{bob}", "delivered")


def test_notify_success_to_an_alias_of_several_users_reports_expanded(store, domain, user, function_transport):
    # RFC 3464 §2.3.3: delivered, and passed on to several addresses beyond it
    team = f"team-{secrets.token_hex(3)}@{domain}"
    store.accounts.add_alias(team, [new_user(store, domain), new_user(store, domain)])
    raw = message(user, team)
    request = Submit(user=user, sender=user, recipients=[team], message=base64.b64encode(raw).decode(), notify=["SUCCESS"])
    assert function_transport.invoke("SubmitFunction", request.to_event())["ok"]
    (report,) = reports(store, user)
    block = report.get_payload()[1].get_payload()[1]
    assert (block["Final-Recipient"], block["Action"], block["Status"]) == (f"rfc822;{team}", "expanded", "2.0.0")


def test_notify_never_means_no_report(store, user, function_transport, pump, zone):
    domain = f"r{secrets.token_hex(5)}.test"
    zone.add(domain, "MX", "0 .")
    send(function_transport, user, [f"a@{domain}"], notify=["NEVER"])  # RFC 3461 §4.1
    pump.run()
    assert reports(store, user) == []


# -- idempotency: DESIGN.md contract 3 --------------------------------------------------


def test_a_redelivered_record_does_not_send_twice(user, function_transport, pump, zone, relay_env):
    domain = remote(zone, (10, SINKS[1]))
    send(function_transport, user, [f"a@{domain}"])
    messages = pump.receive()
    assert len(messages) == 1
    # WHEN SQS hands the same record out twice (say, the first invocation's delete was lost)
    pump.deliver(messages)
    with count_requests() as counter:
        again = pump.invoke(sqs_event(messages, pump.arn))
    # THEN the second time costs one read of the markers and sends nothing
    assert again == {"batchItemFailures": []}
    assert counter.snapshot() == {"dynamodb.BatchGetItem": 1}
    assert len(relay_env.sinks[SINKS[1]].to(f"a@{domain}")) == 1


@contextmanager
def hooked_marker_writes(relay_service, hook) -> Iterator[None]:
    """``hook(pk)`` before each PutItem of the RelayFunction's DynamoDB client."""

    def before(params, **_):
        hook(params["Item"]["pk"]["S"])

    events = relay_service.clients.dynamodb.meta.events
    events.register("provide-client-params.dynamodb.PutItem", before)
    try:
        yield
    finally:
        events.unregister("provide-client-params.dynamodb.PutItem", before)


def three_records(user, function_transport, pump, zone) -> tuple[list[str], list[dict], dict[str, tuple[str, str]]]:
    """Three messages to one recipient each, taken off the queue as one batch: the
    recipients, the SQS messages, and by recipient the SQS messageId and marker pk."""
    domain = remote(zone, (10, SINKS[1]))
    rcpts = [f"r{i}@{domain}" for i in range(3)]
    for rcpt in rcpts:
        send(function_transport, user, [rcpt])
    messages = pump.receive()
    assert len(messages) == 3
    parsed = {m["MessageId"]: parse_request(json.loads(m["Body"]), RELAY_REQUESTS) for m in messages}
    return rcpts, messages, {r.recipients[0]: (message_id, f"RELAY#{r.id}") for message_id, r in parsed.items()}


def test_the_next_record_is_sent_while_a_marker_is_written(user, function_transport, pump, zone, relay_env, relay_service):
    # GIVEN three records of one batch, and the first one's DONE marker held back until the
    # MX has all three (at most 10 s)
    rcpts, messages, ids = three_records(user, function_transport, pump, zone)
    first_pk = ids[rcpts[0]][1]
    sink = relay_env.sinks[SINKS[1]]
    seen_while_held: list[int] = []

    def hold_first(pk: str) -> None:
        if pk == first_pk:
            deadline = time.monotonic() + 10
            while len(sink.messages) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            seen_while_held.append(len(sink.messages))

    # WHEN the relay gets them
    with hooked_marker_writes(relay_service, hold_first), count_requests() as counter:
        result = pump.deliver(messages)
    # THEN the other two were sent while the first marker waited (the relay did not wait for it)
    assert seen_while_held == [3]
    # AND the batch was answered only once every marker was written: a redelivery sends nothing
    assert result == {"batchItemFailures": []}
    assert counter.snapshot()["dynamodb.PutItem"] == 3
    assert pump.invoke(sqs_event(messages, pump.arn)) == {"batchItemFailures": []}
    assert len(sink.messages) == 3


def test_a_record_whose_marker_is_not_written_is_reported_failed(user, function_transport, pump, zone, relay_env, relay_service):
    # GIVEN three records of one batch, and DynamoDB refusing the second one's marker
    rcpts, messages, ids = three_records(user, function_transport, pump, zone)
    failing_id, failing_pk = ids[rcpts[1]]

    def refuse(pk: str) -> None:
        if pk == failing_pk:
            raise ConnectionError("marker write lost")

    # WHEN the relay gets them
    with hooked_marker_writes(relay_service, refuse):
        result = pump.invoke(sqs_event(messages, pump.arn))
    # THEN all three were sent, and only the one without a marker goes back to the queue
    assert result == {"batchItemFailures": [{"itemIdentifier": failing_id}]}
    assert len(relay_env.sinks[SINKS[1]].messages) == 3
    # AND when SQS gives all three again, the two with markers are not sent again; the one
    # without is (at least once: a duplicate rather than a loss, RFC 5321 §6.1)
    assert pump.invoke(sqs_event(messages, pump.arn)) == {"batchItemFailures": []}
    assert sorted(r for m in relay_env.sinks[SINKS[1]].messages for r in m.recipients) == sorted([*rcpts, rcpts[1]])


def test_a_retried_submission_is_sent_once(store, user, function_transport, pump, zone, relay_env):
    domain = remote(zone, (10, SINKS[1]))
    raw = message(user, "x")
    request = Submit(user=user, sender=user, recipients=[f"a@{domain}"], message=base64.b64encode(raw).decode(), dedup_key="k-" + secrets.token_hex(4))
    for _ in range(2):  # the gateway's first call timed out after the function had queued
        assert function_transport.invoke("SubmitFunction", request.to_event())["ok"]
    pump.run()
    assert len(relay_env.sinks[SINKS[1]].to(f"a@{domain}")) == 1


# -- DKIM: RFC 6376 --------------------------------------------------------------------------


def txt_lookup(server: DnsServer):
    """A dkimpy ``dnsfunc`` that asks the test DNS server, as a verifier asks DNS."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = [server.host], server.port
        try:
            answer = resolver.resolve(name.decode(), "TXT")
        except dns.resolver.NXDOMAIN:
            return None
        return b"".join(answer[0].strings)

    return lookup


def test_outbound_mail_is_dkim_signed_with_the_published_key(store, domain, user, function_transport, pump, zone, dns_server, relay_env, capsys):
    # GIVEN `mailctl dkim create` made a key for the sender's domain, and its record is published
    assert mailctl(["dkim", "create", domain, "--selector", "s2026"]) == 0
    line = capsys.readouterr().out.strip()
    name, _, rdata = line.partition(" 3600 IN TXT ")
    assert name == f"s2026._domainkey.{domain}."
    zone.add(name, "TXT", rdata.strip("() "))
    target = remote(zone, (10, SINKS[1]))
    # WHEN the user sends a message
    send(function_transport, user, [f"a@{target}"])
    pump.run()
    # THEN the receiver verifies its signature with the key it finds in DNS (RFC 6376 §6)
    (got,) = relay_env.sinks[SINKS[1]].to(f"a@{target}")
    assert got.data.startswith(b"DKIM-Signature: ")
    signature = email.message_from_bytes(got.data)["DKIM-Signature"].replace(" ", "").replace("\r\n", "")
    assert f"d={domain};" in signature and "s=s2026;" in signature and "a=rsa-sha256;" in signature
    assert dkimpy.verify(got.data, dnsfunc=txt_lookup(dns_server))
    # AND a message changed on the way fails it
    assert not dkimpy.verify(got.data.replace(b"Subject: Hello", b"Subject: Hellp"), dnsfunc=txt_lookup(dns_server))
    # AND the CLI shows the record again, and keeps the key unless told to replace it
    assert mailctl(["dkim", "show", domain]) == 0
    assert capsys.readouterr().out.strip() == line
    assert mailctl(["dkim", "create", domain]) == 1
    assert "has a DKIM key" in capsys.readouterr().err


def test_dkim_keys_only_for_served_domains(capsys):
    assert mailctl(["dkim", "create", f"elsewhere-{secrets.token_hex(3)}.test"]) == 1
    assert "no domain" in capsys.readouterr().err


def test_a_domain_without_a_key_sends_unsigned(user, function_transport, pump, zone, relay_env):
    target = remote(zone, (10, SINKS[1]))
    send(function_transport, user, [f"a@{target}"])
    pump.run()
    (got,) = relay_env.sinks[SINKS[1]].to(f"a@{target}")
    assert b"DKIM-Signature" not in got.data


# -- what it costs: DESIGN.md contract 4 ----------------------------------------------------------


def test_submitting_and_relaying_a_message_costs_five_requests(store, domain, user, function_transport, pump, zone, relay_env):
    target = remote(zone, (10, SINKS[1]))
    # GIVEN the relay knows (from an earlier message) whether the sender's domain has a DKIM
    # key, and the submit function that the target domain is not ours
    send(function_transport, user, [f"warm@{target}"])
    pump.run()
    # AND a staged 4 KB message to one remote recipient
    raw = message(user, f"a@{target}")
    assert 3900 < len(raw) < 4300
    key = f"staging/cost-{secrets.token_hex(6)}"
    store.blobs.s3.put_object(Bucket=store.blobs.bucket, Key=key, Body=raw)
    # WHEN it is submitted and relayed
    with count_requests() as submitting:
        result = function_transport.invoke(
            "SubmitFunction", Submit(user=user, sender=user, recipients=[f"a@{target}"], staging_key=key).to_event()
        )
    with count_requests() as relaying:
        assert pump.run() == 1
    # THEN five AWS requests in all
    assert result["ok"]
    assert submitting.snapshot() == {"s3.GetObject": 1, "sqs.SendMessage": 1}
    assert relaying.snapshot() == {"dynamodb.BatchGetItem": 1, "dynamodb.PutItem": 1, "eventbridge.PutEvents": 1}
    assert len(relay_env.sinks[SINKS[1]].to(f"a@{target}")) == 1


def test_a_batch_of_ten_shares_the_marker_read_and_the_events(user, function_transport, pump, zone, relay_env):
    target = remote(zone, (10, SINKS[1]))
    for i in range(10):
        send(function_transport, user, [f"r{i}@{target}"])
    messages = pump.receive()
    assert len(messages) == 10
    with count_requests() as counter:
        result = pump.deliver(messages)
    assert result == {"batchItemFailures": []}
    # the sender domain's DKIM key (here: that it has none) is read once, for all ten
    assert counter.snapshot() == {
        "dynamodb.BatchGetItem": 1,
        "dynamodb.PutItem": 10,
        "eventbridge.PutEvents": 1,
        "ssm.GetParameter": 1,
    }
    assert len(relay_env.sinks[SINKS[1]].messages) == 10


def test_a_batch_goes_to_one_server_over_one_connection_rfc5321_3_3(user, function_transport, pump, zone, scripted):
    # GIVEN six messages to three domains whose MX hosts are one server
    domains = [remote(zone, (10, SCRIPTED)) for _ in range(3)]
    for i in range(6):
        send(function_transport, user, [f"r{i}@{domains[i % 3]}"])
    messages = pump.receive()
    assert len(messages) == 6
    # WHEN the relay gets them as one batch
    with count_requests() as counter:
        assert pump.deliver(messages) == {"batchItemFailures": []}
    # THEN the server got all six in one session: after the botched STARTTLS (RFC 7435 §3,
    # a plain-text connection), one EHLO, six transactions, one QUIT
    assert len(scripted.messages) == 6
    botched, commands = scripted.commands
    assert botched == ["EHLO", "STARTTLS"]
    assert commands.count("EHLO") == 1 and commands.count("MAIL") == 6 and commands[-1] == "QUIT"
    # AND each record still has its own marker, written once it is sent (DESIGN.md contract 3)
    assert counter.snapshot()["dynamodb.PutItem"] == 6


def test_a_large_message_is_read_from_s3_and_its_blob_released(store, user, pump, zone, relay_env):
    # GIVEN a message above the inline limit: the queue holds a reference on its blob
    target = remote(zone, (10, SINKS[1]))
    small = replace(store, settings=replace(store.settings, outbound_inline_limit=1024))
    result = submit(small, Submit(user=user, sender=user, recipients=[f"a@{target}"], message=base64.b64encode(message(user, "x")).decode()))
    # WHEN it is relayed
    with count_requests() as counter:
        pump.run()
    # THEN the relay read it from S3, and let go of the reference: the blob is gone
    assert counter.snapshot()["s3.GetObject"] == 1
    assert len(relay_env.sinks[SINKS[1]].to(f"a@{target}")) == 1
    with pytest.raises(store.blobs.s3.exceptions.NoSuchKey):
        store.blobs.get(result["sha256"])


# -- the schedule ---------------------------------------------------------------------------


class CapturingSqs:
    """Stands in for SQS under OutboundQueue: keeps what was sent, and its delay."""

    def __init__(self) -> None:
        self.sent: list[tuple[RelayRecord, int]] = []

    def send_message(self, QueueUrl: str, MessageBody: str, DelaySeconds: int) -> dict:
        record = parse_request(json.loads(MessageBody), RELAY_REQUESTS)
        self.sent.append((record, DelaySeconds))
        return {}


@pytest.fixture
def relay(local_stack, relay_env) -> Relay:
    built = Relay.build(Clients(), Settings.from_env())
    built.queue = OutboundQueue(CapturingSqs(), "captured")
    return built


def record(**fields) -> RelayRecord:
    raw = b"Subject: x\r\n\r\nx\r\n"
    base = {"id": secrets.token_hex(8), "domain": "x.test", "sender": "a@b.test", "recipients": ["r@x.test"],
            "sha256": "0" * 64, "size": len(raw), "message": encode_inline(raw), "first_attempt": int(time.time())}
    return RelayRecord(**{**base, **fields})


def test_a_record_not_yet_due_waits_on_the_queue_in_15_minute_hops(relay):
    # SQS delays a message 15 minutes at most; a wait of an hour is four hops.
    now = time.time()
    waiting = record(not_before=int(now) + 3600, attempts=3, hop=5)
    relay.process(waiting, None, time.monotonic() + 60, [])
    ((again, delay),) = relay.queue.sqs.sent
    assert delay == 900
    assert again == replace(waiting, hop=6)  # same attempts, same not_before
    # and the hop is done: a redelivery of it does nothing
    key = (f"RELAY#{waiting.id}", "HOP#5")
    assert relay.markers([waiting])[key]["state"] == "done"


def test_a_temporary_failure_is_retried_after_a_backoff(relay, zone):
    relay.settings = replace(relay.settings, relay_retry_min=300, relay_retry_max=3600)
    domain = remote(zone, (10, REFUSING))
    failing = record(domain=domain, recipients=[f"a@{domain}"], attempts=2, hop=2)
    events: list = []
    relay.process(failing, None, time.monotonic() + 60, events)
    ((again, delay),) = relay.queue.sqs.sent
    assert (again.attempts, again.hop, delay) == (3, 3, 900)
    assert again.not_before - time.time() == pytest.approx(1200, abs=5)  # 300 * 2**2
    assert [e[0] for e in events] == ["DeliveryDelayed"]


@pytest.mark.parametrize(
    ("attempts", "wait"),
    [(1, 300), (2, 600), (3, 1200), (5, 4800), (6, 9600), (7, 14400), (20, 14400)],
)
def test_backoff_doubles_up_to_its_limit(attempts, wait):
    assert backoff(attempts, 300, 14400) == wait


def test_a_user_removed_meanwhile_gets_no_report_and_nothing_breaks(store, domain, function_transport, pump, zone):
    sender = new_user(store, domain)
    target = f"r{secrets.token_hex(5)}.test"
    zone.add(target, "MX", "0 .")
    send(function_transport, sender, [f"a@{target}"])
    store.remove_user(sender)
    assert pump.run() == 1
    assert pump.receive() == []
