"""The message index: one item per message per mailbox, with flags and MODSEQ.

Key design of ``MessagesTable`` (``pk`` string, ``uid`` number):

| item | pk | uid | attributes |
|---|---|---|---|
| message | ``<mailbox_id>`` | UID | ``sha256``, ``size``, ``internaldate`` (epoch s), ``flags`` (string set), ``modseq`` |
| its MIME metadata | ``<mailbox_id>/meta`` | UID | ``meta`` (JSON: envelope, bodystructure, sections) |
| expunge tombstone | ``<mailbox_id>/expunged`` | UID | ``modseq`` |

The local secondary index ``by-modseq`` (``pk``, ``modseq``) answers "what changed since
MODSEQ n" (RFC 7162 CONDSTORE; tombstones give QRESYNC's VANISHED) with one Query per
page, so sessions learn of new mail, flag changes and expunges without reading the
whole mailbox. Every list is a paged Query; nothing scans. The metadata, written once in
the same transaction as its message, lives apart so that a message item stays near
100 bytes: listing 10,000 messages' flags reads about 1 MB, not 8.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailcore import dynamo
from mailcore.blobstore import (
    PUT_MARGIN,
    REF_ROUNDS,
    BlobBusy,
    BlobStore,
    RefCondition,
    Written,
    referenced,
    rewritten,
    written_since,
)
from mailcore.errors import InvalidInput, NotFound
from mailcore.mailboxes import Allocation, Mailbox, MailboxIndex, mailbox_key

SEEN = "\\Seen"
DELETED = "\\Deleted"
#: RFC 3501 §2.3.2 system flags a client may set (\Recent is the server's, per session).
SYSTEM_FLAGS = {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"}
#: Characters RFC 3501 §9 forbids in an atom (a keyword is an atom).
_ATOM_SPECIALS = set('(){ %*"\\]') | {chr(c) for c in range(0x20)} | {"\x7f"}
MAX_FLAGS = 64
#: Each transaction holds at most 100 actions: 32 messages (2 items each), counts, refs, dedup.
_MESSAGES_PER_TRANSACTION = 32
#: How long a delivery marker protects against a retried delivery.
DEDUP_SECONDS = 7 * 24 * 3600
#: Attributes worth reading for FLAGS-only fetches.
SUMMARY_FIELDS = ("uid", "flags", "modseq", "size", "internaldate", "sha256")


def tombstone_pk(mailbox_id: str) -> str:
    return f"{mailbox_id}/expunged"


def meta_pk(mailbox_id: str) -> str:
    return f"{mailbox_id}/meta"


def validate_flags(flags: list[str]) -> list[str]:
    if len(flags) > MAX_FLAGS:
        raise InvalidInput("too many flags")
    for flag in flags:
        if flag.startswith("\\"):
            if flag.capitalize() not in {f.capitalize() for f in SYSTEM_FLAGS}:
                raise InvalidInput(f"unknown system flag {flag}")
        elif not flag or any(c in _ATOM_SPECIALS for c in flag):
            raise InvalidInput(f"invalid keyword {flag!r}")
    # System flags are case-insensitive (RFC 3501 §2.3.2); store them canonically.
    canon = {f.lower(): f for f in SYSTEM_FLAGS}
    return sorted({canon.get(f.lower(), f) for f in flags})


@dataclass(frozen=True)
class Delivered:
    """What a delivery's marker remembers of the message it indexed."""

    uid: int
    sha256: str
    size: int


@dataclass
class NewMessage:
    """A message to index: its bytes are already in the blob store under ``sha256``."""

    sha256: str
    size: int
    meta: dict[str, Any]
    flags: list[str] = field(default_factory=list)
    internaldate: int = 0


@dataclass
class MessageRecord:
    uid: int
    flags: list[str]
    modseq: int
    size: int = 0
    internaldate: int = 0
    sha256: str = ""
    meta: dict[str, Any] | None = None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> MessageRecord:
        meta = item.get("meta")
        return cls(
            uid=int(item["uid"]),
            flags=list(item.get("flags", [])),
            modseq=int(item.get("modseq", 0)),
            size=int(item.get("size", 0)),
            internaldate=int(item.get("internaldate", 0)),
            sha256=item.get("sha256", ""),
            meta=json.loads(meta) if isinstance(meta, str) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _with_meta(items: list[dict[str, Any]], mailbox_id: str) -> list[MessageRecord]:
    """Message items joined with their metadata items (read together), in UID order."""
    metas = {int(i["uid"]): i["meta"] for i in items if i["pk"] == meta_pk(mailbox_id)}
    records = [MessageRecord.from_item({**i, "meta": metas.get(int(i["uid"]))}) for i in items if i["pk"] == mailbox_id]
    return sorted(records, key=lambda r: r.uid)


@dataclass
class Changes:
    """What changed in a mailbox after a MODSEQ (RFC 7162 §3.1.4 / §3.2.5)."""

    highestmodseq: int
    changed: list[MessageRecord]
    expunged: list[int]


@dataclass
class MessageIndex:
    dynamodb: Any
    table: str
    mailboxes: MailboxIndex
    blobs: BlobStore

    # -- writing ----------------------------------------------------------------

    def append(
        self,
        user: str,
        name: str,
        messages: list[NewMessage],
        dedup_key: str | None = None,
        written: Sequence[Written] = (),
    ) -> list[int]:
        """Index ``messages`` in a mailbox: one UpdateItem for UIDs, then one transaction
        per 32 messages. With ``dedup_key`` a repeated call delivers nothing and returns [].

        ``written`` are the blobs the caller has just put (:meth:`BlobStore.write`): if a
        release deleted one meanwhile, it is put again (:mod:`mailcore.blobstore`), for
        1 GetItem, 1 PutObject and the transaction again. Blobs not in ``written`` must have
        been put within the last :data:`~mailcore.blobstore.PUT_MARGIN` seconds, or that
        race is a :class:`~mailcore.blobstore.BlobBusy` failure."""
        blobs = {w.sha256: w for w in written}
        return [uid for _, uid in self._index(user, name, messages, dedup_key, blobs.get)]

    def _index(
        self,
        user: str,
        name: str,
        messages: list[NewMessage],
        dedup_key: str | None,
        claim: Callable[[str], Written | None] | None,
    ) -> list[tuple[int, int]]:
        """(position in ``messages``, UID) of each message indexed. ``claim`` tells which
        blobs the caller wrote; None: the caller wrote none and only adds references to
        blobs that still have some (COPY), leaving out the messages whose blob has none."""
        for m in messages:
            m.flags = validate_flags(m.flags)
        now = int(time.time())  # before allocating: the default ``put_at`` errs early
        alloc = self.mailboxes.allocate(user, name, len(messages))
        numbered = [(i, alloc.first_uid + i, m) for i, m in enumerate(messages)]
        indexed: list[tuple[int, int]] = []
        for start in range(0, len(messages), _MESSAGES_PER_TRANSACTION):
            dedup = None
            if dedup_key is not None and start == 0:
                dedup = self._dedup_action(alloc.mailbox, dedup_key, alloc.first_uid, messages[0], now)
            chunk = numbered[start : start + _MESSAGES_PER_TRANSACTION]
            done = self._commit(alloc, name, chunk, dedup, claim, now)
            if done is None:
                return []  # RFC 5321 §4.1.1.4 retry of a delivery we already made
            indexed += done
        return indexed

    def _commit(
        self,
        alloc: Allocation,
        name: str,
        chunk: list[tuple[int, int, NewMessage]],
        dedup: dict[str, Any] | None,
        claim: Callable[[str], Written | None] | None,
        now: int,
    ) -> list[tuple[int, int]] | None:
        """One chunk's transaction, retried while a racing release deleted a blob it names
        (:mod:`mailcore.blobstore`). None if ``dedup`` found the delivery made."""
        conditions: dict[str, RefCondition] = {}
        for _ in range(REF_ROUNDS):
            if not chunk:
                return []
            refs = Counter(m.sha256 for _, _, m in chunk)
            actions = [a for _, uid, m in chunk for a in self._put_actions(alloc, uid, m, now)]
            actions.append(
                self.mailboxes.counts_action(alloc.mailbox, len(chunk), sum(SEEN not in m.flags for _, _, m in chunk))
            )
            first_ref = len(actions)
            for sha, n in refs.items():
                condition = conditions.get(sha) or self._ref_condition(sha, claim, now)
                actions.append(self.blobs.add_refs_action(sha, n, condition))
            if dedup is not None:
                actions.append(dedup)
            try:
                dynamo.transact(self.dynamodb, actions)
            except self.dynamodb.exceptions.TransactionCanceledException as error:
                codes = dynamo.cancellation_codes(error)
                if dedup is not None and codes and codes[-1] == "ConditionalCheckFailed":
                    return None
                if "ConditionalCheckFailed" in codes[:first_ref]:
                    raise NotFound(f"mailbox {name} was deleted") from None
                refused = [sha for sha, code in zip(refs, codes[first_ref:]) if code == "ConditionalCheckFailed"]
                if not refused:
                    raise
                for sha in refused:
                    if claim is None:
                        chunk = [c for c in chunk if c[2].sha256 != sha]  # its source message is gone
                        continue
                    written = claim(sha)
                    if written is None:
                        raise BlobBusy(f"blob {sha} was deleted after it was put") from None
                    conditions[sha] = rewritten(self.blobs.settle(sha))
                    self.blobs.put(written.data)
                continue
            return [(i, uid) for i, uid, _ in chunk]
        raise BlobBusy("blobs deleted again and again while indexing")

    @staticmethod
    def _ref_condition(sha: str, claim: Callable[[str], Written | None] | None, now: int) -> RefCondition:
        """A first attempt's condition for adding references to ``sha``."""
        if claim is None:
            return referenced()
        written = claim(sha)
        return written_since(written.put_at if written else now - PUT_MARGIN)

    def _put_actions(self, alloc: Allocation, uid: int, m: NewMessage, now: int) -> list[dict[str, Any]]:
        item = {
            "pk": alloc.mailbox.mailbox_id,
            "uid": uid,
            "sha256": m.sha256,
            "size": m.size,
            "internaldate": m.internaldate or now,
            "flags": set(m.flags) or None,
            "modseq": alloc.modseq,
        }
        meta = {"pk": meta_pk(alloc.mailbox.mailbox_id), "uid": uid, "meta": json.dumps(m.meta, separators=(",", ":"))}
        return [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": dynamo.serialize(i),
                    "ConditionExpression": "attribute_not_exists(uid)",
                }
            }
            for i in (item, meta)
        ]

    def delivered(self, user: str, name: str, dedup_key: str) -> Delivered | None:
        """What the delivery made under ``dedup_key`` indexed (its marker lives
        :data:`DEDUP_SECONDS`); None once forgotten. 2 GetItems: the mailbox, the marker."""
        mailbox = self.mailboxes.get(user, name)
        reply = self.dynamodb.get_item(
            TableName=self.mailboxes.table,
            Key=dynamo.serialize({"pk": f"DELIVERY#{mailbox.mailbox_id}", "sk": dedup_key}),
            ConsistentRead=True,
        )
        marker = dynamo.deserialize(reply.get("Item", {}))
        if "uid" not in marker:
            return None
        return Delivered(int(marker["uid"]), str(marker.get("sha256", "")), int(marker.get("size", 0)))

    def _dedup_action(self, mailbox: Mailbox, key: str, uid: int, first: NewMessage, now: int) -> dict[str, Any]:
        item = {
            "pk": f"DELIVERY#{mailbox.mailbox_id}",
            "sk": key,
            "uid": uid,
            "sha256": first.sha256,
            "size": first.size,
            "expires_at": now + DEDUP_SECONDS,
        }
        return {
            "Put": {
                "TableName": self.mailboxes.table,
                "Item": dynamo.serialize(item),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def store_flags(
        self, user: str, name: str, uids: list[int], mode: str, flags: list[str], unchanged_since: int | None = None
    ) -> list[MessageRecord]:
        """RFC 3501 §6.4.6 STORE: ``mode`` is ``+`` (add), ``-`` (remove) or ``=`` (replace).

        One UpdateItem for a MODSEQ, one per message, one for the unseen count. Messages that
        no longer exist, or changed after ``unchanged_since`` (RFC 7162 §3.1.3), are left out.
        """
        if mode not in "+-=" or len(mode) != 1:
            raise InvalidInput(f"bad store mode {mode!r}")
        wanted = set(validate_flags(flags))
        alloc = self.mailboxes.allocate(user, name, 0)
        updated: list[MessageRecord] = []
        unseen_delta = 0
        for uid in uids:
            old = self._update_flags(alloc, uid, mode, wanted, unchanged_since)
            if old is None:
                continue
            before = set(old.flags)
            after = before | wanted if mode == "+" else before - wanted if mode == "-" else wanted
            unseen_delta += (SEEN in before) - (SEEN in after)
            updated.append(MessageRecord(uid, sorted(after), alloc.modseq, old.size, old.internaldate, old.sha256))
        if unseen_delta:
            self._add_unseen(alloc.mailbox, unseen_delta)
        return updated

    def _update_flags(
        self, alloc: Allocation, uid: int, mode: str, flags: set[str], unchanged_since: int | None
    ) -> MessageRecord | None:
        if mode == "=":
            update = "SET flags = :f, modseq = :m" if flags else "REMOVE flags SET modseq = :m"
        elif not flags:
            update = "SET modseq = :m"
        else:
            update = ("ADD" if mode == "+" else "DELETE") + " flags :f SET modseq = :m"
        condition = "attribute_exists(uid)" + (" AND modseq <= :since" if unchanged_since is not None else "")
        vals: dict[str, Any] = {"m": alloc.modseq}
        if flags:
            vals["f"] = flags
        if unchanged_since is not None:
            vals["since"] = unchanged_since
        try:
            reply = self.dynamodb.update_item(
                TableName=self.table,
                Key=dynamo.serialize({"pk": alloc.mailbox.mailbox_id, "uid": uid}),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeValues=dynamo.values(**vals),
                ReturnValues="ALL_OLD",
            )
        except self.dynamodb.exceptions.ConditionalCheckFailedException:
            return None
        return MessageRecord.from_item(dynamo.deserialize(reply["Attributes"]))

    def _add_unseen(self, mailbox: Mailbox, delta: int) -> None:
        self.dynamodb.update_item(
            TableName=self.mailboxes.table,
            Key=dynamo.serialize(mailbox_key(mailbox.user, mailbox.name)),
            UpdateExpression="ADD unseen :u",
            ConditionExpression="mailbox_id = :id",
            ExpressionAttributeValues=dynamo.values(u=delta, id=mailbox.mailbox_id),
        )

    def expunge(self, user: str, name: str, uids: list[int] | None = None) -> list[int]:
        """RFC 3501 §6.4.3 EXPUNGE (RFC 4315 §2.1 UID EXPUNGE when ``uids`` is given):
        remove the messages flagged \\Deleted. One transaction per message (delete, tombstone,
        counts), then the blob references are released."""
        mailbox = self.mailboxes.get(user, name)
        candidates = [
            m for m in self.list_range(mailbox.mailbox_id) if DELETED in m.flags and (uids is None or m.uid in uids)
        ]
        return self.remove(user, name, candidates)

    def remove(self, user: str, name: str, records: list[MessageRecord]) -> list[int]:
        """Remove ``records`` (as read from this mailbox) and leave tombstones. Returns their UIDs."""
        if not records:
            return []
        alloc = self.mailboxes.allocate(user, name, 0)
        mid = alloc.mailbox.mailbox_id
        removed: list[int] = []
        for record in records:
            actions = [
                {
                    "Delete": {
                        "TableName": self.table,
                        "Key": dynamo.serialize({"pk": mid, "uid": record.uid}),
                        "ConditionExpression": "attribute_exists(uid)",
                    }
                },
                {"Delete": {"TableName": self.table, "Key": dynamo.serialize({"pk": meta_pk(mid), "uid": record.uid})}},
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": dynamo.serialize({"pk": tombstone_pk(mid), "uid": record.uid, "modseq": alloc.modseq}),
                    }
                },
                self.mailboxes.counts_action(alloc.mailbox, -1, -(SEEN not in record.flags)),
            ]
            try:
                dynamo.transact(self.dynamodb, actions)
            except self.dynamodb.exceptions.TransactionCanceledException:
                continue  # another session expunged it first
            self.blobs.release(record.sha256)
            removed.append(record.uid)
        return removed

    def copy(self, user: str, source: str, uids: list[int], target: str) -> list[tuple[int, int]]:
        """RFC 3501 §6.4.7 COPY with RFC 4315 §3 COPYUID pairs (source UID, new UID).

        A message expunged meanwhile is left out, as one not found is: its blob, released
        to zero, takes no new reference (:func:`~mailcore.blobstore.referenced`)."""
        src = self.mailboxes.get(user, source)
        records = sorted(self.get(src.mailbox_id, uids), key=lambda r: r.uid)
        if not records:
            return []
        news = [NewMessage(r.sha256, r.size, r.meta or {}, r.flags, r.internaldate) for r in records]
        return [(records[i].uid, uid) for i, uid in self._index(user, target, news, None, None)]

    def move(self, user: str, source: str, uids: list[int], target: str) -> list[tuple[int, int]]:
        """RFC 6851 §3.1 MOVE: copy, then expunge the originals."""
        pairs = self.copy(user, source, uids, target)
        src = self.mailboxes.get(user, source)
        moved = {s for s, _ in pairs}
        self.remove(user, source, [r for r in self.list_range(src.mailbox_id) if r.uid in moved])
        return pairs

    def purge(self, mailbox: Mailbox) -> int:
        """Drop every message of a deleted mailbox and release their blobs."""
        records = self.list_range(mailbox.mailbox_id)
        keys = [{"pk": pk, "uid": r.uid} for r in records for pk in (mailbox.mailbox_id, meta_pk(mailbox.mailbox_id))]
        for start in range(0, len(keys), 25):  # BatchWriteItem takes 25 requests
            request = {self.table: [{"DeleteRequest": {"Key": dynamo.serialize(k)}} for k in keys[start : start + 25]]}
            while request:
                request = self.dynamodb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
        for sha, n in Counter(r.sha256 for r in records).items():
            self.blobs.release(sha, n)
        return len(records)

    # -- reading ----------------------------------------------------------------

    def list_range(
        self,
        mailbox_id: str,
        first: int = 1,
        last: int | None = None,
        with_meta: bool = False,
        limit: int | None = None,
    ) -> list[MessageRecord]:
        """Messages with ``first <= uid <= last`` in UID order, the first ``limit`` of them:
        one Query per 1 MB page (about 10,000 messages), and as many again over the
        metadata with ``with_meta``."""

        def between(pk: str) -> list[dict[str, Any]]:
            items = dynamo.query(
                self.dynamodb,
                TableName=self.table,
                KeyConditionExpression="pk = :pk AND uid BETWEEN :a AND :b",
                ExpressionAttributeValues=dynamo.values(pk=pk, a=first, b=last if last is not None else 2**32),
                ConsistentRead=True,
            )
            return list(itertools.islice(items, limit))

        items = between(mailbox_id)
        if with_meta:
            return _with_meta(items + between(meta_pk(mailbox_id)), mailbox_id)
        return [MessageRecord.from_item(i) for i in items]

    def count_from(self, mailbox_id: str, first_uid: int) -> int:
        """How many messages have ``uid >= first_uid``: a Query (COUNT) per 1 MB of keys."""
        pages = dynamo.query_pages(
            self.dynamodb,
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND uid >= :u",
            ExpressionAttributeValues=dynamo.values(pk=mailbox_id, u=first_uid),
            Select="COUNT",
            ConsistentRead=True,
        )
        return sum(int(page.get("Count", 0)) for page in pages)

    def get(self, mailbox_id: str, uids: list[int]) -> list[MessageRecord]:
        """Full records (with metadata) of some UIDs: one BatchGetItem per 50."""
        wanted = sorted(set(uids))
        keys = [{"pk": pk, "uid": uid} for uid in wanted for pk in (mailbox_id, meta_pk(mailbox_id))]
        return _with_meta(dynamo.batch_get(self.dynamodb, self.table, keys, ConsistentRead=True), mailbox_id)

    def changes(self, mailbox: Mailbox, since: int) -> Changes:
        """Messages changed or added, and UIDs expunged, after MODSEQ ``since``: two Queries."""

        changed = sorted(
            (MessageRecord.from_item(i) for i in self._modseq_after(mailbox.mailbox_id, since)), key=lambda r: r.uid
        )
        expunged = sorted(int(i["uid"]) for i in self._modseq_after(tombstone_pk(mailbox.mailbox_id), since))
        return Changes(mailbox.highestmodseq, changed, expunged)

    def _modseq_after(self, pk: str, since: int) -> list[dict[str, Any]]:
        """Summary items of partition ``pk`` with a MODSEQ above ``since``, from the index."""
        return list(
            dynamo.query(
                self.dynamodb,
                TableName=self.table,
                IndexName="by-modseq",
                KeyConditionExpression="pk = :pk AND modseq > :s",
                ExpressionAttributeValues=dynamo.values(pk=pk, s=since),
                **dynamo.projection(SUMMARY_FIELDS),
                ConsistentRead=True,
            )
        )

    def read(self, mailbox_id: str, uid: int) -> tuple[MessageRecord, bytes]:
        records = self.get(mailbox_id, [uid])
        if not records:
            raise NotFound(f"no message {uid}")
        return records[0], self.blobs.get(records[0].sha256)
