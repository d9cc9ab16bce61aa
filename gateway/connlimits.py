"""Connection limits of one gateway process: in total, per client address, per IMAP user.

A connection is counted from the moment its client is known (after the PROXY header, so
the limit applies to the real client and not to the load balancer) until it ends. One
over a limit gets its protocol's "temporary, try later" answer and is closed, so a
flood from one address cannot take the slots of everyone else, and sessions already
open go on undisturbed. Connections whose PROXY header is still awaited (each for at most
the header timeout) have their client unknown, so they are counted apart, up to the same
total: one more is dropped at once, unanswered as the PROXY protocol drops
(proxy-protocol.txt §2.1). Silent connections thus hold at most that many sockets, and
cannot take the slots of clients already known. The counts are per process: each gateway copy behind the load
balancer enforces its own.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    #: Open connections per gateway process, all listeners together (each holds a socket
    #: and some buffers; the task's file limit is 65536).
    total: int = 5000
    #: Per client address: Postfix's anvil default (``smtpd_client_connection_count_limit``).
    per_client: int = 50
    #: IMAP sessions logged in as one user, from any address. Dovecot's
    #: ``mail_max_userip_connections`` allows 10 per user and address; a user's phone,
    #: laptop and desktop come from different addresses, hence twice that.
    per_user: int = 20

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ConnectionLimits:
        env = os.environ if env is None else env
        return cls(
            total=int(env.get("GATEWAY_MAX_CONNECTIONS") or cls.total),
            per_client=int(env.get("GATEWAY_MAX_CONNECTIONS_PER_CLIENT") or cls.per_client),
            per_user=int(env.get("IMAP_MAX_CONNECTIONS_PER_USER") or cls.per_user),
        )


def client_key(host: str) -> str:
    """The address a client is counted under: an IPv4-mapped IPv6 address is its IPv4
    address, so a dual-stack listener does not count one client twice."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class ConnectionCounter:
    """The gateway's open connections, by client and by logged-in IMAP user."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.open = 0
        #: Connections whose PROXY header has not arrived (their client is not known yet).
        self.awaiting = 0
        self.clients: Counter[str] = Counter()
        self.users: Counter[str] = Counter()

    def await_header(self) -> bool:
        """Count a connection whose PROXY header is yet to come; False when as many as the
        total are awaited. :meth:`header_done` ends the count, whatever the header's fate."""
        if self.awaiting >= self.limits.total:
            log.warning("connection dropped before its PROXY header: %d headers awaited, the limit", self.awaiting)
            return False
        self.awaiting += 1
        return True

    def header_done(self) -> None:
        self.awaiting -= 1

    def admit(self, host: str) -> Slot | None:
        """A slot for a new connection from ``host``, or None when a limit is reached."""
        client = client_key(host)
        if self.open >= self.limits.total:
            log.warning("connection from %s refused: %d open, the limit", client, self.open)
            return None
        if self.clients[client] >= self.limits.per_client:
            log.warning("connection from %s refused: %d open from it, the limit", client, self.clients[client])
            return None
        self.open += 1
        self.clients[client] += 1
        return Slot(self, client)


class Slot:
    """One admitted connection's share of the counts, given back once when it ends."""

    def __init__(self, counter: ConnectionCounter, client: str) -> None:
        self._counter = counter
        self._client = client
        self._user: str | None = None
        self._released = False

    def hold_user(self, user: str) -> bool:
        """Count this connection as ``user``'s (at login); False when the user is at the limit."""
        counter = self._counter
        if counter.users[user] >= counter.limits.per_user:
            log.warning("login of %s from %s refused: %d sessions open, the limit", user, self._client, counter.users[user])
            return False
        counter.users[user] += 1
        self._user = user
        return True

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        counter = self._counter
        counter.open -= 1
        _decrement(counter.clients, self._client)
        if self._user is not None:
            _decrement(counter.users, self._user)


def _decrement(counts: Counter[str], key: str) -> None:
    """One fewer; a key at zero is dropped so the counters hold only open connections."""
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]
