"""The command table: which handler answers which command, and in which RFC 3501 §3
states it is legal. Client input only ever selects an entry of this table (no getattr).

Handlers are grouped by the state in which they are legal:

- :mod:`.any_state`: CAPABILITY, NOOP, LOGOUT (RFC 3501 §6.1), ID (RFC 2971);
- :mod:`.not_authenticated`: STARTTLS, AUTHENTICATE, LOGIN (RFC 3501 §6.2, RFC 4959);
- :mod:`.authenticated`: SELECT ... APPEND (RFC 3501 §6.3), NAMESPACE, ENABLE, IDLE;
- :mod:`.selected`: CHECK ... UID (RFC 3501 §6.4), UNSELECT, MOVE, UID EXPUNGE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.imap import syntax
from gateway.imap.commands import any_state, authenticated, not_authenticated, selected
from gateway.imap.responses import Response
from gateway.imap.states import AUTHENTICATED, NOT_AUTHENTICATED, SELECTED, State

if TYPE_CHECKING:
    from gateway.imap.session import Session

Handler = Callable[["Session", syntax.Command], Awaitable[Response]]


@dataclass(frozen=True)
class CommandSpec:
    handler: Handler
    states: frozenset[State]
    #: RFC 3501 §7.4.1: no EXPUNGE response while FETCH, STORE or SEARCH answer.
    expunge_allowed: bool = True


_ANY = frozenset({NOT_AUTHENTICATED, AUTHENTICATED, SELECTED})
_NOT_AUTH = frozenset({NOT_AUTHENTICATED})
_AUTH = frozenset({AUTHENTICATED, SELECTED})
_SELECTED = frozenset({SELECTED})

COMMANDS: dict[str, CommandSpec] = {
    # RFC 3501 §6.1 any state
    "CAPABILITY": CommandSpec(any_state.cmd_capability, _ANY),
    "NOOP": CommandSpec(any_state.cmd_noop, _ANY),
    "LOGOUT": CommandSpec(any_state.cmd_logout, _ANY),
    "ID": CommandSpec(any_state.cmd_id, _ANY),  # RFC 2971 §3.1
    # RFC 3501 §6.2 not authenticated
    "STARTTLS": CommandSpec(not_authenticated.cmd_starttls, _NOT_AUTH),
    "AUTHENTICATE": CommandSpec(not_authenticated.cmd_authenticate, _NOT_AUTH),
    "LOGIN": CommandSpec(not_authenticated.cmd_login, _NOT_AUTH),
    # RFC 3501 §6.3 authenticated (and selected)
    "SELECT": CommandSpec(authenticated.cmd_select, _AUTH),
    "EXAMINE": CommandSpec(authenticated.cmd_select, _AUTH),
    "CREATE": CommandSpec(authenticated.cmd_create, _AUTH),
    "DELETE": CommandSpec(authenticated.cmd_delete, _AUTH),
    "RENAME": CommandSpec(authenticated.cmd_rename, _AUTH),
    "SUBSCRIBE": CommandSpec(authenticated.cmd_subscribe, _AUTH),
    "UNSUBSCRIBE": CommandSpec(authenticated.cmd_subscribe, _AUTH),
    "LIST": CommandSpec(authenticated.cmd_list, _AUTH),
    "LSUB": CommandSpec(authenticated.cmd_list, _AUTH),
    "STATUS": CommandSpec(authenticated.cmd_status, _AUTH),
    "APPEND": CommandSpec(authenticated.cmd_append, _AUTH),
    "NAMESPACE": CommandSpec(authenticated.cmd_namespace, _AUTH),  # RFC 2342 §5
    "ENABLE": CommandSpec(authenticated.cmd_enable, _AUTH),  # RFC 5161 §3.1
    "IDLE": CommandSpec(authenticated.cmd_idle, _AUTH),  # RFC 2177 §3
    # RFC 3501 §6.4 selected
    "CHECK": CommandSpec(selected.cmd_check, _SELECTED),
    "CLOSE": CommandSpec(selected.cmd_close, _SELECTED),
    "UNSELECT": CommandSpec(selected.cmd_unselect, _SELECTED),  # RFC 3691 §2
    "EXPUNGE": CommandSpec(selected.cmd_expunge, _SELECTED),
    "UID EXPUNGE": CommandSpec(selected.cmd_expunge, _SELECTED),  # RFC 4315 §2.1
    "SEARCH": CommandSpec(selected.cmd_search, _SELECTED, expunge_allowed=False),
    "FETCH": CommandSpec(selected.cmd_fetch, _SELECTED, expunge_allowed=False),
    "STORE": CommandSpec(selected.cmd_store, _SELECTED, expunge_allowed=False),
    "COPY": CommandSpec(selected.cmd_copy, _SELECTED),
    "MOVE": CommandSpec(selected.cmd_copy, _SELECTED),  # RFC 6851 §3.1
    # RFC 3501 §6.4.8: the UID forms may be followed by EXPUNGE responses
    "UID SEARCH": CommandSpec(selected.cmd_search, _SELECTED),
    "UID FETCH": CommandSpec(selected.cmd_fetch, _SELECTED),
    "UID STORE": CommandSpec(selected.cmd_store, _SELECTED),
    "UID COPY": CommandSpec(selected.cmd_copy, _SELECTED),
    "UID MOVE": CommandSpec(selected.cmd_copy, _SELECTED),
}
