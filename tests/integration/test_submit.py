"""The submit operation (RFC 6409) through the real SubmitFunction on the emulated AWS.

What the submission listener will call once per transaction: the sender check, the
completed message, local delivery through the inbound path, one queue record per remote
domain, and what it costs.
"""

from __future__ import annotations

import base64
import email
import json
import secrets
from dataclasses import replace

import boto3
import pytest
from mailcore.accounting import count_requests
from mailcore.contracts import RELAY_REQUESTS, RelayRecord, Submit, parse_request
from mailcore.store import Store
from mailcore.submission import complete, submit

from tests.integration.conftest import new_user

MESSAGE = (
    b"From: Sender <{sender}>\r\n"
    b"To: {to}\r\n"
    b"Subject: Hello\r\n"
    b"\r\n" + b"A line of text, to make it four kilobytes.\r\n" * 93
)


def message(sender: str, to: str, **extra: str) -> bytes:
    raw = MESSAGE.replace(b"{sender}", sender.encode()).replace(b"{to}", to.encode())
    head = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in extra.items()).encode()
    return head + raw


def stage(store: Store, raw: bytes) -> str:
    key = f"staging/test-{secrets.token_hex(8)}"
    store.blobs.s3.put_object(Bucket=store.blobs.bucket, Key=key, Body=raw)
    return key


def encode(user: str) -> str:
    return base64.b64encode(message(user, "x")).decode()


def remote_domain() -> str:
    return f"remote-{secrets.token_hex(4)}.test"


class Queue:
    """The OutboundQueue, read by the test (records are deleted as they are read)."""

    def __init__(self, url: str) -> None:
        self.sqs = boto3.client("sqs")
        self.url = url

    def take(self, ids: set[str]) -> list[RelayRecord]:
        found: list[RelayRecord] = []
        for _ in range(20):
            reply = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = reply.get("Messages", [])
            for m in messages:
                record = parse_request(json.loads(m["Body"]), RELAY_REQUESTS)
                assert isinstance(record, RelayRecord)
                if record.id in ids:
                    found.append(record)
                    self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
            if not messages or len(found) == len(ids):
                break
        return found


@pytest.fixture
def queue(local_stack) -> Queue:
    return Queue(local_stack.resources["OutboundQueue"])


def invoke(function_transport, request: Submit) -> dict:
    return function_transport.invoke("SubmitFunction", request.to_event())


# -- who may send as whom: RFC 6409 §6.1 ----------------------------------------------------


@pytest.mark.parametrize(
    "sender",
    [
        pytest.param("{user}", id="own-address"),
        pytest.param("{USER}", id="own-address-other-case"),
        pytest.param("{local}+lists@{domain}", id="plus-address"),
        pytest.param("team@{domain}", id="alias-with-the-user-among-targets"),
        pytest.param("team+x@{domain}", id="plus-address-of-alias"),
        pytest.param("", id="null-reverse-path"),
    ],
)
def test_a_user_may_send_as_addresses_it_owns(store, domain, user, function_transport, queue, sender):
    store.accounts.add_alias(f"team@{domain}", [user, new_user(store, domain)])
    local = user.partition("@")[0]
    sender = sender.format(user=user, USER=user.upper(), local=local, domain=domain)
    to = f"friend@{remote_domain()}"
    result = invoke(
        function_transport,
        Submit(user=user, sender=sender, recipients=[to], message=base64.b64encode(message(user, to)).decode()),
    )
    assert result["ok"], result
    assert queue.take({r["id"] for r in result["queued"]})


@pytest.mark.parametrize(
    "sender",
    [
        pytest.param("{other}", id="another-users-address"),
        pytest.param("{other_local}+{local}@{domain}", id="plus-address-of-another-user"),
        pytest.param("others@{domain}", id="alias-without-the-user"),
        pytest.param("{local}@elsewhere.test", id="same-local-part-other-domain"),
        pytest.param("nobody@{domain}", id="unknown-address-of-the-domain"),
    ],
)
def test_a_user_may_not_send_as_anybody_else(store, domain, user, function_transport, queue, sender):
    # GIVEN another user and an alias that does not include our user
    other = new_user(store, domain)
    store.accounts.add_alias(f"others@{domain}", [other])
    local, other_local = user.partition("@")[0], other.partition("@")[0]
    sender = sender.format(other=other, other_local=other_local, local=local, domain=domain)
    to = f"friend@{remote_domain()}"
    key = stage(store, message(sender, to))
    # WHEN the user submits with that envelope sender
    with count_requests() as counter:
        result = invoke(function_transport, Submit(user=user, sender=sender, recipients=[to], staging_key=key))
    # THEN it is refused with NOPERM (the listener's 553 5.7.1), before any byte is read or queued
    assert (result["ok"], result["error"]) == (False, "NOPERM")
    assert counter.snapshot() == {"dynamodb.BatchGetItem": 1}


def test_a_malformed_principal_is_refused(store, domain, user, function_transport):
    result = invoke(
        function_transport, Submit(user="not an address", sender=user, recipients=["x@remote.test"], message="")
    )
    assert (result["ok"], result["error"]) == (False, "CLIENTBUG")


# -- the message: RFC 6409 §8 ---------------------------------------------------------------


def test_date_and_message_id_are_added_when_missing_rfc6409_8():
    raw = b"Return-Path: <forged@x.test>\r\nFrom: a@b.test\r\nSubject: hi\r\n\r\nbody\r\n"
    done = complete(raw, "mail.example.test", dedup_key="k1", now=1_790_000_000)
    parsed = email.message_from_bytes(done.data)
    assert parsed["Date"] == "Mon, 21 Sep 2026 14:13:20 +0000"  # §8.2
    assert parsed["Message-ID"] == done.message_id  # §8.3
    assert done.message_id.endswith("@mail.example.test>")
    assert parsed["Return-Path"] is None  # RFC 5321 §4.4: only final delivery adds it
    assert done.data.endswith(b"Subject: hi\r\nDate: Mon, 21 Sep 2026 14:13:20 +0000\r\n"
                              + f"Message-ID: {done.message_id}\r\n\r\nbody\r\n".encode())
    assert done.added == ("Date", "Message-ID")
    # a retried submission of the same transaction keeps its Message-ID
    assert complete(raw, "mail.example.test", dedup_key="k1").message_id == done.message_id


def test_a_complete_message_is_left_alone():
    raw = b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nmessage-id:\r\n <x@y>\r\n\r\nbody\r\n"
    done = complete(raw, "h")
    assert (done.data, done.message_id, done.added) == (raw, "<x@y>", ())


@pytest.mark.parametrize(
    ("raw", "starts"),
    [
        pytest.param(b"just a body line\r\n", b"Date: ", id="no-header-section"),
        pytest.param(b"Subject: x", b"Subject: x\r\nDate: ", id="no-line-end"),
        pytest.param(b"\r\nbody only\r\n", b"Date: ", id="empty-header-section"),
    ],
)
def test_odd_messages_get_a_header_section(raw, starts):
    done = complete(raw, "h")
    assert done.data.startswith(starts)
    head, _, body = done.data.partition(b"\r\n\r\n")
    assert b"Message-ID: <" in head
    assert raw.strip().endswith(body.strip()) or not body


# -- where the message goes ----------------------------------------------------------------


def test_local_and_remote_recipients(store, domain, user, function_transport, queue):
    # GIVEN a local colleague, and recipients at two remote domains (two at the first)
    colleague = new_user(store, domain)
    first, second = remote_domain(), remote_domain()
    recipients = [f"a@{first}", colleague, f"b@{first}", f"c@{second}"]
    raw = message(user, ", ".join(recipients))
    request = Submit(
        user=user,
        sender=user,
        recipients=recipients,
        staging_key=stage(store, raw),
        dedup_key="d-" + secrets.token_hex(4),
        ret="HDRS",
        envid="E1",
        notify=["FAILURE", "", "NEVER", "SUCCESS,FAILURE"],
        orcpt=["rfc822;A@" + first, "", "", ""],
    )
    # WHEN it is submitted
    result = invoke(function_transport, request)
    assert result["ok"], result
    # THEN the colleague has it in INBOX, with the Return-Path of final delivery (RFC 5321 §4.4)
    (delivery,) = result["delivered"]
    assert (delivery["user"], delivery["mailbox"]) == (colleague, "INBOX")
    inbox = store.mailboxes.get(colleague, "INBOX")
    _, stored = store.messages.read(inbox.mailbox_id, delivery["uid"])
    assert stored.startswith(f"Return-Path: <{user}>\r\n".encode())
    assert f"Message-ID: {result['message_id']}".encode() in stored
    # AND each remote domain has one record with its recipients and their DSN parameters
    records = {r.domain: r for r in queue.take({q["id"] for q in result["queued"]})}
    assert set(records) == {first, second}
    assert records[first].recipients == [f"a@{first}", f"b@{first}"]
    assert records[first].notify == ["FAILURE", "NEVER"]
    assert records[first].orcpt == ["rfc822;A@" + first, ""]
    assert records[second].recipients == [f"c@{second}"]
    for r in records.values():
        assert (r.sender, r.user, r.ret, r.envid, r.hop, r.attempts) == (user, user, "HDRS", "E1", 0, 0)
        assert r.message_id == result["message_id"]
        # the bytes ride inline: what the colleague got, without the Return-Path line
        sent = base64.b64decode(r.message)
        assert b"Return-Path" not in sent and stored.endswith(sent)
        assert r.sha256 == result["sha256"] and r.size == len(sent)


def test_a_domain_taken_on_after_it_was_known_as_remote_is_ours_at_once(store, user, function_transport, queue):
    # GIVEN a domain the submit function has seen as remote (and keeps so: DomainCache)
    later = remote_domain()
    result = invoke(function_transport, Submit(user=user, sender=user, recipients=[f"a@{later}"], message=encode(user)))
    assert [q["domain"] for q in result["queued"]] == [later]
    queue.take({q["id"] for q in result["queued"]})
    # WHEN it becomes one of ours, with a user
    store.accounts.add_domain(later)
    colleague = new_user(store, later)
    # THEN the next message to it is delivered locally, not queued (the account write
    # forgot what was known, as it does the resolutions)
    result = invoke(function_transport, Submit(user=user, sender=user, recipients=[colleague], message=encode(user)))
    assert result["queued"] == [] and [d["user"] for d in result["delivered"]] == [colleague]


def test_a_retried_submission_delivers_once_and_names_its_records_alike(store, domain, user, function_transport, queue):
    colleague = new_user(store, domain)
    to = [colleague, f"x@{remote_domain()}"]
    request = Submit(user=user, sender=user, recipients=to, staging_key=stage(store, message(user, "x")), dedup_key="same")
    first = invoke(function_transport, request)
    second = invoke(function_transport, replace(request, staging_key=stage(store, message(user, "x"))))
    assert first["ok"] and second["ok"]
    assert second["delivered"][0]["duplicate"] and not first["delivered"][0]["duplicate"]
    assert [q["id"] for q in first["queued"]] == [q["id"] for q in second["queued"]]
    assert first["message_id"] == second["message_id"]
    assert len(queue.take({first["queued"][0]["id"]})) == 2  # the relay's marker sends it once


def test_a_large_message_stays_in_s3_with_a_reference_for_the_queue(store, domain, user, queue):
    # GIVEN an inline limit below the message's size
    small = replace(store, settings=replace(store.settings, outbound_inline_limit=1024))
    to = [f"x@{remote_domain()}", f"y@{remote_domain()}"]
    result = submit(small, Submit(user=user, sender=user, recipients=to, message=base64.b64encode(message(user, "x")).decode()))
    # THEN the records name the blob, which is stored once and referenced once per record
    records = queue.take({q["id"] for q in result["queued"]})
    assert {r.message for r in records} == {""}
    assert store.blobs.get(result["sha256"]).startswith(b"From: Sender")
    refs = store.blobs.dynamodb.get_item(
        TableName=store.blobs.refs_table, Key={"pk": {"S": f"BLOB#{result['sha256']}"}, "sk": {"S": "REF"}}
    )
    assert refs["Item"]["refs"] == {"N": "2"}


def test_a_copy_goes_to_sent_when_configured(store, domain, user, queue):
    saving = replace(store, settings=replace(store.settings, save_sent=True))
    raw = message(user, "x")
    result = submit(saving, Submit(user=user, sender=user, recipients=[f"x@{remote_domain()}"], message=base64.b64encode(raw).decode()))
    sent = store.mailboxes.get(user, "Sent")
    (record,) = store.messages.list_range(sent.mailbox_id)
    assert record.uid == result["sent_uid"] and "\\Seen" in record.flags
    queue.take({q["id"] for q in result["queued"]})


def test_submission_costs_three_requests_for_one_remote_recipient(store, domain, user, function_transport, queue):
    # GIVEN a staged 4 KB message to one remote recipient
    to = f"friend@{remote_domain()}"
    raw = message(user, to)
    assert 3900 < len(raw) < 4200
    key = stage(store, raw)
    # WHEN it is submitted
    with count_requests() as counter:
        result = invoke(function_transport, Submit(user=user, sender=user, recipients=[to], staging_key=key))
    # THEN: the staged bytes, the sender and domain check, the queue record
    assert result["ok"], result
    assert counter.snapshot() == {"s3.GetObject": 1, "dynamodb.BatchGetItem": 1, "sqs.SendMessage": 1}
    # AND inline bytes (DESIGN.md contract 1) save the GetObject, and the domain, known
    # now not to be ours, the BatchGetItem (mailcore.submission.DomainCache)
    with count_requests() as counter:
        result = invoke(
            function_transport,
            Submit(user=user, sender=user, recipients=[to], message=base64.b64encode(raw).decode()),
        )
    assert counter.snapshot() == {"sqs.SendMessage": 1}
    queue.take({q["id"] for q in result["queued"]})
