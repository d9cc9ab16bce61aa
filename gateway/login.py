"""What SMTP AUTH, IMAP LOGIN/AUTHENTICATE and POP3 USER/PASS/AUTH share: one
AuthFunction call with the client's address, its answer, and the pause before a
failure is answered.

The AuthFunction keeps the failure counters of every gateway copy (mailcore.throttle):
it refuses a client that failed too often (each protocol answers with its "try again
later") and says how long to hold back the answer to a failure. The pause is the longer
of that and the protocol's own ``auth_failure_delay``; it goes through
``Gateway.services["sleep"]`` when set, so that tests record the delays instead of
waiting for them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailcore.contracts import Authenticate

if TYPE_CHECKING:
    from gateway.server import Connection

AUTH_FUNCTION = "AuthFunction"
#: The AuthFunction's code for a try refused by the throttle (mailcore.errors.Throttled).
THROTTLED = "THROTTLED"

Sleep = Callable[[float], Awaitable[Any]]


@dataclass(frozen=True)
class AuthResult:
    #: The authenticated user; "" when the credentials were refused.
    principal: str = ""
    #: Refused by the throttle, the password unchecked.
    throttled: bool = False
    #: Seconds the function asks the answer to a failure to wait.
    delay: float = 0.0


async def authenticate(conn: Connection, username: str, password: str) -> AuthResult:
    """Ask the AuthFunction; raises :class:`gateway.functions.TemporaryFailure`."""
    result = await conn.functions.call(AUTH_FUNCTION, Authenticate(username, password, conn.peer[0]))
    if result.get("ok"):
        return AuthResult(principal=str(result.get("user") or ""))
    return AuthResult(throttled=result.get("error") == THROTTLED, delay=_seconds(result.get("delay")))


async def pause(conn: Connection, *delays: float) -> None:
    """Wait the longest of ``delays`` (the protocol's, the function's) before answering
    a failure or a refusal."""
    sleep: Sleep = conn.services.get("sleep") or asyncio.sleep
    await sleep(max(delays, default=0.0))


def _seconds(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0.0
