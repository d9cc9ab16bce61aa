"""May this RCPT be accepted? The MX role's relay policy, decided with the IngestFunction.

The listener on port 25 never authenticates anybody, so it accepts only recipients the
``resolve`` operation calls deliverable: local users, aliases, catch-alls and
plus-addresses (RFC 5233). Everything else is refused at RCPT time:

* a domain that is not ours: ``554 5.7.1 Relay access denied`` (DESIGN.md contract 6);
* a local domain without such a mailbox: ``550 5.1.1`` (RFC 3463 X.1.1);
* an address literal (``user@[192.0.2.1]``): never one of our domains, so relaying.

Sender-specified routing is read the way Postfix reads it, and never followed outward:
the source route of ``<@a,@b:user@c>`` is ignored (RFC 5321 §3.6.1, Appendix C), and
``user%elsewhere@ours``, ``elsewhere!user@ours`` and ``"user@elsewhere"@ours`` name
``user@elsewhere`` once the outer domain is known to be ours (Postfix
``allow_percent_hack``, ``swap_bangpath``), so that address must be local in turn.

A domain the function called not ours is remembered by the gateway process for as long
as the function's own cache keeps a refusal (``RESOLVE_NEGATIVE_CACHE_SECONDS``, 10 s):
further recipients there need no call (:class:`ForeignDomains`). On port 25 that answers
relay probes at once; on submission it saves the one Lambda invocation each outbound
recipient cost.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mailcore.accounts import MAX_CACHED, NEGATIVE_TTL, ResolutionCache
from mailcore.addresses import Address, parse_address
from mailcore.contracts import Resolve
from mailcore.errors import InvalidInput

from gateway.functions import FunctionClient
from gateway.smtp import replies
from gateway.smtp.grammar import Mailbox, is_domain, is_dot_string
from gateway.smtp.replies import Reply

INGEST = "IngestFunction"
#: The gateway's ``services`` entry holding its :class:`ForeignDomains`.
FOREIGN = "foreign_domains"
#: How many routing layers (``a%b%c@d``) are unwrapped before we give up.
MAX_ROUTING_STEPS = 3
_ROUTING = re.compile(r"[@%!]")


@dataclass(frozen=True)
class Verdict:
    reply: Reply
    address: str = ""  # the normalized recipient to deliver to, when accepted

    @property
    def accepted(self) -> bool:
        return self.reply.code == 250


DENIED = Verdict(replies.S554_RELAY_DENIED)
UNKNOWN = Verdict(replies.S550_NO_SUCH_USER)


def unroute(local_part: str) -> tuple[str, str] | None:
    """One layer of sender-specified routing in a local part, as Postfix unwraps it:
    ``user@elsewhere`` and ``user%elsewhere`` at the rightmost sign, ``elsewhere!user`` at
    the first bang. None when the parts are empty or the host is not a domain."""
    if "@" in local_part or "%" in local_part:
        sign = "@" if "@" in local_part else "%"
        user, _, host = local_part.rpartition(sign)
    else:
        host, _, user = local_part.partition("!")
    if not user or not host or not (is_domain(host) or host.startswith("[")):
        return None
    return user, host


class ForeignDomains:
    """Domains that are not ours, each until ``seconds`` after the function said so; at
    most ``limit`` of them (a flood of made-up domains empties the memory, not more)."""

    def __init__(
        self, seconds: float = NEGATIVE_TTL, limit: int = MAX_CACHED, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds, self.limit, self.clock = seconds, limit, clock
        self._until: dict[str, float] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ForeignDomains:
        """As long as the function's :class:`mailcore.accounts.ResolutionCache` keeps a refusal."""
        return cls(ResolutionCache.from_env(env).negative_ttl)

    def knows(self, domain: str) -> bool:
        until = self._until.get(domain)
        if until is None:
            return False
        if until <= self.clock():
            del self._until[domain]
            return False
        return True

    def learn(self, domain: str) -> None:
        if self.seconds <= 0:
            return
        if len(self._until) >= self.limit:
            self._until.clear()
        self._until[domain] = self.clock() + self.seconds


async def resolve(functions: FunctionClient, address: str, foreign: ForeignDomains | None = None) -> dict[str, Any]:
    """The ``resolve`` operation's answer for ``address``: from ``foreign`` when its domain
    is known not to be ours, else one call; TemporaryFailure propagates (the session
    answers 451 4.3.0)."""
    try:
        parsed: Address | None = parse_address(address)
    except InvalidInput:
        parsed = None  # the function answers (not ok: 501)
    if foreign is not None and parsed is not None and foreign.knows(parsed.domain):
        return {"ok": True, "recipient": str(parsed), "local_domain": False, "deliverable": False}
    result = await functions.call(INGEST, Resolve(address))
    if foreign is not None and parsed is not None and result.get("ok") and not result.get("local_domain"):
        foreign.learn(parsed.domain)
    return result


def _verdict(result: dict[str, Any]) -> Verdict:
    if not result.get("ok"):
        return Verdict(replies.S501_BAD_RECIPIENT)  # the function could not read the address
    if not result.get("local_domain"):
        return DENIED
    if not result.get("deliverable"):
        return UNKNOWN
    return Verdict(replies.S250_RECIPIENT_OK, str(result["recipient"]))


async def check_recipient(functions: FunctionClient, mailbox: Mailbox, foreign: ForeignDomains | None = None) -> Verdict:
    """Accept, refuse as unknown, or refuse as relaying (RFC 5321 §3.9, §7.1)."""
    local, domain = mailbox.unquoted_local_part, mailbox.domain
    for _ in range(MAX_ROUTING_STEPS + 1):
        if domain.startswith("["):
            return DENIED  # none of our domains is an address literal
        if is_dot_string(local) and not _ROUTING.search(local):
            return _verdict(await resolve(functions, f"{local}@{domain}", foreign))
        # Routing, or a quoted local part no mailbox here can have: is the domain ours at all?
        probe = await resolve(functions, f"postmaster@{domain}", foreign)
        if not probe.get("ok") or not probe.get("local_domain"):
            return DENIED
        routed = unroute(local)
        if routed is None:
            return UNKNOWN
        local, domain = routed
    return UNKNOWN


async def check_postmaster(functions: FunctionClient, hostname: str) -> Verdict:
    """RFC 5321 §4.1.1.3 ``<Postmaster>`` without a domain: postmaster of our host name.

    Deviation from RFC 5321 §4.5.1 (MUST accept it): when the gateway's host name is not
    a local domain with a postmaster, there is nowhere to deliver, and we say 550 5.1.1.
    """
    verdict = _verdict(await resolve(functions, f"postmaster@{hostname}"))
    return verdict if verdict.accepted else UNKNOWN
