"""The gateway process: binds every listener and runs each connection's protocol.

Each protocol package exposes ``async def serve(conn: Connection) -> None``; it owns the
connection until it returns. A protocol that has not landed yet greets in its own words
and closes: SMTP 421 (RFC 5321 §3.8), IMAP ``* BYE`` (RFC 3501 §7.1.5), POP3 ``-ERR``
(RFC 1939 §4).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailcore.aws import Clients

from gateway.config import IMPLICIT_TLS, PROTOCOL, GatewayConfig
from gateway.functions import FunctionClient
from gateway.tls import self_signed, server_context

log = logging.getLogger(__name__)


@dataclass
class Connection:
    """One client connection and what its protocol may use."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    listener: str
    config: GatewayConfig
    functions: FunctionClient
    tls: ssl.SSLContext
    services: dict[str, Any] = field(default_factory=dict)
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    @property
    def peer(self) -> tuple[str, int]:
        peer = self.writer.get_extra_info("peername") or ("unknown", 0)
        return (str(peer[0]), int(peer[1]))

    @property
    def secure(self) -> bool:
        return self.writer.get_extra_info("ssl_object") is not None


Serve = Callable[[Connection], Awaitable[None]]

_FAREWELL = {
    "smtp": "421 4.3.2 {host} Service not available, closing transmission channel\r\n",
    "imap": "* BYE {host} IMAP service not available yet\r\n",
    "pop3": "-ERR {host} POP3 service not available yet\r\n",
}


async def farewell(conn: Connection) -> None:
    conn.writer.write(_FAREWELL[PROTOCOL[conn.listener]].format(host=conn.config.hostname).encode())
    await conn.writer.drain()


def protocols() -> dict[str, Serve]:
    """Protocol name -> its ``serve``; protocols not yet built say farewell."""
    return {"smtp": farewell, "imap": farewell, "pop3": farewell}


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
        self.services = services if services is not None else {"aws": Clients()}
        self.listening: dict[str, tuple[str, int]] = {}
        self._servers: list[asyncio.Server] = []
        self._tls_dir = tls_dir
        self._protocols = protocols()
        self.tls: ssl.SSLContext | None = None

    def _tls_context(self) -> ssl.SSLContext:
        if self.config.tls_cert_file and self.config.tls_key_file:
            cert, key = Path(self.config.tls_cert_file), Path(self.config.tls_key_file)
        else:
            cert, key = self_signed(self._tls_dir, self.config.hostname)
        return server_context(cert, key)

    async def start(self) -> None:
        self.tls = self._tls_context()
        for listener, port in self.config.ports.items():
            server = await asyncio.start_server(
                functools.partial(self._run, listener),
                host=self.config.bind,
                port=port,
                ssl=self.tls if listener in IMPLICIT_TLS else None,
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
        try:
            await self._protocols[PROTOCOL[listener]](conn)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as error:
            log.info("%s %s: connection lost: %s", listener, conn.session_id, error)
        except Exception:
            # Never a traceback to the client, never a crash of the gateway.
            log.exception("%s %s: session failed", listener, conn.session_id)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
