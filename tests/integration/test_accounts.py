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


# -- the resolution cache (mailcore.accounts.ResolutionCache) -----------------------------


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def isolated(store, clock: Clock, **ttls: float):
    """An Accounts on the same table with a cache of its own: another function container."""
    from mailcore.accounts import Accounts, ResolutionCache

    return Accounts(store.accounts.dynamodb, store.accounts.table, cache=ResolutionCache(clock=clock, **ttls))


def test_a_resolution_is_read_once_then_served_from_the_cache(store, domain, user):
    # GIVEN a recipient resolved once (RCPT)
    assert store.accounts.resolve(user).users == [user]
    # WHEN it is resolved again, in any form of the address (delivery, the next message)
    with count_requests() as counter:
        assert store.accounts.resolve(user).users == [user]
        assert store.accounts.resolve(user.upper()).users == [user]
        assert store.accounts.resolve(f"Nobody@{domain}").users == []
        assert store.accounts.resolve(f"nobody@{domain}").users == []
    # THEN only the first sight of each normalized address reads DynamoDB
    assert counter.snapshot() == {"dynamodb.BatchGetItem": 1}


def test_writes_in_this_process_are_seen_at_once_through_any_accounts_object(store, domain, user):
    from mailcore.settings import Settings
    from mailcore.store import Store

    # GIVEN answers in the cache: unknown, a user, and a domain that is not ours yet
    other = Store.build(Settings.from_env())  # another Store of the process (a function's)
    newcomer, foreign = f"new-{user}", f"someone@x{domain}"
    assert other.accounts.resolve(newcomer).users == []
    assert other.accounts.resolve(foreign).local_domain is False
    assert other.accounts.resolve(user).users == [user]
    # WHEN accounts change through the test's own Store THEN the other sees each change at once
    store.add_user(newcomer, "pw")
    assert other.accounts.resolve(newcomer).users == [newcomer]
    store.accounts.add_domain(f"x{domain}")
    assert other.accounts.resolve(foreign).local_domain is True
    store.accounts.set_catchall(f"x{domain}", user)
    assert other.accounts.resolve(foreign).users == [user]
    store.accounts.add_alias(f"team@{domain}", [user, newcomer])
    assert sorted(other.accounts.resolve(f"team+x@{domain}").users) == sorted([user, newcomer])
    store.accounts.remove_alias(f"team@{domain}")
    assert other.accounts.resolve(f"team@{domain}").users == []
    store.remove_user(newcomer)
    assert other.accounts.resolve(newcomer).users == []


def test_a_write_elsewhere_shows_after_the_ttl_sooner_for_refusals(store, domain, user):
    # GIVEN a function container with its own cache (60 s for hits, 10 s for misses)
    clock = Clock()
    container = isolated(store, clock, positive_ttl=60, negative_ttl=10)
    alias, newcomer = f"list@{domain}", f"new-{user}"
    assert container.resolve(newcomer).users == []
    assert container.resolve(alias).users == []
    store.accounts.add_alias(alias, [user])  # WHEN another process changes the accounts
    store.add_user(newcomer, "pw")
    # THEN the container keeps its answers for their TTL, the refusals for less
    clock.now += 9
    assert container.resolve(alias).users == []
    clock.now += 2
    assert container.resolve(alias).users == [user]
    assert container.resolve(newcomer).users == [newcomer]
    store.remove_user(newcomer)
    clock.now += 59
    assert container.resolve(newcomer).users == [newcomer]  # a hit is kept 60 s
    clock.now += 2
    assert container.resolve(newcomer).users == []


def test_the_ttls_come_from_the_environment_and_0_turns_the_cache_off(store, domain, user):
    from mailcore.accounts import Accounts, ResolutionCache

    cache = ResolutionCache.from_env({"RESOLVE_CACHE_SECONDS": "0", "RESOLVE_NEGATIVE_CACHE_SECONDS": "0"})
    uncached = Accounts(store.accounts.dynamodb, store.accounts.table, cache=cache)
    with count_requests() as counter:
        uncached.resolve(user)
        uncached.resolve(user)
    assert counter.snapshot() == {"dynamodb.BatchGetItem": 2}
    defaults = ResolutionCache.from_env({})
    assert (defaults.positive_ttl, defaults.negative_ttl) == (60.0, 10.0)
    tuned = ResolutionCache.from_env({"RESOLVE_CACHE_SECONDS": "5", "RESOLVE_NEGATIVE_CACHE_SECONDS": "1"})
    assert (tuned.positive_ttl, tuned.negative_ttl) == (5.0, 1.0)


def test_a_lookup_that_raced_a_write_is_not_cached():
    from mailcore.accounts import Resolution, ResolutionCache

    cache = ResolutionCache()
    generation = cache.generation  # GIVEN a lookup that started before a write
    cache.invalidate()
    cache.put("a@example.test", Resolution("a@example.test", True, []), generation)
    assert cache.get("a@example.test") is None  # THEN its (maybe stale) answer is dropped


def test_the_cache_is_bounded_against_dictionary_attacks():
    from mailcore.accounts import Resolution, ResolutionCache

    cache = ResolutionCache(max_entries=100)
    for n in range(1000):  # unknown addresses probed at RCPT
        cache.put(f"u{n}@example.test", Resolution(f"u{n}@example.test", True, []), cache.generation)
    assert len(cache) == 100
    assert cache.get("u999@example.test") is not None
    assert cache.get("u0@example.test") is None  # the oldest went first
