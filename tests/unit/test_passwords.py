"""The container's cache of verified logins (mailcore.passwords.VerifiedPasswords): it saves
the repeated argon2 work of a client that logs in again, and nothing else."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from mailcore import passwords
from mailcore.passwords import VerifiedPasswords, hash_password

#: Cheap parameters: these tests count verifications, they do not measure them.
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every argon2 verification the cache lets through, by stored hash."""
    calls: list[str] = []

    def verify(stored: str | None, password: str, hasher: PasswordHasher = FAST) -> bool:
        calls.append(stored or "")
        return real(stored, password, FAST)

    real = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", verify)
    return calls


def test_a_repeated_login_skips_argon2_until_the_entry_expires(argon2_calls):
    clock = Clock()
    cache, stored = VerifiedPasswords(ttl=300, clock=clock), hash_password("s3cret", FAST)
    assert cache.verify(stored, "s3cret") and cache.verify(stored, "s3cret")
    assert len(argon2_calls) == 1
    clock.now += 301
    assert cache.verify(stored, "s3cret")
    assert len(argon2_calls) == 2


def test_failures_are_never_remembered(argon2_calls):
    cache, stored = VerifiedPasswords(), hash_password("s3cret", FAST)
    assert not cache.verify(stored, "guess") and not cache.verify(stored, "guess")
    assert len(argon2_calls) == 2
    assert cache.verify(stored, "s3cret")
    assert not cache.verify(stored, "guess")  # a remembered success is no master key
    assert len(argon2_calls) == 4


def test_a_changed_password_or_removed_user_takes_effect_at_once(argon2_calls):
    cache, old = VerifiedPasswords(), hash_password("s3cret", FAST)
    assert cache.verify(old, "s3cret")
    new = hash_password("n3w", FAST)  # the user's item now holds another hash
    assert not cache.verify(new, "s3cret")
    assert not cache.verify(None, "s3cret")  # no such user: a full (dummy) verification
    assert len(argon2_calls) == 3


def test_the_cache_is_bounded_and_can_be_off(argon2_calls):
    cache = VerifiedPasswords(size=2)
    stored = [hash_password(f"pw{n}", FAST) for n in range(3)]
    for n, item in enumerate(stored):
        assert cache.verify(item, f"pw{n}")
    assert cache.verify(stored[0], "pw0")  # the oldest was dropped: verified again
    assert len(argon2_calls) == 4
    off = VerifiedPasswords.from_env({"PASSWORD_CACHE_SECONDS": "0"})
    assert off.verify(stored[1], "pw1") and off.verify(stored[1], "pw1")
    assert len(argon2_calls) == 6
