"""Accounts: domains, users, aliases, catch-all, plus-addressing, passwords."""

from __future__ import annotations

import logging

import pytest
from mailcore.accounting import count_requests
from mailcore.errors import AlreadyExists, AuthenticationFailed, InvalidInput, NotFound

from .conftest import new_user


def test_resolution_rules(store, domain):
    # GIVEN two users, an alias to both, and no catch-all yet
    bob = new_user(store, domain)
    alice = new_user(store, domain)
    store.accounts.add_alias(f"team@{domain}", [bob, alice])
    resolve = store.accounts.resolve
    bob_local = bob.split("@")[0]
    # THEN exact, case-folded (RFC 5321 §2.4) and subaddressed (RFC 5233) forms reach bob
    assert resolve(bob).users == [bob]
    assert resolve(bob.upper()).users == [bob]
    assert resolve(f"{bob_local}+news@{domain.upper()}").users == [bob]
    # AND the alias fans out, also with a tag
    assert sorted(resolve(f"team@{domain}").users) == sorted([bob, alice])
    assert sorted(resolve(f"Team+x@{domain}").users) == sorted([bob, alice])
    # AND unknown local parts are refused while no catch-all is set
    assert resolve(f"nobody@{domain}").users == []
    assert resolve(f"nobody@{domain}").local_domain is True
    # AND other domains are not ours
    assert resolve("someone@elsewhere.example").local_domain is False
    # WHEN a catch-all is set THEN unknown local parts reach it
    store.accounts.set_catchall(domain, alice)
    assert resolve(f"nobody@{domain}").users == [alice]
    assert resolve(bob).users == [bob]  # users still win over the catch-all


def test_resolution_costs_one_request(store, domain, user):
    with count_requests() as counter:
        store.accounts.resolve(f"x+y@{domain}")
    assert counter.snapshot() == {"dynamodb.BatchGetItem": 1}


def test_duplicates_and_bad_input(store, domain, user):
    with pytest.raises(AlreadyExists):
        store.add_user(user.upper(), "pw")
    with pytest.raises(AlreadyExists):
        store.accounts.add_alias(user, [user])  # an alias may not shadow a user
    with pytest.raises(NotFound):
        store.add_user("x@unknown-domain.example", "pw")
    with pytest.raises(InvalidInput):
        store.add_user(f"a+b@{domain}", "pw")
    with pytest.raises(InvalidInput):
        store.add_user("not an address", "pw")
    with pytest.raises(NotFound):
        store.accounts.add_alias(f"list@{domain}", [f"ghost@{domain}"])
    with pytest.raises(AlreadyExists):
        store.accounts.add_domain(domain.upper())
    with pytest.raises(InvalidInput):
        store.accounts.remove_domain(domain)  # still has users


def test_passwords(store, user, caplog):
    # Our code at its most talkative; botocore's own DEBUG wire dumps are not ours to judge.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="mailcore")
    assert store.accounts.authenticate(user.upper(), "correct horse") == user
    for wrong in ["wrong", "", "correct horse ", "Correct horse"]:
        with pytest.raises(AuthenticationFailed):
            store.accounts.authenticate(user, wrong)
    with pytest.raises(AuthenticationFailed):
        store.accounts.authenticate("nobody@nowhere.example", "correct horse")
    with pytest.raises(AuthenticationFailed):
        store.accounts.authenticate("not an address", "x")
    item = store.accounts.dynamodb.get_item(
        TableName=store.accounts.table,
        Key={"pk": {"S": f"DOMAIN#{user.split('@')[1]}"}, "sk": {"S": f"USER#{user.split('@')[0]}"}},
    )["Item"]
    stored = item["password_hash"]["S"]
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert stored not in caplog.text and "correct horse" not in caplog.text
    store.accounts.set_password(user, "new secret")
    assert store.accounts.authenticate(user, "new secret") == user


def test_rehash_on_parameter_change(store, user, monkeypatch):
    from argon2 import PasswordHasher
    from mailcore import passwords

    # GIVEN a hash made with weaker, older parameters
    old = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    key = {"pk": {"S": f"DOMAIN#{user.split('@')[1]}"}, "sk": {"S": f"USER#{user.split('@')[0]}"}}
    store.accounts.dynamodb.update_item(
        TableName=store.accounts.table,
        Key=key,
        UpdateExpression="SET password_hash = :h",
        ExpressionAttributeValues={":h": {"S": old.hash("correct horse")}},
    )
    # WHEN the user logs in THEN the hash is replaced by one with today's parameters
    assert store.accounts.authenticate(user, "correct horse") == user
    stored = store.accounts.dynamodb.get_item(TableName=store.accounts.table, Key=key)["Item"]["password_hash"]["S"]
    assert not passwords.needs_rehash(stored)
    assert store.accounts.authenticate(user, "correct horse") == user


def test_listing_and_removal(store, domain):
    bob = new_user(store, domain)
    store.accounts.add_alias(f"info@{domain}", [bob])
    assert bob in store.accounts.list_users(domain)
    assert store.accounts.list_aliases(domain) == [{"address": f"info@{domain}", "targets": [bob]}]
    assert domain in [d["domain"] for d in store.accounts.list_domains()]
    store.accounts.remove_alias(f"info@{domain}")
    store.remove_user(bob)
    assert store.accounts.resolve(bob).users == []
    assert store.mailboxes.list_all(bob) == []
    store.accounts.remove_domain(domain)
    assert store.accounts.resolve(bob).local_domain is False
    with pytest.raises(NotFound):
        store.remove_user(bob)
