"""The gateway process: binds every listener and runs each connection's protocol.

Until the protocol issues land, each listener greets in its protocol's words and closes:
SMTP 421 (RFC 5321 §3.8), IMAP ``* BYE`` (RFC 3501 §7.1.5), POP3 ``-ERR`` (RFC 1939 §4).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from gateway.config import IMPLICIT_TLS, PROTOCOL, GatewayConfig
from gateway.functions import FunctionClient
from gateway.tls import self_signed, server_context

log = logging.getLogger(__name__)

_FAREWELL = {
    "smtp": "421 4.3.2 {host} Service not available, closing transmission channel\r\n",
    "imap": "* BYE {host} IMAP service not available yet\r\n",
    "pop3": "-ERR {host} POP3 service not available yet\r\n",
}


class Gateway:
    def __init__(self, config: GatewayConfig, functions: FunctionClient, tls_dir: Path = Path(".local/tls")) -> None:
        self.config = config
        self.functions = functions
        self.listening: dict[str, tuple[str, int]] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._tls_dir = tls_dir
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
                lambda r, w, name=listener: self._greet_and_close(name, r, w),
                host=self.config.bind,
                port=port,
                ssl=self.tls if listener in IMPLICIT_TLS else None,
            )
            self._servers.append(server)
            host, bound_port = server.sockets[0].getsockname()[:2]
            self.listening[listener] = (host, bound_port)
            log.info("listening: %s on %s:%d", listener, host, bound_port)

    async def _greet_and_close(self, listener: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(_FAREWELL[PROTOCOL[listener]].format(host=self.config.hostname).encode())
            await writer.drain()
        except (ConnectionError, ssl.SSLError) as error:
            log.info("%s: client went away: %s", listener, error)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, ssl.SSLError):
                pass

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
