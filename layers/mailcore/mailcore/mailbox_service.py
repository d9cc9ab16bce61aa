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
    return {"mailbox": store.mailboxes.get(r.user, r.mailbox).to_dict()}


def messages(store: Store, r: c.ListMessages) -> dict[str, Any]:
    mailbox = store.mailboxes.get(r.user, r.mailbox)
    records = store.messages.list_range(mailbox.mailbox_id, r.first, r.last or None)
    return {"mailbox": mailbox.to_dict(), "messages": [m.to_dict() for m in records]}


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
    message = NewMessage(
        store.blobs.put(raw), len(raw), analyze(raw).to_item(), list(r.flags), r.internaldate or int(time.time())
    )
    (uid,) = store.messages.append(r.user, r.mailbox, [message])
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
