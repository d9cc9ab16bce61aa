"""The gateway process: binds every listener and runs each connection's protocol.

Each protocol package exposes ``async def serve(conn: Connection) -> None``; it owns the
connection until it returns; whatever it raises is logged here and never reaches the
client.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailcore.aws import Clients

from gateway import imap, pop3, smtp
from gateway.config import IMPLICIT_TLS, PROTOCOL, GatewayConfig
from gateway.connlimits import ConnectionCounter, Slot
from gateway.functions import FunctionClient
from gateway.imap.responses import UNAVAILABLE
from gateway.pop3.replies import SYS_TEMP
from gateway.proxy import ProxyHeaderError, read_header
from gateway.smtp import replies as smtp_replies
from gateway.smtp import submission
from gateway.smtp.recipients import FOREIGN, ForeignDomains
from gateway.tls import ServerTls, self_signed, start_implicit_tls

log = logging.getLogger(__name__)

#: ``GATEWAY_DRAIN_SECONDS``: how long a drain lets sessions finish their work; the
#: container's ``StopTimeout`` (template.yaml) must leave room above it.
DEFAULT_DRAIN_SECONDS = 25.0
#: After the drain's deadline: time for the goodbyes, S3 aborts and lock releases.
_SETTLE_SECONDS = 5.0


def drain_seconds(env: Mapping[str, str] | None = None) -> float:
    env = os.environ if env is None else env
    return float(env.get("GATEWAY_DRAIN_SECONDS") or DEFAULT_DRAIN_SECONDS)


class Drained(Exception):
    """A session reached its next command wait while the gateway drains: it is over."""


@dataclass
class Connection:
    """One client connection and what its protocol may use."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    listener: str
    config: GatewayConfig
    functions: FunctionClient
    certificates: ServerTls
    services: dict[str, Any] = field(default_factory=dict)
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: The client's address from a PROXY protocol header, when the listener expects one.
    proxied: tuple[str, int] | None = None
    #: This connection's place in the gateway's connection limits (gateway/connlimits.py).
    slot: Slot | None = None
    #: The gateway drains: the session ends at its next command wait (:meth:`idle`).
    draining: bool = field(default=False, init=False)
    #: The protocol waits for the client's next command (:meth:`idle`).
    waiting: bool = field(default=False, init=False)

    @property
    def peer(self) -> tuple[str, int]:
        """The client: the PROXY header's address if there was one, else the socket's peer."""
        if self.proxied is not None:
            return self.proxied
        peer = self.writer.get_extra_info("peername") or ("unknown", 0)
        return (str(peer[0]), int(peer[1]))

    @property
    def tls(self) -> ssl.SSLContext:
        """The server context in use now (a renewed certificate replaces it)."""
        return self.certificates.context

    def hold_user(self, user: str) -> bool:
        """Count this connection as ``user``'s (IMAP login); False when the user has too many."""
        return self.slot is None or self.slot.hold_user(user)

    @property
    def secure(self) -> bool:
        return self.writer.get_extra_info("ssl_object") is not None

    @contextlib.contextmanager
    def idle(self) -> Iterator[None]:
        """Around the wait for the client's next command (IMAP IDLE too): nothing is half
        done there, so a drain cancels the session at once; entered once the drain has
        begun, it ends the session (:class:`Drained`)."""
        if self.draining:
            raise Drained
        self.waiting = True
        try:
            yield
        finally:
            self.waiting = False


Serve = Callable[[Connection], Awaitable[None]]

def protocols() -> dict[str, Serve]:
    """Protocol name -> its ``serve``.

    A listener's own name, when present, takes precedence over its protocol's: the
    "smtp" listener (port 25) speaks SMTP in the MX role; "submission" (587, STARTTLS)
    and "submissions" (465, wrapped in TLS by the gateway: RFC 8314 §3.3) speak it as
    a message submission agent with AUTH (RFC 6409, gateway/smtp/submission.py).
    """
    return {
        "smtp": smtp.serve,
        "submission": submission.serve,
        "submissions": submission.serve,
        "imap": imap.serve,
        "pop3": pop3.serve,
    }


def refusal(protocol: str, hostname: str) -> bytes:
    """What a connection beyond the gateway's connection limits is told before it is closed."""
    # RFC 3463: 4.7.0 security or policy status.
    return closing(protocol, hostname, "Too many connections, try again later", smtp_replies.S421_TOO_MANY_CONNECTIONS)


def goodbye(protocol: str, hostname: str) -> bytes:
    """What a session the drain ends is told before the connection closes."""
    # RFC 3463 4.3.2: system not accepting network messages.
    return closing(protocol, hostname, "Service shutting down", smtp_replies.S421_SHUTTING_DOWN)


def closing(protocol: str, hostname: str, text: str, smtp_reply: smtp_replies.Reply) -> bytes:
    """The last words to a client before the gateway closes the connection."""
    if protocol == "smtp":
        # RFC 5321 §3.8: 421 <domain>, then close.
        return smtp_reply.with_text(f"{hostname} {text}").render()
    if protocol == "imap":
        return f"* BYE [{UNAVAILABLE}] {text}\r\n".encode()  # RFC 3501 §7.1.5, RFC 5530 §3
    return f"-ERR [{SYS_TEMP}] {text}\r\n".encode()  # RFC 3206 §4: a temporary condition


async def _close_at_once(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        functions: FunctionClient,
        tls_dir: Path = Path(".local/tls"),
        services: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.functions = functions
        # "aws": lazily created, request-counted AWS clients (S3 staging writes, blob reads).
        self.services: dict[str, Any] = services if services is not None else {"aws": Clients()}
        self.services.setdefault(FOREIGN, ForeignDomains.from_env())
        self.listening: dict[str, tuple[str, int]] = {}
        self._servers: list[asyncio.Server] = []
        self._tls_dir = tls_dir
        self._protocols = protocols()
        self.tls: ServerTls | None = None
        self._tls_reload: asyncio.Task[None] | None = None
        self.connections = ConnectionCounter(config.connection_limits)
        self.draining = False
        #: Running sessions; those the drain ends (cancelled, or told goodbye).
        self._sessions: dict[asyncio.Task[Any], Connection] = {}
        self._ending: set[asyncio.Task[Any]] = set()

    def _tls_context(self) -> ServerTls:
        if self.config.tls_cert_file and self.config.tls_key_file:
            cert, key = Path(self.config.tls_cert_file), Path(self.config.tls_key_file)
        else:
            cert, key = self_signed(self._tls_dir, self.config.hostname)
        return ServerTls(cert, key)

    async def start(self) -> None:
        self.tls = self._tls_context()
        if self.config.tls_reload_seconds > 0:
            self._tls_reload = asyncio.create_task(self.tls.watch(self.config.tls_reload_seconds))
        for listener, port in self.config.ports.items():
            # Implicit-TLS listeners too accept in the clear: a PROXY header precedes the
            # handshake (Gateway._admit), and the context in use is the one of the moment.
            server = await asyncio.start_server(
                functools.partial(self._run, listener), host=self.config.bind, port=port
            )
            self._servers.append(server)
            host, bound_port = server.sockets[0].getsockname()[:2]
            self.listening[listener] = (host, bound_port)
            log.info("listening: %s on %s:%d", listener, host, bound_port)
        if self.config.health_port:
            # The NLB target groups check health with a plain TCP connect.
            self._servers.append(await asyncio.start_server(_close_at_once, self.config.bind, self.config.health_port))

    async def _run(self, listener: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.tls is not None
        conn = Connection(reader, writer, listener, self.config, self.functions, self.tls, self.services)
        task = self._track(conn)
        try:
            if await self._admit(conn):
                await self._protocols.get(listener, self._protocols[PROTOCOL[listener]])(conn)
        except Drained:
            await self._goodbye(task, conn)
        except asyncio.CancelledError:
            if task not in self._ending:
                raise
            task.uncancel()  # the drain's own cancellation, handled here
            await self._goodbye(task, conn)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as error:
            log.info("%s %s: connection lost: %s", listener, conn.session_id, error)
        except Exception:
            # Never a traceback to the client, never a crash of the gateway.
            log.exception("%s %s: session failed", listener, conn.session_id)
        finally:
            self._sessions.pop(task, None)
            self._ending.discard(task)
            if conn.slot is not None:
                conn.slot.release()
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _admit(self, conn: Connection) -> bool:
        """What precedes the protocol: the PROXY header (HAProxy's proxy-protocol.txt), a
        slot in the connection limits for the client it names, and on an implicit-TLS
        listener the handshake (before the refusal too, which must travel in TLS).
        False: the connection is to be closed (a refused one has been told why)."""
        if conn.listener in self.config.proxy_protocol:
            if not self.connections.await_header():
                return False  # the gateway is full: dropped unanswered, as below
            try:
                header = await read_header(conn.reader, self.config.proxy_header_timeout)
            except ProxyHeaderError as error:
                # §2.1: no reply, the connection is dropped.
                log.warning("%s %s: %s dropped: %s", conn.listener, conn.session_id, conn.peer[0], error)
                return False
            finally:
                self.connections.header_done()
            conn.proxied = header.source
        conn.slot = self.connections.admit(conn.peer[0])
        if conn.listener in IMPLICIT_TLS:
            try:
                await start_implicit_tls(conn.reader, conn.writer, conn.tls, self.config.tls_handshake_timeout)
            except OSError as error:  # SSLError, a timeout, the client gone
                log.info("%s %s: TLS handshake with %s failed: %s", conn.listener, conn.session_id, conn.peer[0], error)
                return False
        if conn.slot is None:
            conn.writer.write(refusal(PROTOCOL[conn.listener], self.config.hostname))
            await conn.writer.drain()
            return False
        return True

    def _track(self, conn: Connection) -> asyncio.Task[Any]:
        """Keep the session for the drain (one that begins while it runs ends at its first wait)."""
        task = asyncio.current_task()
        assert task is not None
        self._sessions[task] = conn
        conn.draining = self.draining
        return task

    def _end(self, task: asyncio.Task[Any]) -> None:
        if task not in self._ending:
            self._ending.add(task)
            task.cancel()

    async def _goodbye(self, task: asyncio.Task[Any], conn: Connection) -> None:
        """The protocol's goodbye; a client that does not read it is cut off."""
        self._ending.add(task)
        log.info("%s %s: ended by the drain", conn.listener, conn.session_id)
        if conn.writer.transport.is_closing():
            return
        conn.writer.write(goodbye(PROTOCOL[conn.listener], self.config.hostname))
        try:
            async with asyncio.timeout(_SETTLE_SECONDS):
                await conn.writer.drain()
        except (TimeoutError, ConnectionError, ssl.SSLError):
            conn.writer.transport.abort()

    async def _settle(self, seconds: float) -> None:
        if self._sessions:
            await asyncio.wait(set(self._sessions), timeout=seconds)

    async def drain(self, deadline: float) -> None:
        """Stop gracefully (a Fargate task stop sends SIGTERM, then SIGKILL after the
        container's StopTimeout): stop accepting; end the sessions waiting for a command
        at once; let the others finish their work (a DATA transfer, a function call, an
        APPEND) for up to ``deadline`` seconds, ending each at its next command wait;
        then cancel the rest. Every session ended so is told the protocol's goodbye, and
        a cancelled transaction aborts its staging upload: the client got no 250, so it
        retries, and nothing is half-stored.
        """
        self.draining = True
        # start() adds the health listener last: closed first, the NLB sees the target go.
        for server in reversed(self._servers):
            server.close()
        log.info("draining %d session(s) for up to %g s", len(self._sessions), deadline)
        for task, conn in list(self._sessions.items()):
            conn.draining = True
            if conn.waiting:
                self._end(task)
        await self._settle(deadline)
        for task in list(self._sessions):
            self._end(task)
        await self._settle(_SETTLE_SECONDS)
        for conn in self._sessions.values():  # stuck even so: cut off
            conn.writer.transport.abort()
        if self._tls_reload is not None:
            self._tls_reload.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_SETTLE_SECONDS):
                for server in self._servers:
                    await server.wait_closed()  # Python 3.12+: until its connections are gone
        self._servers.clear()

    async def stop(self) -> None:
        """Stop now: a drain without a deadline."""
        await self.drain(0.0)
