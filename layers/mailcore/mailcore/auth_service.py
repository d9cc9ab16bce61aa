"""The auth function's operation."""

from __future__ import annotations

from typing import Any

from mailcore.contracts import Authenticate
from mailcore.errors import AuthenticationFailed, Throttled
from mailcore.store import Store


def authenticate(store: Store, r: Authenticate) -> dict[str, Any]:
    """The principal for these credentials; never says whether the user exists.

    With a throttle (:mod:`mailcore.throttle`), the counters are read first and a refused
    try ends there (``THROTTLED`` with ``retry_after``), before any password hashing; a
    failure answers ``AUTHENTICATIONFAILED`` with the ``delay`` (seconds) the gateway
    waits before telling the client.
    """
    throttle = store.throttle
    if throttle is None:
        return {"user": store.accounts.authenticate(r.username, r.password)}
    check = throttle.check(r.client_address, r.username)
    if check.refused:
        raise Throttled("too many failed logins, try again later", details={"retry_after": check.retry_after})
    try:
        user = store.accounts.authenticate(r.username, r.password)
    except AuthenticationFailed as failure:
        raise AuthenticationFailed(str(failure), details={"delay": throttle.failed(check)}) from None
    throttle.succeeded(check)
    return {"user": user}


OPERATIONS = {Authenticate: authenticate}
