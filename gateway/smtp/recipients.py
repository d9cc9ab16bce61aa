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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mailcore.contracts import Resolve

from gateway.functions import FunctionClient
from gateway.smtp import replies
from gateway.smtp.grammar import Mailbox, is_domain, is_dot_string
from gateway.smtp.replies import Reply

INGEST = "IngestFunction"
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


async def _resolve(functions: FunctionClient, address: str) -> dict[str, Any]:
    """One ``resolve`` call; TemporaryFailure propagates (the session answers 451 4.3.0)."""
    return await functions.call(INGEST, Resolve(address))


def _verdict(result: dict[str, Any]) -> Verdict:
    if not result.get("ok"):
        return Verdict(replies.S501_BAD_RECIPIENT)  # the function could not read the address
    if not result.get("local_domain"):
        return DENIED
    if not result.get("deliverable"):
        return UNKNOWN
    return Verdict(replies.S250_RECIPIENT_OK, str(result["recipient"]))


async def check_recipient(functions: FunctionClient, mailbox: Mailbox) -> Verdict:
    """Accept, refuse as unknown, or refuse as relaying (RFC 5321 §3.9, §7.1)."""
    local, domain = mailbox.unquoted_local_part, mailbox.domain
    for _ in range(MAX_ROUTING_STEPS + 1):
        if domain.startswith("["):
            return DENIED  # none of our domains is an address literal
        if is_dot_string(local) and not _ROUTING.search(local):
            return _verdict(await _resolve(functions, f"{local}@{domain}"))
        # Routing, or a quoted local part no mailbox here can have: is the domain ours at all?
        probe = await _resolve(functions, f"postmaster@{domain}")
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
    verdict = _verdict(await _resolve(functions, f"postmaster@{hostname}"))
    return verdict if verdict.accepted else UNKNOWN
