"""Message bytes in S3, content-addressed by SHA-256, written once, counted by reference.

S3 layout: ``staging/<id>`` holds bytes as the gateway received them (expired by a
lifecycle rule); ``blobs/<sha256>`` holds each distinct message once. The reference
count lives in ``MailboxesTable`` as ``pk=BLOB#<sha256>, sk=REF, refs=<n>`` and is
raised in the same transaction that indexes a message, so a count never runs ahead of
or behind the index.

Deleting bytes that another writer may be putting again. A writer of the same bytes
does PutObject and then its transaction; a releaser that takes the count to zero does
DeleteObject. Were the ref item simply deleted, a writer's PutObject could land before
the releaser's DeleteObject and its transaction after it, and a live message would name
deleted bytes. So the ref item is never deleted by a releaser; it carries the deletion:

- ``deleting`` (epoch s): a releaser is deleting the object. Set only while
  ``refs <= 0`` and no other deletion runs; no reference can be added meanwhile. It
  drops an older tombstone's ``expires_at``: TTL must not remove a claim writers must see.
- ``deleted_at`` (epoch s, taken after DeleteObject returned) and ``deletions`` (how many
  deletions ended): the tombstone, with ``expires_at`` (the table's TTL) a day later.
  Every ``ADD refs`` of a writer drops ``expires_at``: a referenced item never expires.

A releaser: ``ADD refs -n``; if any is left, done (1 UpdateItem). Else it claims the
deletion (``SET deleting``, if ``refs <= 0`` and none runs), deletes the object and
ends the deletion (``SET deleted_at, expires_at, refs = 0, ADD deletions 1 REMOVE
deleting`` if its claim still stands): 3 UpdateItems and 1 DeleteObject. It ends the
deletion even when DeleteObject raised: a timeout may hide a delete that happened, so
the bytes count as gone (at worst an unreferenced object stays behind). ``refs = 0``
forgets an over-release, as deleting the item used to.

A writer notes ``put_at`` (its clock, :data:`PUT_MARGIN` early for skew) BEFORE its
PutObject and adds references only if no deletion runs and none ended after ``put_at``
(:func:`written_since`): any DeleteObject that could have removed its bytes either still
runs or has ended after the writer's PutObject began. On that condition failing, it
waits out a running deletion (:meth:`BlobStore.settle`), puts the bytes again and
retries on the condition that no deletion runs and ``deletions`` is still the value it
read before that second put (:func:`rewritten`). A counter, not ``deleted_at``: two
deletions may end within the same second, and only the counter tells them apart.
A claim older than :data:`STALE_SECONDS` outlived any Lambda: a writer ends it as a
releaser would (the object may be gone) and goes on. After a few rounds a writer gives up
with :class:`BlobBusy`. The race costs the writer 1 GetItem, 1 PutObject and its
transaction again; a writer that does not lose it pays nothing more.

Adding references without writing bytes (COPY) requires ``refs > 0``
(:func:`referenced`): a blob released to zero meanwhile stays released.
"""

from __future__ import annotations

import hashlib
from contextlib import suppress
from dataclasses import dataclass
from time import sleep, time
from typing import Any

from mailcore import dynamo

BLOB_PREFIX = "blobs/"
STAGING_PREFIX = "staging/"
#: How much earlier than its clock a writer dates its PutObject: more than the clock
#: skew between any two functions (NTP keeps Lambda's to milliseconds).
PUT_MARGIN = 60
#: A deletion claimed this long ago outlived its Lambda (15 minutes at most).
STALE_SECONDS = 20 * 60
#: How long a tombstone outlives the deletion (``expires_at``, the table's TTL).
TOMBSTONE_SECONDS = 24 * 3600
#: Pauses between reads while another function deletes a blob (a DeleteObject and an
#: UpdateItem take tens of milliseconds).
SETTLE_PAUSES = (0.1, 0.2, 0.3)
#: Rounds of put-and-reference a writer tries before it gives up with :class:`BlobBusy`.
REF_ROUNDS = 3


class BlobBusy(Exception):
    """The blob is being deleted while we write it: a temporary failure, not a user error,
    so the function fails and the client retries (SMTP 451, IMAP NO [UNAVAILABLE])."""


def blob_key(sha256: str) -> str:
    return f"{BLOB_PREFIX}{sha256}"


def ref_key(sha256: str) -> dict[str, str]:
    return {"pk": f"BLOB#{sha256}", "sk": "REF"}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Written:
    """Bytes a writer has put, and when (``put_at``: its clock minus the margin, read before)."""

    sha256: str
    data: bytes
    put_at: int


@dataclass(frozen=True)
class RefCondition:
    """The condition under which a transaction may add references to a blob."""

    expression: str
    values: dict[str, Any]


def written_since(put_at: int) -> RefCondition:
    """The writer began its PutObject after ``put_at``: no deletion runs or ended since."""
    return RefCondition(
        "attribute_not_exists(deleting) AND (attribute_not_exists(deleted_at) OR deleted_at < :put_at)",
        {"put_at": put_at},
    )


def rewritten(deletions: int) -> RefCondition:
    """The writer put the bytes again after reading ``deletions`` and no running deletion."""
    if not deletions:
        return RefCondition("attribute_not_exists(deleting) AND attribute_not_exists(deletions)", {})
    return RefCondition("attribute_not_exists(deleting) AND deletions = :seen", {"seen": deletions})


def referenced() -> RefCondition:
    """No bytes written: the blob must still have references (COPY)."""
    return RefCondition("refs > :zero AND attribute_not_exists(deleting)", {"zero": 0})


@dataclass
class BlobStore:
    s3: Any
    bucket: str
    dynamodb: Any
    refs_table: str

    def put(self, data: bytes) -> str:
        """Store ``data`` under its hash (idempotent: same bytes, same key). One PutObject."""
        return self.write(data).sha256

    def write(self, data: bytes) -> Written:
        """:meth:`put`, dated for :func:`written_since`. One PutObject."""
        put_at = int(time()) - PUT_MARGIN
        digest = sha256_hex(data)
        self.s3.put_object(Bucket=self.bucket, Key=blob_key(digest), Body=data, ContentType="message/rfc822")
        return Written(digest, data, put_at)

    def get(self, sha256: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=blob_key(sha256))["Body"].read())

    def read_staging(self, key: str) -> bytes:
        if not key.startswith(STAGING_PREFIX) or ".." in key:
            raise ValueError("not a staging key")
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def add_refs_action(self, sha256: str, count: int, condition: RefCondition | None = None) -> dict[str, Any]:
        """The transaction action that adds ``count`` references to a blob, if ``condition``
        holds (by default: the caller put the bytes just now, within :data:`PUT_MARGIN`)."""
        condition = condition or written_since(int(time()) - PUT_MARGIN)
        return {
            "Update": {
                "TableName": self.refs_table,
                "Key": dynamo.serialize(ref_key(sha256)),
                "UpdateExpression": "ADD refs :n REMOVE expires_at",
                "ConditionExpression": condition.expression,
                "ExpressionAttributeValues": dynamo.values(n=count, **condition.values),
            }
        }

    def release(self, sha256: str, count: int = 1) -> bool:
        """Drop ``count`` references; delete the bytes when none is left. True if deleted.

        Cost: 1 UpdateItem while references are left; the last release 3 UpdateItems and
        1 DeleteObject (module docstring).
        """
        reply = self.dynamodb.update_item(
            TableName=self.refs_table,
            Key=dynamo.serialize(ref_key(sha256)),
            UpdateExpression="ADD refs :n",
            ExpressionAttributeValues=dynamo.values(n=-count),
            ReturnValues="UPDATED_NEW",
        )
        if dynamo.deserialize(reply["Attributes"])["refs"] > 0:
            return False
        return self.delete_unreferenced(sha256)

    def delete_unreferenced(self, sha256: str) -> bool:
        """Delete the bytes if nothing references them: 2 UpdateItems and 1 DeleteObject,
        or 1 UpdateItem when they are referenced or another deletion runs. True if deleted."""
        claim = int(time())
        try:
            self.dynamodb.update_item(
                TableName=self.refs_table,
                Key=dynamo.serialize(ref_key(sha256)),
                # No TTL while the deletion runs: a stale claim must stay for a writer to see.
                UpdateExpression="SET deleting = :claim REMOVE expires_at",
                ConditionExpression="(attribute_not_exists(refs) OR refs <= :zero) AND attribute_not_exists(deleting)",
                ExpressionAttributeValues=dynamo.values(claim=claim, zero=0),
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False  # a writer added a reference, or another releaser deletes it
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=blob_key(sha256))
        finally:
            self._end_deletion(sha256, claim)
        return True

    def _end_deletion(self, sha256: str, claim: int) -> None:
        """Turn the claim ``claim`` into a tombstone: the bytes count as deleted now."""
        now = int(time())
        # Refused: a writer found the claim stale and ended it (it counted the deletion).
        with suppress(self.dynamodb.exceptions.ConditionalCheckFailedException):
            self.dynamodb.update_item(
                TableName=self.refs_table,
                Key=dynamo.serialize(ref_key(sha256)),
                UpdateExpression=(
                    "SET deleted_at = :now, expires_at = :expires, refs = :zero ADD deletions :one REMOVE deleting"
                ),
                ConditionExpression="deleting = :claim",
                ExpressionAttributeValues=dynamo.values(
                    now=now, expires=now + TOMBSTONE_SECONDS, zero=0, one=1, claim=claim
                ),
            )

    def add_refs(self, written: Written, count: int) -> None:
        """References held outside a message transaction (the outbound queue's), under the
        writer's condition: one UpdateItem; a writer that loses the race to a deletion
        waits it out, puts the bytes again and retries (:data:`REF_ROUNDS` in all)."""
        condition = written_since(written.put_at)
        for _ in range(REF_ROUNDS):
            try:
                self.dynamodb.update_item(**self.add_refs_action(written.sha256, count, condition)["Update"])
                return
            except self.dynamodb.exceptions.ConditionalCheckFailedException:
                condition = rewritten(self.settle(written.sha256))
                self.put(written.data)
        raise BlobBusy(f"blob {written.sha256} deleted again and again while referenced")

    def settle(self, sha256: str) -> int:
        """Wait until no deletion of the blob runs (ending a stale one); the number of
        deletions that ended. For a writer whose reference was refused: it puts the bytes
        again and retries on :func:`rewritten`. 1 GetItem, more while a deletion runs;
        raises :class:`BlobBusy` if it still runs after :data:`SETTLE_PAUSES`."""
        pauses = list(SETTLE_PAUSES)
        while True:
            reply = self.dynamodb.get_item(
                TableName=self.refs_table, Key=dynamo.serialize(ref_key(sha256)), ConsistentRead=True
            )
            item = dynamo.deserialize(reply.get("Item", {}))
            claim = item.get("deleting")
            if claim is None:
                return int(item.get("deletions", 0))
            if claim < time() - STALE_SECONDS:
                self._end_deletion(sha256, int(claim))
            elif pauses:
                sleep(pauses.pop(0))
            else:
                raise BlobBusy(f"blob {sha256} is being deleted")
