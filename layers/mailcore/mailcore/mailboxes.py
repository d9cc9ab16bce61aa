"""The mailbox index: each user's mailboxes and their IMAP state.

Key design of ``MailboxesTable`` (``pk``, ``sk``, strings; TTL on ``expires_at``):

| item | pk | sk | attributes |
|---|---|---|---|
| mailbox | ``USER#<address>`` | ``MBOX#<name>`` | ``mailbox_id``, ``uidvalidity``, ``uidnext``, ``highestmodseq``, ``messages``, ``unseen``, ``special_use``, ``subscribed`` |
| user counters | ``USER#<address>`` | ``META`` | ``uidvalidity`` (last one handed out) |
| delivery marker | ``DELIVERY#<mailbox_id>`` | ``<dedup key>`` | ``uid``, ``expires_at`` |
| blob references | ``BLOB#<sha256>`` | ``REF`` | ``refs`` (see blobstore) |

A mailbox's messages live in ``MessagesTable`` under its ``mailbox_id``, which never
changes, so RENAME moves one item and keeps every UID (RFC 3501 §6.3.5). DELETE and a
re-CREATE of the same name get a new ``mailbox_id`` and a larger UIDVALIDITY
(RFC 3501 §2.3.1.1). UIDs and MODSEQs are handed out by an atomic ``ADD`` on the
mailbox item, so concurrent deliveries never share a UID.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from mailcore import dynamo
from mailcore.errors import AlreadyExists, InvalidInput, NotFound

INBOX = "INBOX"
#: RFC 3501 §5.1.1 hierarchy delimiter.
DELIMITER = "/"
#: Created with every user; RFC 6154 §2 special-use attributes.
DEFAULT_MAILBOXES: dict[str, str | None] = {
    INBOX: None,
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}
MAX_NAME_OCTETS = 512
MAX_DEPTH = 16


def user_pk(user: str) -> str:
    return f"USER#{user}"


def mailbox_key(user: str, name: str) -> dict[str, str]:
    return {"pk": user_pk(user), "sk": f"MBOX#{name}"}


def normalize_name(name: str) -> str:
    """RFC 3501 §5.1: INBOX is case-insensitive; other names are case-sensitive."""
    name = name.rstrip(DELIMITER)
    head, sep, rest = name.partition(DELIMITER)
    if head.upper() == INBOX:
        name = INBOX + sep + rest
    levels = name.split(DELIMITER)
    if (
        not name
        or len(name.encode()) > MAX_NAME_OCTETS
        or len(levels) > MAX_DEPTH
        or any(not level for level in levels)
        or any(c in name for c in "*%")  # RFC 3501 §6.3.8: list wildcards
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)
    ):
        raise InvalidInput(f"invalid mailbox name {name!r}")
    return name


def ancestors(name: str) -> list[str]:
    """``a/b/c`` -> ``["a", "a/b"]``."""
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:i]) for i in range(1, len(levels))]


@dataclass
class Mailbox:
    user: str
    name: str
    mailbox_id: str
    uidvalidity: int
    uidnext: int = 1
    highestmodseq: int = 1
    messages: int = 0
    unseen: int = 0
    special_use: str | None = None
    subscribed: bool = True
    #: RFC 3501 §2.3.2: the first UID no session has seen as \\Recent (a read-write
    #: SELECT moves it to UIDNEXT); kept across RENAME.
    recent_uid: int = 1

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Mailbox:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in item.items() if k in fields})

    def to_item(self) -> dict[str, Any]:
        return {**mailbox_key(self.user, self.name), **asdict(self)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unchanged(mailbox: Mailbox) -> dict[str, Any]:
    """A condition that holds while no UID or MODSEQ was handed out since ``mailbox`` was read."""
    return {
        "ConditionExpression": "mailbox_id = :id AND highestmodseq = :m AND uidnext = :u",
        "ExpressionAttributeValues": dynamo.values(id=mailbox.mailbox_id, m=mailbox.highestmodseq, u=mailbox.uidnext),
    }


@dataclass
class Allocation:
    """UIDs and a MODSEQ handed out for one operation on a mailbox."""

    mailbox: Mailbox
    first_uid: int
    modseq: int


@dataclass
class MailboxIndex:
    dynamodb: Any
    table: str

    def _next_uidvalidities(self, user: str, count: int) -> list[int]:
        # Starts near the clock so a re-created user never reuses old values.
        reply = self.dynamodb.update_item(
            TableName=self.table,
            Key=dynamo.serialize({"pk": user_pk(user), "sk": "META"}),
            UpdateExpression="SET uidvalidity = if_not_exists(uidvalidity, :base) + :n",
            ExpressionAttributeValues=dynamo.values(base=int(time.time()), n=count),
            ReturnValues="UPDATED_NEW",
        )
        last = int(dynamo.deserialize(reply["Attributes"])["uidvalidity"])
        return list(range(last - count + 1, last + 1))

    def _put_new(self, mailboxes: list[Mailbox]) -> None:
        actions = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": dynamo.serialize(m.to_item()),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
            for m in mailboxes
        ]
        try:
            dynamo.transact(self.dynamodb, actions)
        except self.dynamodb.exceptions.TransactionCanceledException:
            raise AlreadyExists("mailbox exists") from None

    def _new(self, user: str, specs: dict[str, str | None]) -> list[Mailbox]:
        validities = self._next_uidvalidities(user, len(specs))
        return [
            Mailbox(user, name, uuid.uuid4().hex, uv, special_use=special)
            for (name, special), uv in zip(specs.items(), validities)
        ]

    def create_defaults(self, user: str) -> list[Mailbox]:
        """INBOX and the special-use mailboxes: two requests."""
        created = self._new(user, DEFAULT_MAILBOXES)
        self._put_new(created)
        return created

    def create(self, user: str, name: str, special_use: str | None = None) -> Mailbox:
        """RFC 3501 §6.3.3: superior names are created too where missing."""
        name = normalize_name(name)
        parents = ancestors(name)
        existing = (
            {m["sk"] for m in dynamo.batch_get(self.dynamodb, self.table, [mailbox_key(user, p) for p in parents])}
            if parents
            else set()
        )
        specs: dict[str, str | None] = {p: None for p in parents if mailbox_key(user, p)["sk"] not in existing}
        specs[name] = special_use
        created = self._new(user, specs)
        self._put_new(created)
        return created[-1]

    def get(self, user: str, name: str) -> Mailbox:
        name = normalize_name(name)
        reply = self.dynamodb.get_item(
            TableName=self.table, Key=dynamo.serialize(mailbox_key(user, name)), ConsistentRead=True
        )
        if "Item" not in reply:
            raise NotFound(f"no mailbox {name}")
        return Mailbox.from_item(dynamo.deserialize(reply["Item"]))

    def list_all(self, user: str) -> list[Mailbox]:
        """All of a user's mailboxes: one Query per page."""
        items = dynamo.query(
            self.dynamodb,
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
            ExpressionAttributeValues=dynamo.values(pk=user_pk(user), p="MBOX#"),
            ConsistentRead=True,
        )
        return [Mailbox.from_item(i) for i in items]

    def remove(self, user: str, name: str, *, including_inbox: bool = False) -> Mailbox:
        """Delete the mailbox item (its messages are purged by the caller). INBOX stays
        unless the whole user goes."""
        name = normalize_name(name)
        if name == INBOX and not including_inbox:
            raise InvalidInput("INBOX cannot be deleted")  # RFC 3501 §6.3.4
        try:
            reply = self.dynamodb.delete_item(
                TableName=self.table,
                Key=dynamo.serialize(mailbox_key(user, name)),
                ConditionExpression="attribute_exists(pk)",
                ReturnValues="ALL_OLD",
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            raise NotFound(f"no mailbox {name}") from None
        return Mailbox.from_item(dynamo.deserialize(reply["Attributes"]))

    def rename(self, user: str, old: str, new: str) -> Mailbox:
        """RFC 3501 §6.3.5: inferiors move along; renaming INBOX moves its messages to a
        new mailbox and leaves an empty INBOX behind."""
        old, new = normalize_name(old), normalize_name(new)
        if new in (INBOX, old) or new.startswith(old + DELIMITER):
            raise InvalidInput(f"cannot rename {old} to {new}")
        mailboxes = {m.name: m for m in self.list_all(user)}
        if old not in mailboxes:
            raise NotFound(f"no mailbox {old}")
        if new in mailboxes:
            raise AlreadyExists(f"mailbox {new} exists")
        source = mailboxes[old]
        if old == INBOX:
            moves = [(source, new)]
            fresh = self._new(user, {INBOX: None})[0]
        else:
            fresh = None
            moves = [
                (m, new + m.name[len(old) :])
                for m in mailboxes.values()
                if m.name == old or m.name.startswith(old + DELIMITER)
            ]
        missing_parents: dict[str, str | None] = {p: None for p in ancestors(new) if p not in mailboxes}
        actions: list[dict[str, Any]] = []
        for mailbox, target in moves:
            moved = Mailbox(**{**mailbox.to_dict(), "name": target})
            actions.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": dynamo.serialize(moved.to_item()),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
            if fresh is None:
                actions.append(
                    {
                        "Delete": {
                            "TableName": self.table,
                            "Key": dynamo.serialize(mailbox_key(user, mailbox.name)),
                            **_unchanged(mailbox),
                        }
                    }
                )
        if fresh is not None:
            actions.append(
                {"Put": {"TableName": self.table, "Item": dynamo.serialize(fresh.to_item()), **_unchanged(source)}}
            )
        if missing_parents:
            for parent in self._new(user, missing_parents):
                actions.append(
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": dynamo.serialize(parent.to_item()),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    }
                )
        try:
            dynamo.transact(self.dynamodb, actions)
        except self.dynamodb.exceptions.TransactionCanceledException:
            raise AlreadyExists(f"mailbox {new} changed or exists") from None
        return Mailbox(**{**source.to_dict(), "name": new})

    def subscribe(self, user: str, name: str, subscribed: bool) -> None:
        name = normalize_name(name)
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key=dynamo.serialize(mailbox_key(user, name)),
                UpdateExpression="SET subscribed = :s",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=dynamo.values(s=subscribed),
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            raise NotFound(f"no mailbox {name}") from None

    def allocate(self, user: str, name: str, uids: int, modseqs: int = 1) -> Allocation:
        """Atomically take ``uids`` UIDs and one MODSEQ: one UpdateItem (RFC 3501 §2.3.1.1,
        RFC 7162 §3.1.1: strictly ascending, never reused)."""
        name = normalize_name(name)
        try:
            reply = self.dynamodb.update_item(
                TableName=self.table,
                Key=dynamo.serialize(mailbox_key(user, name)),
                UpdateExpression="ADD uidnext :u, highestmodseq :m",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=dynamo.values(u=uids, m=modseqs),
                ReturnValues="ALL_NEW",
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            raise NotFound(f"no mailbox {name}") from None
        mailbox = Mailbox.from_item(dynamo.deserialize(reply["Attributes"]))
        return Allocation(mailbox, mailbox.uidnext - uids, mailbox.highestmodseq)

    def counts_action(self, mailbox: Mailbox, messages: int, unseen: int) -> dict[str, Any]:
        """The transaction action that moves a mailbox's counts, if it is still the same mailbox."""
        return {
            "Update": {
                "TableName": self.table,
                "Key": dynamo.serialize(mailbox_key(mailbox.user, mailbox.name)),
                "UpdateExpression": "ADD messages :n, unseen :u",
                "ConditionExpression": "mailbox_id = :id",
                "ExpressionAttributeValues": dynamo.values(n=messages, u=unseen, id=mailbox.mailbox_id),
            }
        }
