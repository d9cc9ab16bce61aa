"""Password hashing with argon2id (RFC 9106), through argon2-cffi.

argon2-cffi compares in constant time and tells when a stored hash was made with
other parameters than today's, so a successful login re-hashes it.

One verification costs about 160 ms of CPU and 64 MiB, by design; mail clients log in
again and again (a phone's IMAP connections, a desktop client's submission per message).
:class:`VerifiedPasswords` remembers, for a few minutes, which (stored hash, password)
pairs this container verified, as Cyrus saslauthd's credential cache (``-c``) does: the
user's item is still read on every login, so a changed password (a new stored hash) or a
removed user takes effect at once; only the repeated argon2 work is saved. It keeps
HMAC-SHA256 digests under a random key of the process's own, never a password, and
never a failure.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# RFC 9106 §4 second recommended option (64 MiB, 3 passes) fits a 512 MB Lambda.
HASHER = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=1)

# A hash to verify against when the user does not exist, so that answering "no such
# user" costs the same time as "wrong password".
_DUMMY_HASH: str | None = None


def hash_password(password: str, hasher: PasswordHasher = HASHER) -> str:
    return hasher.hash(password)


def verify_password(stored: str | None, password: str, hasher: PasswordHasher = HASHER) -> bool:
    """Constant-time check; a missing user still costs one full verification."""
    global _DUMMY_HASH
    if stored is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hasher.hash("not a password")
        stored = _DUMMY_HASH
        password = "\0" + password
    try:
        return hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str, hasher: PasswordHasher = HASHER) -> bool:
    return hasher.check_needs_rehash(stored)


class VerifiedPasswords:
    """Successful verifications of the last ``ttl`` seconds (at most ``size`` of them)."""

    def __init__(self, ttl: float = 300.0, size: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._until: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> VerifiedPasswords:
        """``PASSWORD_CACHE_SECONDS`` (300; 0: every login verifies)."""
        env = os.environ if env is None else env
        return cls(ttl=float(env.get("PASSWORD_CACHE_SECONDS") or 300.0))

    def verify(self, stored: str | None, password: str) -> bool:
        if stored is None or self.ttl <= 0:
            return verify_password(stored, password)
        digest = hmac.new(
            self._key, stored.encode() + b"\0" + password.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).digest()
        now = self.clock()
        with self._lock:
            until = self._until.get(digest)
        if until is not None and until > now:
            return True
        if not verify_password(stored, password):
            return False
        with self._lock:
            self._until[digest] = now + self.ttl
            self._until.move_to_end(digest)
            while len(self._until) > self.size:
                self._until.popitem(last=False)
        return True


#: The container's cache, shared by its threads (the gateway's in-process functions too).
VERIFIED = VerifiedPasswords.from_env()
