"""Fixtures for tests on the emulated AWS: users made fresh for each test."""

from __future__ import annotations

import secrets

import pytest

from mailcore.store import Store


def new_user(store: Store, domain: str, password: str = "correct horse") -> str:
    return store.add_user(f"u{secrets.token_hex(4)}@{domain}", password)


@pytest.fixture
def user(store: Store, domain: str) -> str:
    """A new user with INBOX and the special-use mailboxes; password ``correct horse``."""
    return new_user(store, domain)
