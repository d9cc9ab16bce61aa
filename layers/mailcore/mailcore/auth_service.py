"""The auth function's operation."""

from __future__ import annotations

from typing import Any

from mailcore.contracts import Authenticate
from mailcore.store import Store


def authenticate(store: Store, r: Authenticate) -> dict[str, Any]:
    """The principal for these credentials; never says whether the user exists."""
    return {"user": store.accounts.authenticate(r.username, r.password)}


OPERATIONS = {Authenticate: authenticate}
