"""Commands legal in any state: RFC 3501 §6.1, RFC 2971 ID."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.imap import syntax
from gateway.imap.responses import Response, ok, string, untagged

if TYPE_CHECKING:
    from gateway.imap.session import Session

#: RFC 2971 §3.3 "name" and "version".
IMPLEMENTATION = "serverless-mail"
VERSION = "0.1.0"


async def cmd_capability(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.1.1."""
    return ok("Capability completed", untagged=[untagged("CAPABILITY " + " ".join(s.capabilities()))])


async def cmd_noop(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.1.2 (and §6.4.1 CHECK): a chance for updates. The poll is fresh (shared
    with every session of this gateway that asks meanwhile); the updates follow at the
    end of the command."""
    if s.subscription is not None:
        await s.services.watcher.fresh()
    return ok("NOOP completed")


async def cmd_logout(s: Session, c: syntax.Command) -> Response:
    """RFC 3501 §6.1.3: BYE, then the tagged OK, then the connection closes."""
    s.deselect()
    return Response("OK", "LOGOUT completed", untagged=[untagged(f"BYE {s.host} logging out")], close=True)


async def cmd_id(s: Session, c: syntax.Command) -> Response:
    """RFC 2971 §3.1: the client's fields are only logged; ours go back."""
    fields = [(b"name", IMPLEMENTATION.encode()), (b"version", VERSION.encode())]
    body = b" ".join(string(k) + b" " + string(v) for k, v in fields)
    return ok("ID completed", untagged=[b"* ID (" + body + b")\r\n"])
