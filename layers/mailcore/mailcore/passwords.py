"""Password hashing with argon2id (RFC 9106), through argon2-cffi.

argon2-cffi compares in constant time and tells when a stored hash was made with
other parameters than today's, so a successful login re-hashes it.
"""

from __future__ import annotations

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
