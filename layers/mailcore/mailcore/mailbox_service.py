"""The mailbox function's operations: IMAP and POP3 work on the index, one call each.

Authorization: every operation reaches messages only through ``(user, mailbox name)``,
i.e. through the principal's own partition of the mailbox index, so no request can name
another user's mailbox id (DESIGN.md contract 6).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mailcore import contracts as c
from mailcore.locks import MaildropLocks
from mailcore.messages import NewMessage
from mailcore.mime import analyze
from mailcore.store import Store


def list_mailboxes(store: Store, r: c.ListMailboxes) -> dict[str, Any]:
    return {"mailboxes": [m.to_dict() for m in store.mailboxes.list_all(r.user)]}


def create(store: Store, r: c.CreateMailbox) -> dict[str, Any]:
    return {"mailbox": store.mailboxes.create(r.user, r.mailbox, r.special_use or None).to_dict()}


def delete(store: Store, r: c.DeleteMailbox) -> dict[str, Any]:
    removed = store.mailboxes.remove(r.user, r.mailbox)
    return {"purged": store.messages.purge(removed)}


def rename(store: Store, r: c.RenameMailbox) -> dict[str, Any]:
    return {"mailbox": store.mailboxes.rename(r.user, r.mailbox, r.new_name).to_dict()}


def subscribe(store: Store, r: c.Subscribe) -> dict[str, Any]:
    store.mailboxes.subscribe(r.user, r.mailbox, r.subscribed)
    return {}


def status(store: Store, r: c.Status) -> dict[str, Any]:
    """RFC 3501 §6.3.10: one GetItem; with ``recent``, one Query (COUNT) more for the
    messages no session has seen as \\Recent yet."""
    mailbox = store.mailboxes.get(r.user, r.mailbox)
    result = mailbox.to_dict()
    if r.recent:
        result["recent"] = store.messages.count_from(mailbox.mailbox_id, mailbox.recent_uid)
    return {"mailbox": result}


def messages(store: Store, r: c.ListMessages) -> dict[str, Any]:
    """At most :data:`SELECT_PAGE` records (about 3 MB: inside a synchronous invoke's
    6 MB); ``more``: ask again from the last UID + 1."""
    mailbox = store.mailboxes.get(r.user, r.mailbox)
    records = store.messages.list_range(mailbox.mailbox_id, r.first, r.last or None, limit=SELECT_PAGE + 1)
    page = records[:SELECT_PAGE]
    return {"mailbox": mailbox.to_dict(), "messages": [m.to_dict() for m in page], "more": len(records) > len(page)}


def fetch(store: Store, r: c.FetchMessages) -> dict[str, Any]:
    mailbox = store.mailboxes.get(r.user, r.mailbox)
    return {"messages": [m.to_dict() for m in store.messages.get(mailbox.mailbox_id, r.uids)]}


def store_flags(store: Store, r: c.StoreFlags) -> dict[str, Any]:
    since = r.unchanged_since if r.unchanged_since >= 0 else None
    updated = store.messages.store_flags(r.user, r.mailbox, r.uids, r.mode, r.flags, since)
    return {"messages": [m.to_dict() for m in updated]}


def expunge(store: Store, r: c.Expunge) -> dict[str, Any]:
    return {"expunged": store.messages.expunge(r.user, r.mailbox, r.uids)}


def remove(store: Store, r: c.RemoveMessages) -> dict[str, Any]:
    mailbox = store.mailboxes.get(r.user, r.mailbox)
    records = store.messages.get(mailbox.mailbox_id, r.uids)
    return {"removed": store.messages.remove(r.user, r.mailbox, records)}


def append(store: Store, r: c.Append) -> dict[str, Any]:
    """RFC 3501 §6.3.11 APPEND; the UID for RFC 4315 APPENDUID."""
    raw = store.blobs.read_staging(r.staging_key)
    blob = store.blobs.write(raw)
    message = NewMessage(
        blob.sha256, len(raw), analyze(raw).to_item(), list(r.flags), r.internaldate or int(time.time())
    )
    (uid,) = store.messages.append(r.user, r.mailbox, [message], written=[blob])
    mailbox = store.mailboxes.get(r.user, r.mailbox)
    return {"uid": uid, "uidvalidity": mailbox.uidvalidity}


def copy(store: Store, r: c.CopyMessages) -> dict[str, Any]:
    operation = store.messages.move if r.move else store.messages.copy
    pairs = operation(r.user, r.mailbox, r.uids, r.target)
    target = store.mailboxes.get(r.user, r.target)
    return {"uidvalidity": target.uidvalidity, "pairs": pairs}


def changes(store: Store, r: c.Changes) -> dict[str, Any]:
    mailbox = store.mailboxes.get(r.user, r.mailbox)
    found = store.messages.changes(mailbox, r.since)
    return {
        "mailbox": mailbox.to_dict(),
        "changed": [m.to_dict() for m in found.changed],
        "expunged": found.expunged,
    }


OPERATIONS: dict[type[c.Request], Callable[[Store, Any], dict[str, Any]]] = {
    c.ListMailboxes: list_mailboxes,
    c.CreateMailbox: create,
    c.DeleteMailbox: delete,
    c.RenameMailbox: rename,
    c.Subscribe: subscribe,
    c.Status: status,
    c.ListMessages: messages,
    c.FetchMessages: fetch,
    c.StoreFlags: store_flags,
    c.Expunge: expunge,
    c.RemoveMessages: remove,
    c.Append: append,
    c.CopyMessages: copy,
    c.Changes: changes,
}


# -- POP3 maildrop leases -------------------------------------------------------------


def _locks(store: Store) -> MaildropLocks:
    return MaildropLocks(store.mailboxes.dynamodb, store.mailboxes.table)


def lock_maildrop(store: Store, r: c.LockMaildrop) -> dict[str, Any]:
    """RFC 1939 §4: the exclusive-access lock, as a lease. One conditional PutItem."""
    lease = _locks(store).acquire(r.user, r.owner, r.seconds)
    return {"expires_at": lease.expires_at}


def unlock_maildrop(store: Store, r: c.UnlockMaildrop) -> dict[str, Any]:
    """RFC 1939 §6: the lock is released when the session ends. One conditional DeleteItem."""
    return {"released": _locks(store).release(r.user, r.owner)}


OPERATIONS[c.LockMaildrop] = lock_maildrop
OPERATIONS[c.UnlockMaildrop] = unlock_maildrop


# -- IMAP session support (gateway/imap) ----------------------------------------------

import functools  # noqa: E402

from mailcore import dynamo  # noqa: E402
from mailcore import search as programs  # noqa: E402
from mailcore.errors import InvalidInput, NotFound  # noqa: E402
from mailcore.mailboxes import Mailbox, mailbox_key, normalize_name  # noqa: E402
from mailcore.messages import SUMMARY_FIELDS, MessageRecord  # noqa: E402

#: Summaries per ``select`` page: about 150 bytes of JSON each, well inside the 6 MB
#: synchronous invoke payload.
SELECT_PAGE = 20_000
#: Entries per ``watch`` call (each about 100 bytes of JSON).
MAX_WATCH = 5_000


def select(store: Store, r: c.SelectMailbox) -> dict[str, Any]:
    """RFC 3501 §6.3.1/§6.3.2. A first read-write page claims the \\Recent messages
    (RFC 3501 §2.3.2): one UpdateItem ``SET recent_uid = uidnext`` returning the old item;
    otherwise one GetItem. Then one Query per 1 MB page of summaries."""
    limit = min(r.limit or SELECT_PAGE, SELECT_PAGE)
    if r.after_uid == 0 and not r.readonly:
        index = store.mailboxes
        try:
            reply = index.dynamodb.update_item(
                TableName=index.table,
                Key=dynamo.serialize(mailbox_key(r.user, normalize_name(r.mailbox))),
                UpdateExpression="SET recent_uid = uidnext",
                ConditionExpression="attribute_exists(pk)",
                ReturnValues="ALL_OLD",
            )
        except index.dynamodb.exceptions.ConditionalCheckFailedException:
            raise NotFound(f"no mailbox {r.mailbox}") from None
        item = dynamo.deserialize(reply["Attributes"])
        mailbox = Mailbox.from_item(item)
        recent_uid = int(item.get("recent_uid", 1))
    else:
        mailbox = store.mailboxes.get(r.user, r.mailbox)
        recent_uid = mailbox.uidnext
    kwargs: dict[str, Any] = {
        "TableName": store.messages.table,
        "KeyConditionExpression": "pk = :pk AND uid > :a",
        "ExpressionAttributeValues": dynamo.values(pk=mailbox.mailbox_id, a=r.after_uid),
        "ConsistentRead": True,
        **dynamo.projection(SUMMARY_FIELDS),
    }
    records: list[dict[str, Any]] = []
    more = False
    while True:
        page = store.messages.dynamodb.query(Limit=limit - len(records), **kwargs)
        records += [MessageRecord.from_item(dynamo.deserialize(i)).to_dict() for i in page.get("Items", [])]
        last = page.get("LastEvaluatedKey")
        if not last:
            break
        if len(records) >= limit:
            more = True
            break
        kwargs["ExclusiveStartKey"] = last
    return {"mailbox": mailbox.to_dict(), "messages": records, "recent_uid": recent_uid, "more": more}


def watch(store: Store, r: c.WatchMailboxes) -> dict[str, Any]:
    """Which watched mailboxes changed: one BatchGetItem per 100 distinct mailboxes
    (eventually consistent: a change shows within a poll or two)."""

    if not len(r.users) == len(r.mailboxes) == len(r.since):
        raise InvalidInput("users, mailboxes and since must have the same length")
    if len(r.users) > MAX_WATCH:
        raise InvalidInput(f"at most {MAX_WATCH} entries per call")
    names: list[str | None] = []
    for given in r.mailboxes:
        try:
            names.append(normalize_name(given))
        except InvalidInput:
            names.append(None)  # answered as gone
    wanted = {(user, name) for user, name in zip(r.users, names) if name is not None}
    fields = ("mailbox_id", "uidvalidity", "uidnext", "highestmodseq", "messages")
    items = dynamo.batch_get(
        store.mailboxes.dynamodb,
        store.mailboxes.table,
        [mailbox_key(user, name) for user, name in wanted],
        **dynamo.projection(("pk", "sk", *fields)),
    )
    found = {(i["pk"], i["sk"]): i for i in items}
    changed: list[dict[str, Any]] = []
    for index, (user, name, since) in enumerate(zip(r.users, names, r.since)):
        key = mailbox_key(user, name) if name is not None else None
        item = found.get((key["pk"], key["sk"])) if key is not None else None
        if item is None:
            changed.append({"index": index, "gone": True})
        elif int(item.get("highestmodseq", 0)) > since:
            changed.append({"index": index, **{k: item[k] for k in fields if k in item}})
    return {"changed": changed}


def search(store: Store, r: c.SearchMessages) -> dict[str, Any]:
    """RFC 3501 §6.4.4 SEARCH over the index: one Query per 1 MB page (with metadata only
    when a key needs it), and one GetObject per message for HEADER/BODY/TEXT keys (decoded
    text cached per blob in the function's memory)."""

    program = programs.loads(r.program)
    needs = programs.needs(program)
    mailbox = store.mailboxes.get(r.user, r.mailbox)
    lo, hi = programs.uid_bounds(program)
    first = max(r.first_uid, lo)
    bounds = [x for x in (r.last_uid or None, hi) if x is not None]
    last = min(bounds) if bounds else None
    if last is not None and last < first:
        return {"uids": [], "highestmodseq": 0}
    records = store.messages.list_range(mailbox.mailbox_id, first, last, with_meta=needs.meta or needs.raw)
    uids: list[int] = []
    highest = 0
    for record in records:
        candidate = programs.Candidate(
            record.uid, record.flags, record.size, record.internaldate, record.modseq, record.meta,
            functools.partial(store.blobs.get, record.sha256) if needs.raw else None, record.sha256,
        )
        if programs.matches(program, candidate):
            uids.append(record.uid)
            highest = max(highest, record.modseq)
    return {"uids": uids, "highestmodseq": highest}


OPERATIONS[c.SelectMailbox] = select
OPERATIONS[c.WatchMailboxes] = watch
OPERATIONS[c.SearchMessages] = search
