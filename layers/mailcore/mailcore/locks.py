"""Leases on a user's maildrop: the exclusive-access lock of RFC 1939 §4.

A lease is one item in ``MailboxesTable``:

| item | pk | sk | attributes |
|---|---|---|---|
| maildrop lease | ``USER#<address>`` | ``LOCK#<kind>`` (``LOCK#pop3``) | ``owner``, ``expires_at`` (epoch s, the table's TTL attribute) |

Taking or renewing a lease is one conditional PutItem that succeeds when no lease
exists, when the existing one has expired, or when the caller already owns it; so a
gateway that died holds nothing once ``expires_at`` has passed (DynamoDB's TTL deletes the
item later; the condition does not wait for that). Releasing is one conditional DeleteItem
that only the owner's call can make.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from mailcore import dynamo
from mailcore.errors import InUse, InvalidInput
from mailcore.mailboxes import user_pk

#: The lease POP3 sessions take on their maildrop (the user's INBOX).
POP3 = "pop3"
#: Bounds on a lease's length: long enough to survive a missed renewal, short enough that
#: a crashed gateway's sessions do not lock users out for long.
MIN_SECONDS = 1
MAX_SECONDS = 3600
MAX_OWNER = 200


def lock_key(user: str, kind: str = POP3) -> dict[str, str]:
    return {"pk": user_pk(user), "sk": f"LOCK#{kind}"}


@dataclass(frozen=True)
class Lease:
    user: str
    owner: str
    expires_at: int


@dataclass
class MaildropLocks:
    dynamodb: Any
    table: str

    def acquire(self, user: str, owner: str, seconds: int, kind: str = POP3, now: int | None = None) -> Lease:
        """Take or renew the lease for ``seconds``: one conditional PutItem. Raises
        :class:`InUse` while another owner holds an unexpired lease."""
        if not owner or len(owner) > MAX_OWNER:
            raise InvalidInput("bad lease owner")
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise InvalidInput(f"a lease lasts {MIN_SECONDS} to {MAX_SECONDS} seconds")
        now = int(time.time()) if now is None else now
        lease = Lease(user, owner, now + seconds)
        try:
            self.dynamodb.put_item(
                TableName=self.table,
                Item=dynamo.serialize({**lock_key(user, kind), "owner": owner, "expires_at": lease.expires_at}),
                ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now OR #owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues=dynamo.values(now=now, owner=owner),
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            raise InUse("the maildrop is in use by another session") from None
        return lease

    def release(self, user: str, owner: str, kind: str = POP3) -> bool:
        """Drop the lease if ``owner`` holds it: one conditional DeleteItem. True if dropped."""
        try:
            self.dynamodb.delete_item(
                TableName=self.table,
                Key=dynamo.serialize(lock_key(user, kind)),
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues=dynamo.values(owner=owner),
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return False  # expired and taken over, or never held: nothing of ours to drop
        return True
