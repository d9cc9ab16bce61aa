"""The RFC 3501 §3 session states."""

from __future__ import annotations

import enum


class State(enum.Enum):
    """RFC 3501 §3."""

    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


NOT_AUTHENTICATED = State.NOT_AUTHENTICATED
AUTHENTICATED = State.AUTHENTICATED
SELECTED = State.SELECTED
LOGOUT = State.LOGOUT
