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
import ssl
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailcore.aws import Clients

from gateway import imap, pop3, smtp
from gateway.config import IMPLICIT_TLS, PROTOCOL, GatewayConfig
from gateway.functions import FunctionClient
from gateway.smtp import submission
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
            await self._protocols.get(listener, self._protocols[PROTOCOL[listener]])(conn)
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
