"""The maildrop lease (RFC 1939 §4 exclusive-access lock) on the emulated DynamoDB, and
its MailboxFunction operations."""

from __future__ import annotations

import pytest
from mailcore import dynamo
from mailcore.accounting import count_requests
from mailcore.errors import InUse, InvalidInput
from mailcore.locks import MaildropLocks, lock_key


@pytest.fixture
def locks(store) -> MaildropLocks:
    return MaildropLocks(store.mailboxes.dynamodb, store.mailboxes.table)


def test_free_lease_is_taken_and_renewed_by_its_owner(locks, user):
    first = locks.acquire(user, "gw-a/1", 300, now=1000)
    assert first.expires_at == 1300
    assert locks.acquire(user, "gw-a/1", 300, now=1100).expires_at == 1400  # renewal


def test_another_owner_is_refused_until_expiry(locks, user):
    locks.acquire(user, "gw-a/1", 300, now=1000)
    with pytest.raises(InUse):
        locks.acquire(user, "gw-b/2", 300, now=1299)
    assert locks.acquire(user, "gw-b/2", 300, now=1300).owner == "gw-b/2"  # expired: taken over


def test_release_only_by_the_owner(locks, store, user):
    locks.acquire(user, "gw-a/1", 300)
    assert locks.release(user, "gw-b/2") is False
    assert locks.release(user, "gw-a/1") is True
    assert locks.release(user, "gw-a/1") is False
    reply = store.mailboxes.dynamodb.get_item(TableName=store.mailboxes.table, Key=dynamo.serialize(lock_key(user)))
    assert "Item" not in reply


def test_leases_are_per_user(locks, user, store, domain):
    other = store.add_user(f"other-{user}", "pw")
    locks.acquire(user, "gw-a/1", 300)
    locks.acquire(other, "gw-b/2", 300)


def test_the_item_carries_the_ttl_attribute(locks, store, user):
    locks.acquire(user, "gw-a/1", 60, now=5000)
    reply = store.mailboxes.dynamodb.get_item(TableName=store.mailboxes.table, Key=dynamo.serialize(lock_key(user)))
    assert dynamo.deserialize(reply["Item"]) == {**lock_key(user), "owner": "gw-a/1", "expires_at": 5060}


@pytest.mark.parametrize(("owner", "seconds"), [("", 60), ("x" * 201, 60), ("gw", 0), ("gw", 3601)])
def test_bad_requests_are_refused(locks, user, owner, seconds):
    with pytest.raises(InvalidInput):
        locks.acquire(user, owner, seconds)


def test_each_operation_is_one_request(locks, user):
    with count_requests() as taking:
        locks.acquire(user, "gw-a/1", 60)
    with count_requests() as releasing:
        locks.release(user, "gw-a/1")
    assert taking.snapshot() == {"dynamodb.PutItem": 1}
    assert releasing.snapshot() == {"dynamodb.DeleteItem": 1}


def test_lock_and_unlock_operations(function_transport, user):
    def call(event):
        return function_transport.invoke("MailboxFunction", event)

    assert call({"op": "lock", "user": user, "owner": "a", "seconds": 60})["ok"]
    assert call({"op": "lock", "user": user, "owner": "b"}) == {"ok": False, "error": "INUSE", "message": "the maildrop is in use by another session"}
    assert call({"op": "unlock", "user": user, "owner": "b"}) == {"ok": True, "released": False}
    assert call({"op": "unlock", "user": user, "owner": "a"}) == {"ok": True, "released": True}
    assert call({"op": "lock", "user": user, "owner": "b", "seconds": 0})["error"] == "CLIENTBUG"
