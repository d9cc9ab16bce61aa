"""Blob references against racing releases (mailcore.blobstore): the last release of a
blob and a new writer of the very same bytes, interleaved step by step, never leave a
message naming deleted bytes; and what the protocol costs (DESIGN.md contract 4)."""

from __future__ import annotations

import base64
import secrets
import threading
import time

import pytest
from mailcore import blobstore, dynamo
from mailcore.accounting import count_requests
from mailcore.blobstore import BlobBusy, ref_key
from mailcore.contracts import Deliver
from mailcore.delivery import deliver
from mailcore.messages import NewMessage

from .conftest import new_user

RAW = b"From: a@example.org\r\nTo: b@example.test\r\nSubject: refs\r\n\r\nbody "
#: A plain delivery to one recipient whose resolution is cached (tests/integration/test_message_store.py).
DELIVERY_WRITES = {
    "s3.PutObject": 1,
    "dynamodb.UpdateItem": 1,
    "dynamodb.TransactWriteItems": 1,
    "eventbridge.PutEvents": 1,
}


def unique_body() -> bytes:
    return RAW + secrets.token_hex(8).encode() + b"\r\n"


def ref_item(store, sha: str) -> dict:
    reply = store.blobs.dynamodb.get_item(
        TableName=store.blobs.refs_table, Key=dynamo.serialize(ref_key(sha)), ConsistentRead=True
    )
    return dynamo.deserialize(reply.get("Item", {}))


def index(store, user: str, blob: blobstore.Written, **kwargs) -> int:
    """The writer's second step: the transaction that indexes the message."""
    message = NewMessage(blob.sha256, len(blob.data), {})
    (uid,) = store.messages.append(user, "INBOX", [message], **kwargs)
    return uid


def read(store, user: str, uid: int) -> bytes:
    return store.messages.read(store.mailboxes.get(user, "INBOX").mailbox_id, uid)[1]


def expunge(store, user: str, uid: int) -> list[int]:
    store.messages.store_flags(user, "INBOX", [uid], "+", ["\\Deleted"])
    return store.messages.expunge(user, "INBOX", [uid])


def deliver_inline(store, user: str, body: bytes) -> dict:
    return deliver(store, Deliver("", "a@example.org", [user], message=base64.b64encode(body).decode()))


def put_during_the_last_release(store, monkeypatch, owner: str, body: bytes) -> list[blobstore.Written]:
    """Index ``body`` for ``owner``, then expunge it; a writer of the very same bytes does
    its PutObject just before the release's DeleteObject. What that writer wrote."""
    uid = index(store, owner, store.blobs.write(body), written=[])
    writes: list[blobstore.Written] = []
    real_delete = store.blobs.s3.delete_object

    def put_then_delete(**kwargs):
        writes.append(store.blobs.write(body))
        return real_delete(**kwargs)

    monkeypatch.setattr(store.blobs.s3, "delete_object", put_then_delete)
    assert expunge(store, owner, uid) == [uid]
    monkeypatch.setattr(store.blobs.s3, "delete_object", real_delete)
    assert len(writes) == 1
    return writes


@pytest.fixture
def no_pause(monkeypatch):
    """Fails the test if a writer waits for a running deletion."""
    monkeypatch.setattr(blobstore, "sleep", lambda seconds: pytest.fail(f"waited {seconds}s"))


def test_a_put_before_the_last_release_deletes_is_put_again_and_survives(store, domain, monkeypatch, no_pause):
    bob, alice = new_user(store, domain), new_user(store, domain)
    body = unique_body()
    sha = blobstore.sha256_hex(body)
    # GIVEN bob's expunge has taken the count to zero and is about to delete the object,
    # WHEN alice's delivery of the very same bytes does its PutObject just then
    writes = put_during_the_last_release(store, monkeypatch, bob, body)
    # AND its transaction comes after the release has deleted the bytes
    with count_requests() as counter:
        new_uid = index(store, alice, writes[0], written=writes)
    # THEN it found the tombstone, put the bytes again, and the message is readable
    assert counter.snapshot() == {
        "dynamodb.UpdateItem": 1,
        "dynamodb.TransactWriteItems": 2,
        "dynamodb.GetItem": 1,
        "s3.PutObject": 1,
    }
    assert read(store, alice, new_uid) == body
    item = ref_item(store, sha)
    assert item["refs"] == 1 and item["deletions"] == 1
    assert "deleting" not in item and "expires_at" not in item


def test_a_writer_that_cannot_put_again_fails_temporarily_instead_of_naming_deleted_bytes(store, domain, monkeypatch):
    bob, alice = new_user(store, domain), new_user(store, domain)
    body = unique_body()
    uid = index(store, bob, store.blobs.write(body))
    sha = blobstore.sha256_hex(body)
    real_delete = store.blobs.s3.delete_object

    def put_then_delete(**kwargs):
        store.blobs.put(body)  # a writer that does not hand its bytes to append
        return real_delete(**kwargs)

    monkeypatch.setattr(store.blobs.s3, "delete_object", put_then_delete)
    expunge(store, bob, uid)
    with pytest.raises(BlobBusy):
        index(store, alice, blobstore.Written(sha, body, 0))
    assert store.mailboxes.get(alice, "INBOX").messages == 0
    assert ref_item(store, sha)["refs"] == 0


def test_a_writer_meeting_a_running_deletion_waits_puts_again_and_succeeds(store, domain, monkeypatch):
    bob, alice = new_user(store, domain), new_user(store, domain)
    body = unique_body()
    sha = deliver_inline(store, bob, body)["sha256"]
    # GIVEN a release of bob's last reference that has claimed the deletion and waits
    # before its DeleteObject
    claimed, go = threading.Event(), threading.Event()
    real_delete = store.blobs.s3.delete_object

    def delete_when_told(**kwargs):
        claimed.set()
        assert go.wait(30)
        return real_delete(**kwargs)

    monkeypatch.setattr(store.blobs.s3, "delete_object", delete_when_told)
    released: list[bool] = []
    releaser = threading.Thread(target=lambda: released.append(store.blobs.release(sha)))
    releaser.start()
    assert claimed.wait(30)
    assert ref_item(store, sha)["deleting"] > 0
    # WHEN alice receives the same bytes: her transaction is refused, and while she
    # pauses the release deletes the object (hers too) and ends
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        go.set()
        releaser.join(30)

    monkeypatch.setattr(blobstore, "sleep", pause)
    result = deliver_inline(store, alice, body)
    # THEN she waited once, put the bytes again and indexed them
    assert released == [True] and pauses == [blobstore.SETTLE_PAUSES[0]]
    assert result["deliveries"][0]["uid"] == 1
    assert read(store, alice, 1) == body
    item = ref_item(store, sha)
    assert item["refs"] == 1 and item["deletions"] == 1 and "deleting" not in item


def test_a_deletion_claimed_by_a_function_long_dead_is_taken_over(store, user, no_pause):
    body = unique_body()
    sha = blobstore.sha256_hex(body)
    # GIVEN a release claimed the deletion 21 minutes ago and died (maybe after deleting)
    stale = int(time.time()) - 21 * 60
    store.blobs.dynamodb.put_item(
        TableName=store.blobs.refs_table, Item=dynamo.serialize({**ref_key(sha), "refs": 0, "deleting": stale})
    )
    # WHEN the same bytes are delivered
    result = deliver_inline(store, user, body)
    # THEN the delivery ended the deletion itself, put the bytes again and indexed them
    assert read(store, user, result["deliveries"][0]["uid"]) == body
    item = ref_item(store, sha)
    assert item["refs"] == 1 and item["deletions"] == 1 and "deleting" not in item


def test_a_release_that_leaves_a_reference_never_deletes(store, domain):
    bob, alice = new_user(store, domain), new_user(store, domain)
    body = unique_body()
    sha = deliver(store, Deliver("", "a@example.org", [bob, alice], message=base64.b64encode(body).decode()))["sha256"]
    # WHEN bob releases his reference THEN one UpdateItem, and the bytes stay for alice
    with count_requests() as counter:
        assert store.blobs.release(sha) is False
    assert counter.snapshot() == {"dynamodb.UpdateItem": 1}
    assert store.blobs.get(sha) == body
    assert ref_item(store, sha)["refs"] == 1


def test_a_reference_added_between_the_last_release_and_its_claim_keeps_the_bytes(store, domain, monkeypatch):
    bob, alice = new_user(store, domain), new_user(store, domain)
    body = unique_body()
    uid = index(store, bob, store.blobs.write(body))
    sha = blobstore.sha256_hex(body)
    # GIVEN bob's release has taken the count to zero
    # WHEN alice's delivery indexes the same bytes before the release claims the deletion
    real_update = store.blobs.dynamodb.update_item
    delivered: list[int] = []

    def deliver_then_claim(**kwargs):
        if kwargs.get("UpdateExpression", "").startswith("SET deleting") and not delivered:
            written = store.blobs.write(body)
            delivered.append(index(store, alice, written, written=[written]))
        return real_update(**kwargs)

    monkeypatch.setattr(store.blobs.dynamodb, "update_item", deliver_then_claim)
    expunge(store, bob, uid)
    # THEN the claim was refused: nothing deleted, alice's reference counted
    assert read(store, alice, delivered[0]) == body
    item = ref_item(store, sha)
    assert item["refs"] == 1 and "deleting" not in item and "deletions" not in item


def test_copy_of_a_message_whose_blob_was_released_leaves_it_out_as_a_missing_one(store, user, monkeypatch):
    gone, kept = unique_body(), unique_body()
    index(store, user, store.blobs.write(gone))
    index(store, user, store.blobs.write(kept))
    real_get = store.messages.get

    def read_then_expunge(mailbox_id, uids):
        records = real_get(mailbox_id, uids)
        expunge(store, user, 1)  # another session, between COPY's read and its transaction
        return records

    # WHEN COPY reads messages 1 and 2, and message 1 is expunged (its blob deleted) before
    # COPY indexes the copies
    monkeypatch.setattr(store.messages, "get", read_then_expunge)
    pairs = store.messages.copy(user, "INBOX", [1, 2], "Archive")
    # THEN message 1 is left out, as a UID not found is, and its blob stays released
    (pair,) = pairs
    assert pair[0] == 2
    archive = store.mailboxes.get(user, "Archive")
    assert [r.sha256 for r in store.messages.list_range(archive.mailbox_id)] == [blobstore.sha256_hex(kept)]
    assert archive.messages == 1
    assert ref_item(store, blobstore.sha256_hex(gone))["refs"] == 0
    with pytest.raises(store.blobs.s3.exceptions.NoSuchKey):
        store.blobs.get(blobstore.sha256_hex(gone))
    # AND copying only the released one copies nothing, like copying a UID never there
    monkeypatch.setattr(store.messages, "get", real_get)
    assert store.messages.copy(user, "INBOX", [1], "Archive") == []


def test_the_last_release_leaves_a_tombstone_that_a_later_delivery_revives(store, domain, no_pause):
    bob, alice = new_user(store, domain), new_user(store, domain)
    body = unique_body()
    sha = deliver_inline(store, bob, body)["sha256"]
    # WHEN the last reference is released THEN 3 UpdateItems and 1 DeleteObject
    with count_requests() as counter:
        assert store.blobs.release(sha) is True
    assert counter.snapshot() == {"dynamodb.UpdateItem": 3, "s3.DeleteObject": 1}
    # AND the ref item is a tombstone the table's TTL removes a day later
    item = ref_item(store, sha)
    assert item["refs"] == 0 and item["deletions"] == 1 and "deleting" not in item
    assert item["expires_at"] == item["deleted_at"] + blobstore.TOMBSTONE_SECONDS
    # WHEN the same bytes arrive later (the deletion ended before the delivery's PutObject)
    store.blobs.dynamodb.update_item(
        TableName=store.blobs.refs_table,
        Key=dynamo.serialize(ref_key(sha)),
        UpdateExpression="SET deleted_at = :t",
        ExpressionAttributeValues=dynamo.values(t=item["deleted_at"] - 3600),
    )
    assert store.accounts.resolve(alice).users == [alice]
    with count_requests() as counter:
        deliver_inline(store, alice, body)
    # THEN a plain delivery's requests, and the ref item lives again, without a TTL
    assert counter.snapshot() == DELIVERY_WRITES
    assert read(store, alice, 1) == body
    item = ref_item(store, sha)
    assert item["refs"] == 1 and "expires_at" not in item


def test_a_failed_delete_still_ends_the_deletion(store, user, monkeypatch):
    body = unique_body()
    sha = deliver_inline(store, user, body)["sha256"]

    def timeout(**kwargs):
        raise TimeoutError("no reply from S3")

    monkeypatch.setattr(store.blobs.s3, "delete_object", timeout)
    with pytest.raises(TimeoutError):
        store.blobs.release(sha)
    # the delete may have happened: writers that put the bytes before must put them again
    item = ref_item(store, sha)
    assert "deleting" not in item and item["deletions"] == 1 and item["deleted_at"] >= time.time() - 5


def test_the_outbound_queue_reference_survives_the_race_too(store, domain, monkeypatch, no_pause):
    # GIVEN bob's last reference to some bytes is being released WHEN the submit function
    # puts the very same bytes for the queue just before the DeleteObject, and takes its
    # reference after it
    body = unique_body()
    sha = blobstore.sha256_hex(body)
    writes = put_during_the_last_release(store, monkeypatch, new_user(store, domain), body)
    with count_requests() as counter:
        store.blobs.add_refs(writes[0], 2)
    # THEN the reference waited for nothing, put the bytes again and holds them
    assert counter.snapshot() == {"dynamodb.UpdateItem": 2, "dynamodb.GetItem": 1, "s3.PutObject": 1}
    assert store.blobs.get(sha) == body
    assert ref_item(store, sha)["refs"] == 2
