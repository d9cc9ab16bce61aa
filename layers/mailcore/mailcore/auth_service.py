"""The auth function's operation."""

from __future__ import annotations

from typing import Any

from mailcore.contracts import Authenticate
from mailcore.errors import AuthenticationFailed, Throttled
from mailcore.store import Store


def authenticate(store: Store, r: Authenticate) -> dict[str, Any]:
    """The principal for these credentials; never says whether the user exists.

    With a throttle (:mod:`mailcore.throttle`), its counters and the user's item are read
    in one BatchGetItem, and a refused try ends there (``THROTTLED`` with ``retry_after``),
    before any password hashing; a failure answers ``AUTHENTICATIONFAILED`` with the
    ``delay`` (seconds) the gateway waits before telling the client.
    """
    throttle, accounts = store.throttle, store.accounts
    if throttle is None:
        return {"user": accounts.authenticate(r.username, r.password)}
    key = accounts.credentials_key(r.username)
    check = throttle.check(r.client_address, r.username, (accounts.table, key) if key is not None else None)
    if check.refused:
        raise Throttled("too many failed logins, try again later", details={"retry_after": check.retry_after})
    try:
        user = accounts.verify(r.username, r.password, check.user)
    except AuthenticationFailed as failure:
        raise AuthenticationFailed(str(failure), details={"delay": throttle.failed(check)}) from None
    throttle.succeeded(check)
    return {"user": user}


OPERATIONS = {Authenticate: authenticate}
