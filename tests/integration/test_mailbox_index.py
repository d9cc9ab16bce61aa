"""The mailbox index: default mailboxes, hierarchy, UIDs under concurrency, RENAME and
DELETE semantics (RFC 3501 §6.3), counts."""

from __future__ import annotations

import threading

import pytest
from mailcore.errors import AlreadyExists, InvalidInput, NotFound
from mailcore.messages import NewMessage


def names(store, user):
    return sorted(m.name for m in store.mailboxes.list_all(user))


def message(store, body: bytes = b"Subject: t\r\n\r\nbody\r\n", flags=None) -> NewMessage:
    return NewMessage(store.blobs.put(body), len(body), {}, list(flags or []))


def test_new_user_has_inbox_and_special_use(store, user):
    boxes = {m.name: m for m in store.mailboxes.list_all(user)}
    assert set(boxes) == {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}
    assert boxes["Sent"].special_use == "\\Sent"  # RFC 6154 §2
    assert len({m.uidvalidity for m in boxes.values()}) == 6
    assert all(m.uidnext == 1 and m.messages == 0 for m in boxes.values())


def test_concurrent_deliveries_get_distinct_increasing_uids(store, user):
    # GIVEN 4 threads delivering 10 messages each into one INBOX
    results: list[list[int]] = []

    def deliver():
        mine = [store.messages.append(user, "INBOX", [message(store)])[0] for _ in range(10)]
        results.append(mine)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # THEN no two messages share a UID, each thread saw its UIDs increase (RFC 3501 §2.3.1.1)
    uids = [u for r in results for u in r]
    assert len(uids) == len(set(uids)) == 40
    assert all(r == sorted(r) for r in results)
    inbox = store.mailboxes.get(user, "INBOX")
    assert inbox.messages == 40 and inbox.unseen == 40 and inbox.uidnext == 41
    assert [r.uid for r in store.messages.list_range(inbox.mailbox_id)] == list(range(1, 41))


def test_create_makes_superiors_and_refuses_duplicates(store, user):
    store.mailboxes.create(user, "Work/Clients/Acme")
    assert {"Work", "Work/Clients", "Work/Clients/Acme"} <= set(names(store, user))
    with pytest.raises(AlreadyExists):
        store.mailboxes.create(user, "Work/Clients")
    with pytest.raises(AlreadyExists):
        store.mailboxes.create(user, "inbox")  # RFC 3501 §5.1 INBOX is case-insensitive


@pytest.mark.parametrize("bad", ["", "a//b", "a/*", "50%", "tab\there", "/".join(["x"] * 17)])
def test_invalid_names(store, user, bad):
    with pytest.raises(InvalidInput):
        store.mailboxes.create(user, bad)


def test_uidvalidity_changes_when_a_name_is_recreated(store, user):
    first = store.mailboxes.create(user, "Lists")
    store.messages.append(user, "Lists", [message(store)])
    store.mailboxes.remove(user, "Lists")
    second = store.mailboxes.create(user, "Lists")
    assert second.uidvalidity > first.uidvalidity  # RFC 3501 §2.3.1.1
    assert second.mailbox_id != first.mailbox_id
    assert store.messages.list_range(second.mailbox_id) == []


def test_rename_keeps_uids_and_moves_inferiors(store, user):
    store.mailboxes.create(user, "Projects/Old")
    uids = store.messages.append(user, "Projects", [message(store), message(store)])
    before = store.mailboxes.get(user, "Projects")
    store.mailboxes.rename(user, "Projects", "Done/Projects")  # RFC 3501 §6.3.5
    after = store.mailboxes.get(user, "Done/Projects")
    assert (after.mailbox_id, after.uidvalidity, after.uidnext) == (
        before.mailbox_id,
        before.uidvalidity,
        before.uidnext,
    )
    assert [r.uid for r in store.messages.list_range(after.mailbox_id)] == uids
    assert "Done/Projects/Old" in names(store, user) and "Projects" not in names(store, user)
    assert "Done" in names(store, user)  # the new superior exists
    with pytest.raises(NotFound):
        store.mailboxes.rename(user, "Projects", "Elsewhere")
    with pytest.raises(AlreadyExists):
        store.mailboxes.rename(user, "Done/Projects", "Sent")


def test_renaming_inbox_moves_its_messages_and_leaves_it_empty(store, user):
    store.messages.append(user, "INBOX", [message(store), message(store)])
    old_inbox = store.mailboxes.get(user, "INBOX")
    store.mailboxes.rename(user, "INBOX", "Saved")  # RFC 3501 §6.3.5, special case of INBOX
    saved, inbox = store.mailboxes.get(user, "Saved"), store.mailboxes.get(user, "INBOX")
    assert saved.messages == 2 and saved.mailbox_id == old_inbox.mailbox_id
    assert inbox.messages == 0 and inbox.uidvalidity != old_inbox.uidvalidity


def test_inbox_cannot_be_deleted(store, user):
    with pytest.raises(InvalidInput):
        store.mailboxes.remove(user, "INBOX")  # RFC 3501 §6.3.4


def test_counts_follow_flags_expunge_copy_and_move(store, user):
    store.messages.append(user, "INBOX", [message(store), message(store, flags=["\\Seen"]), message(store)])
    assert (store.mailboxes.get(user, "INBOX").messages, store.mailboxes.get(user, "INBOX").unseen) == (3, 2)
    store.messages.store_flags(user, "INBOX", [1, 3], "+", ["\\Seen"])
    assert store.mailboxes.get(user, "INBOX").unseen == 0
    store.messages.store_flags(user, "INBOX", [1], "-", ["\\Seen"])
    store.messages.store_flags(user, "INBOX", [2], "=", ["\\Deleted", "$Label1"])
    inbox = store.mailboxes.get(user, "INBOX")
    assert inbox.unseen == 2  # uid 1 unseen again, uid 2 lost \Seen by "="
    assert store.messages.expunge(user, "INBOX") == [2]
    pairs = store.messages.move(user, "INBOX", [1], "Archive")  # RFC 6851
    assert pairs == [(1, 1)]
    inbox, archive = store.mailboxes.get(user, "INBOX"), store.mailboxes.get(user, "Archive")
    assert (inbox.messages, inbox.unseen) == (1, 0)
    assert (archive.messages, archive.unseen) == (1, 1)
    assert store.messages.copy(user, "INBOX", [3], "Archive") == [(3, 2)]
    assert store.mailboxes.get(user, "Archive").messages == 2


def test_modseq_and_changes(store, user):
    store.messages.append(user, "INBOX", [message(store), message(store)])
    inbox = store.mailboxes.get(user, "INBOX")
    since = inbox.highestmodseq
    store.messages.store_flags(user, "INBOX", [1], "+", ["\\Flagged", "\\Deleted"])
    store.messages.expunge(user, "INBOX")
    changes = store.messages.changes(store.mailboxes.get(user, "INBOX"), since)
    assert changes.expunged == [1] and changes.changed == []
    assert changes.highestmodseq > since
    # UNCHANGEDSINCE (RFC 7162 §3.1.3): a message changed after it is left out
    store.messages.store_flags(user, "INBOX", [2], "+", ["\\Answered"])
    assert store.messages.store_flags(user, "INBOX", [2], "+", ["\\Seen"], unchanged_since=since) == []


@pytest.mark.parametrize("flag", ["\\Recent", "\\Bogus", "bad flag", "(", ""])
def test_invalid_flags(store, user, flag):
    store.messages.append(user, "INBOX", [message(store)])
    with pytest.raises(InvalidInput):
        store.messages.store_flags(user, "INBOX", [1], "+", [flag])
