"""Message bytes: content-addressed, stored once, deleted with the last reference; and
the DESIGN.md contract that each operation costs a known number of AWS requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mailcore.accounting import count_requests
from mailcore.blobstore import blob_key, sha256_hex
from mailcore.contracts import Deliver
from mailcore.delivery import deliver

from .conftest import new_user

ROOT = Path(__file__).resolve().parents[2]
RAW = b"From: a@example.org\r\nTo: b@example.test\r\nSubject: once\r\nMessage-ID: <m1@example.org>\r\n\r\nbody\r\n"


def stage(store, key: str, data: bytes = RAW) -> str:
    store.blobs.s3.put_object(Bucket=store.blobs.bucket, Key=key, Body=data)
    return key


def blob_exists(store, sha: str) -> bool:
    reply = store.blobs.s3.list_objects_v2(Bucket=store.blobs.bucket, Prefix=blob_key(sha))
    return reply.get("KeyCount", 0) > 0


def test_same_bytes_for_two_users_are_stored_once_and_deleted_with_the_last_copy(store, domain):
    # GIVEN two users who receive the same message
    bob, alice = new_user(store, domain), new_user(store, domain)
    unique = RAW + domain.encode()
    result = deliver(store, Deliver(stage(store, f"staging/{domain}-1", unique), "a@example.org", [bob, alice]))
    sha = result["sha256"]
    assert sha == sha256_hex(unique)
    # THEN both index the same blob, which exists once
    records = [store.messages.list_range(store.mailboxes.get(u, "INBOX").mailbox_id)[0] for u in (bob, alice)]
    assert {r.sha256 for r in records} == {sha}
    keys = store.blobs.s3.list_objects_v2(Bucket=store.blobs.bucket, Prefix=blob_key(sha))["KeyCount"]
    assert keys == 1
    assert store.blobs.get(sha) == unique
    # WHEN bob deletes his copy THEN the bytes stay for alice
    store.messages.store_flags(bob, "INBOX", [1], "+", ["\\Deleted"])
    store.messages.expunge(bob, "INBOX")
    assert blob_exists(store, sha)
    # WHEN alice deletes hers too THEN the bytes are gone
    store.messages.store_flags(alice, "INBOX", [1], "+", ["\\Deleted"])
    store.messages.expunge(alice, "INBOX")
    assert not blob_exists(store, sha)


DELIVERY_WRITES = {
    "s3.PutObject": 1,  # the blob
    "dynamodb.UpdateItem": 1,  # the UID
    "dynamodb.TransactWriteItems": 1,  # the index, counts, blob reference, dedup marker
    "eventbridge.PutEvents": 1,  # MessageReceived
}


def test_delivery_cost_and_idempotency(store, domain, user):
    key = stage(store, f"staging/{domain}-2")
    request = Deliver(key, "a@example.org", [user], dedup_key=f"txn-{domain}")
    # WHEN a staged message is delivered to one recipient not resolved before
    with count_requests() as counter:
        first = deliver(store, request)
    # THEN it costs exactly these requests (DESIGN.md contract 4)
    assert counter.snapshot() == {"s3.GetObject": 1, "dynamodb.BatchGetItem": 1, **DELIVERY_WRITES}
    # AND a retry of the same transaction delivers nothing new (contract 3)
    second = deliver(store, request)
    assert first["deliveries"][0]["uid"] == 1
    assert second["deliveries"][0]["duplicate"] is True
    inbox = store.mailboxes.get(user, "INBOX")
    assert inbox.messages == 1


def test_inline_delivery_costs_three_requests_and_the_event(store, domain, user):
    # GIVEN the recipient was resolved at RCPT (the resolution is cached)
    assert store.accounts.resolve(user).users == [user]
    raw = RAW + b"inline\r\n"
    request = Deliver("", "a@example.org", [user], dedup_key=f"inline-{domain}", message=encode(raw))
    # WHEN a small message arrives inline (DESIGN.md contract 1)
    with count_requests() as counter:
        result = deliver(store, request)
    # THEN no staging is read: the blob, the UID and the index, and the event (contract 4)
    assert counter.snapshot() == DELIVERY_WRITES
    assert store.blobs.get(result["sha256"]) == raw
    # AND a retry delivers nothing new (contract 3)
    assert deliver(store, request)["deliveries"][0]["duplicate"] is True
    assert store.mailboxes.get(user, "INBOX").messages == 1


def test_a_retry_after_the_event_failed_publishes_it_again(store, domain, user, monkeypatch):
    # GIVEN a delivery indexed but whose PutEvents failed (the client was told 451)
    events = store.events.events
    real_put_events = events.put_events
    published: list[dict] = []

    def failing(**kwargs):
        raise RuntimeError("EventBridge unavailable")

    monkeypatch.setattr(events, "put_events", failing)
    first = RAW + b"first attempt\r\n"
    with pytest.raises(RuntimeError):
        deliver(store, Deliver("", "a@example.org", [user], dedup_key=f"evt-{domain}", message=encode(first)))
    assert store.mailboxes.get(user, "INBOX").messages == 1

    def recording(**kwargs):
        published.extend(kwargs["Entries"])
        return real_put_events(**kwargs)

    monkeypatch.setattr(events, "put_events", recording)
    # WHEN the client retries (its bytes differ in our trace fields, its dedup key does not)
    retry = RAW + b"second attempt\r\n"
    with count_requests() as counter:
        result = deliver(store, Deliver("", "a@example.org", [user], dedup_key=f"evt-{domain}", message=encode(retry)))
    # THEN nothing is indexed twice, and the event of the first delivery is published
    assert result["deliveries"][0]["duplicate"] is True
    assert store.mailboxes.get(user, "INBOX").messages == 1
    (entry,) = published
    detail = json.loads(entry["Detail"])
    assert entry["DetailType"] == "MessageReceived"
    assert (detail["user"], detail["uid"], detail["sha256"], detail["size"]) == (user, 1, sha256_hex(first), len(first))
    # the retry's own blob dropped (2 UpdateItems, DeleteObject); the marker read (2 GetItems)
    assert counter.counts["dynamodb.GetItem"] == 2 and counter.counts["eventbridge.PutEvents"] == 1


def test_the_messages_listing_comes_in_pages(store, domain, user, monkeypatch):
    from mailcore import mailbox_service
    from mailcore.contracts import ListMessages

    for n in range(5):
        deliver(store, Deliver("", "a@example.org", [user], message=encode(RAW + b"page %d\r\n" % n)))
    monkeypatch.setattr(mailbox_service, "SELECT_PAGE", 2)
    # WHEN the listing is asked page by page, each from the last UID + 1
    uids, first = [], 1
    while True:
        page = mailbox_service.messages(store, ListMessages(user, "INBOX", first=first))
        uids += [m["uid"] for m in page["messages"]]
        if not page["more"]:
            break
        first = uids[-1] + 1
    # THEN every message came once, two at a time (each answer stays inside Lambda's 6 MB)
    assert uids == [1, 2, 3, 4, 5]


def encode(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("staging_key", "message"),
    [
        pytest.param("", "", id="neither-staged-nor-inline"),
        pytest.param("staging/x", encode(RAW), id="both-staged-and-inline"),
        pytest.param("", "not base64!", id="inline-not-base64"),
    ],
)
def test_delivery_refuses_a_request_without_exactly_one_source_of_bytes(store, user, staging_key, message):
    from mailcore.errors import InvalidInput

    with pytest.raises(InvalidInput), count_requests() as counter:
        deliver(store, Deliver(staging_key, "a@example.org", [user], message=message))
    assert counter.total == 0


OPERATION_COSTS = [
    pytest.param("status", lambda s, u: s.mailboxes.get(u, "INBOX"), {"dynamodb.GetItem": 1}, id="STATUS"),
    pytest.param("list", lambda s, u: s.mailboxes.list_all(u), {"dynamodb.Query": 1}, id="LIST"),
    pytest.param(
        "create",
        lambda s, u: s.mailboxes.create(u, "New"),
        {"dynamodb.UpdateItem": 1, "dynamodb.TransactWriteItems": 1},
        id="CREATE",
    ),
    pytest.param(
        "flags",
        lambda s, u: s.messages.list_range(s.mailboxes.get(u, "INBOX").mailbox_id),
        {"dynamodb.GetItem": 1, "dynamodb.Query": 1},
        id="FETCH-FLAGS",
    ),
    pytest.param(
        "store",
        lambda s, u: s.messages.store_flags(u, "INBOX", [1, 2], "+", ["\\Seen"]),
        {"dynamodb.UpdateItem": 4},
        id="STORE-2-messages",
    ),
    pytest.param(
        "fetch",
        lambda s, u: s.messages.get(s.mailboxes.get(u, "INBOX").mailbox_id, [1, 2]),
        {"dynamodb.GetItem": 1, "dynamodb.BatchGetItem": 1},
        id="FETCH-metadata",
    ),
    pytest.param(
        "changes",
        lambda s, u: s.messages.changes(s.mailboxes.get(u, "INBOX"), 0),
        {"dynamodb.GetItem": 1, "dynamodb.Query": 2},
        id="CHANGES",
    ),
    pytest.param(
        "copy",
        lambda s, u: s.messages.copy(u, "INBOX", [1, 2], "Archive"),
        {"dynamodb.GetItem": 1, "dynamodb.BatchGetItem": 1, "dynamodb.UpdateItem": 1, "dynamodb.TransactWriteItems": 1},
        id="COPY-2-messages",
    ),
    pytest.param(
        "expunge",
        lambda s, u: s.messages.remove(u, "INBOX", s.messages.get(s.mailboxes.get(u, "INBOX").mailbox_id, [1])),
        {"dynamodb.GetItem": 1, "dynamodb.BatchGetItem": 1, "dynamodb.UpdateItem": 2, "dynamodb.TransactWriteItems": 1},
        id="EXPUNGE-1-message",
    ),
]


@pytest.mark.parametrize(("name", "operation", "expected"), OPERATION_COSTS)
def test_each_mailbox_operation_has_a_fixed_cost(store, user, name, operation, expected):
    body = RAW + user.encode()
    sha = store.blobs.put(body)
    from mailcore.messages import NewMessage

    store.messages.append(user, "INBOX", [NewMessage(sha, len(body), {}), NewMessage(sha, len(body), {})])
    with count_requests() as counter:
        operation(store, user)
    assert counter.snapshot() == expected
    assert not any(op.endswith(".Scan") for op in counter.snapshot())


def test_fetch_flags_of_a_large_mailbox_is_a_few_paged_queries(store, user):
    """Message items leave the MIME metadata to items of their own: 1,500 messages with
    real metadata (over 1 MB together) list in one page of summaries."""
    from mailcore.messages import NewMessage
    from mailcore.mime import analyze

    meta = analyze((ROOT / "events" / "sample-message.eml").read_bytes()).to_item()
    sha = store.blobs.put(RAW)
    store.messages.append(user, "INBOX", [NewMessage(sha, len(RAW), meta) for _ in range(1500)])
    inbox = store.mailboxes.get(user, "INBOX")
    with count_requests() as counter:
        records = store.messages.list_range(inbox.mailbox_id)
    assert [r.uid for r in records] == list(range(1, 1501))
    assert records[0].sha256 == sha and records[0].size == len(RAW)
    assert counter.snapshot() == {"dynamodb.Query": 1}


def test_no_code_path_scans():
    """DESIGN.md contract 4: nothing a client can trigger scans a table."""
    sources = [
        *ROOT.glob("layers/mailcore/mailcore/*.py"),
        *ROOT.glob("functions/*/app.py"),
        *ROOT.glob("gateway/**/*.py"),
    ]
    assert sources
    offenders = [str(p) for p in sources if ".scan(" in p.read_text() or "Scan(" in p.read_text()]
    assert offenders == []
