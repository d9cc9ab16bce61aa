"""Message bytes in S3, content-addressed by SHA-256, written once, counted by reference.

S3 layout: ``staging/<id>`` holds bytes as the gateway received them (expired by a
lifecycle rule); ``blobs/<sha256>`` holds each distinct message once. The reference
count lives in ``MailboxesTable`` as ``pk=BLOB#<sha256>, sk=REF, refs=<n>`` and is
raised in the same transaction that indexes a message, so a count never runs ahead of
or behind the index. When it falls to zero the item and then the object are deleted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from mailcore import dynamo

BLOB_PREFIX = "blobs/"
STAGING_PREFIX = "staging/"


def blob_key(sha256: str) -> str:
    return f"{BLOB_PREFIX}{sha256}"


def ref_key(sha256: str) -> dict[str, str]:
    return {"pk": f"BLOB#{sha256}", "sk": "REF"}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class BlobStore:
    s3: Any
    bucket: str
    dynamodb: Any
    refs_table: str

    def put(self, data: bytes) -> str:
        """Store ``data`` under its hash (idempotent: same bytes, same key). One PutObject."""
        digest = sha256_hex(data)
        self.s3.put_object(Bucket=self.bucket, Key=blob_key(digest), Body=data, ContentType="message/rfc822")
        return digest

    def get(self, sha256: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=blob_key(sha256))["Body"].read())

    def read_staging(self, key: str) -> bytes:
        if not key.startswith(STAGING_PREFIX) or ".." in key:
            raise ValueError("not a staging key")
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def add_refs_action(self, sha256: str, count: int) -> dict[str, Any]:
        """The transaction action that adds ``count`` references to a blob."""
        return {
            "Update": {
                "TableName": self.refs_table,
                "Key": dynamo.serialize(ref_key(sha256)),
                "UpdateExpression": "ADD refs :n",
                "ExpressionAttributeValues": dynamo.values(n=count),
            }
        }

    def release(self, sha256: str, count: int = 1) -> bool:
        """Drop ``count`` references; delete the bytes when none is left. True if deleted.

        Known limit: a delivery of the very same bytes racing with the last release can
        lose them (its PutObject lands before our DeleteObject). The window is one
        round trip; closing it needs a delete-marker protocol.
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
        try:
            self.dynamodb.delete_item(
                TableName=self.refs_table,
                Key=dynamo.serialize(ref_key(sha256)),
                ConditionExpression="refs <= :z",
                ExpressionAttributeValues=dynamo.values(z=0),
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False  # a delivery took a new reference meanwhile
        self.s3.delete_object(Bucket=self.bucket, Key=blob_key(sha256))
        return True
