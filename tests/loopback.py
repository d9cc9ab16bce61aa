"""The world outside, on loopback: remote MXs and SQS's event source mapping.

- :class:`Sink`: a real SMTP server (an aiosmtpd handler) with a script of replies;
  the fixtures (:mod:`tests.outbound`) run them on 127.0.0.21 and 127.0.0.22, one port
  for both; 127.0.0.23 refuses connections; 127.0.0.24 greets with 421
  (:class:`BusyServer`).
- :class:`QueuePump`: what Lambda's SQS event source does: receive a batch, call the
  function with an SQS event, delete what it did not report as failed. Its own SQS calls
  use a client outside :mod:`mailcore.aws`, so they are not counted as the function's.

Nothing here talks to anything outside 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from devstack.eventsource import SqsPoller

SINKS = ("127.0.0.21", "127.0.0.22")
REFUSING = "127.0.0.23"  # nothing listens: connection refused
BUSY = "127.0.0.24"  # greets "421": RFC 5321 §3.1, try the next MX
SCRIPTED = "127.0.0.25"  # a ScriptedServer, when a test starts one


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes
    tls: bool
    helo: str
    mail_options: list[str]


@dataclass
class Sink:
    """An aiosmtpd handler with a script: replies per recipient, a queue of DATA replies."""

    address: str
    messages: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: list[str] = field(default_factory=list)
    pipelining: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.rcpt_replies.clear()
            self.data_replies.clear()

    def to(self, recipient: str) -> list[Received]:
        with self.lock:
            return [m for m in self.messages if recipient in m.recipients]

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")  # RFC 2920
        return responses

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        reply = self.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            if self.data_replies:
                reply = self.data_replies.pop(0)
                if not reply.startswith("250"):
                    return reply
            self.messages.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.original_content,
                    session.ssl is not None,
                    session.host_name,
                    list(envelope.mail_options),
                )
            )
        return "250 2.0.0 OK queued"


class BusyServer:
    """Accepts and greets with 421 (RFC 5321 §3.1: the server is not available now)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_server((host, port))
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.sendall(b"421 4.3.2 Service not available, closing channel\r\n")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


class ScriptedServer:
    """A small SMTP server for what aiosmtpd does not show: it offers PIPELINING and
    STARTTLS (or the ``extensions`` given, DSN say, taking any parameters), answers
    STARTTLS with 220 and then garbage instead of a TLS handshake (when ``break_tls``), and
    keeps every chunk it reads, so a test sees what came in one write."""

    def __init__(
        self, host: str, port: int, break_tls: bool = True, extensions: tuple[str, ...] = ("PIPELINING", "STARTTLS", "8BITMIME")
    ) -> None:
        self.sock = socket.create_server((host, port))
        self.sock.settimeout(0.2)
        self.break_tls = break_tls
        self.ehlo = "".join(f"250-{e}\r\n" for e in ("scripted", *extensions[:-1])) + f"250 {extensions[-1]}\r\n"
        self.chunks: list[bytes] = []
        self.commands: list[list[str]] = []  # per connection
        self.messages: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        commands: list[str] = []
        self.commands.append(commands)
        conn.sendall(b"220 scripted ESMTP\r\n")
        buffer = b""
        while True:
            data = conn.recv(65536)
            if not data:
                return
            self.chunks.append(data)
            buffer += data
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                verb = line.split(b" ", 1)[0].upper().decode()
                commands.append(verb)
                if verb == "EHLO":
                    conn.sendall(self.ehlo.encode())
                elif verb == "STARTTLS" and self.break_tls:
                    conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                    conn.sendall(b"this is not a TLS server hello\r\n" * 4)
                    return
                elif verb == "DATA":
                    conn.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    while b"\r\n.\r\n" not in b"\r\n" + buffer:
                        more = conn.recv(65536)
                        if not more:
                            return
                        buffer += more
                    data_end = (b"\r\n" + buffer).index(b"\r\n.\r\n")
                    self.messages.append(buffer[:data_end])
                    buffer = buffer[data_end + 3 :]
                    conn.sendall(b"250 2.0.0 Ok: queued\r\n")
                elif verb == "QUIT":
                    conn.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    conn.sendall(b"250 2.0.0 Ok\r\n")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@dataclass
class RemoteMx:
    port: int
    sinks: dict[str, Sink]
    busy: BusyServer

    def reset(self) -> None:
        for sink in self.sinks.values():
            sink.reset()

    def received(self, recipient: str) -> list[Received]:
        return [m for sink in self.sinks.values() for m in sink.to(recipient)]


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def tls_context(directory: Path) -> ssl.SSLContext:
    from gateway.tls import self_signed

    cert, key = self_signed(directory, "mx.remote.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class QueuePump(SqsPoller):
    """Lambda's SQS event source mapping, one batch at a time, on the OutboundQueue."""

    def __init__(self, queue_url: str, invoke: Any) -> None:
        super().__init__(boto3.client("sqs"), queue_url, invoke)  # not a mailcore client: not counted



