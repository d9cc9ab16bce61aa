"""Graceful drain on SIGTERM (a Fargate task stop): a real signal, caught by the handler
``python -m gateway`` installs (gateway.__main__.serve_until_signalled).

The gateway runs in this test's main thread, where an event loop can take signals; the
clients are asyncio streams in the same loop. Replies and outcomes are asserted (what
is stored, what staging holds, what a client is told), never elapsed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from mailcore.aws import Clients
from mailcore.locks import lock_key
from mailcore.store import Store

from gateway.__main__ import serve_until_signalled
from gateway.config import LISTENERS, GatewayConfig
from gateway.functions import FunctionClient
from gateway.server import Gateway

from .test_pop3 import deliver_to, inbox_uids, message
from .test_smtp import inbox

HOST = "mx.drain.example"
PASSWORD = "correct horse"
SMTP_GOODBYE = f"421 4.3.2 {HOST} Service shutting down".encode()  # RFC 5321 §3.8, RFC 3463
IMAP_GOODBYE = b"* BYE [UNAVAILABLE] Service shutting down"  # RFC 3501 §7.1.5
POP3_GOODBYE = b"-ERR [SYS/TEMP] Service shutting down"  # RFC 3206 §4
#: Larger than one S3 part (5 MiB): the staging upload of the message is multipart.
BIG_BODY = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 6000


class Peer:
    """A client connection in the test's event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, address: tuple[str, int]) -> Peer:
        reader, writer = await asyncio.open_connection(*address)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self) -> bytes:
        return (await self.reader.readline()).rstrip(b"\r\n")

    async def until(self, prefix: bytes) -> bytes:
        """Lines up to the first that starts with ``prefix``; that line."""
        while True:
            line = await self.line()
            if line.startswith(prefix) or not line:
                return line

    async def smtp_reply(self) -> bytes:
        """The last line of a (multi-line) SMTP reply."""
        line = await self.line()
        while line[3:4] == b"-":
            line = await self.line()
        return line

    async def closed(self) -> bool:
        return await self.reader.read() == b""


@contextlib.asynccontextmanager
async def serving(tls_dir: Path, mail_bucket: str, transport: Any, deadline: float) -> AsyncIterator[Gateway]:
    """A gateway in this loop, serving until SIGTERM, then draining for ``deadline`` s;
    the block must send the signal. On leaving, the drain has finished."""
    config = GatewayConfig(
        bind="127.0.0.1", ports={name: 0 for name in LISTENERS}, hostname=HOST, mail_bucket=mail_bucket
    )
    gw = Gateway(config, FunctionClient(transport), tls_dir=tls_dir, services={"aws": Clients()})
    await gw.start()
    task = asyncio.create_task(serve_until_signalled(gw, deadline))
    await asyncio.sleep(0)  # the handlers are installed
    try:
        yield gw
        async with asyncio.timeout(deadline + 30):
            await task
    finally:
        if not task.done():
            task.cancel()
            await gw.stop()


async def eventually(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


def sigterm() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def run(scenario: Any) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, 120))


@pytest.fixture
def start(local_stack, function_transport, tmp_path) -> Callable[[float], Any]:
    return lambda deadline: serving(tmp_path, local_stack.resources["MailBucket"], function_transport, deadline)


async def smtp_in_data(gw: Gateway, user: str) -> Peer:
    smtp = await Peer.open(gw.listening["smtp"])
    assert (await smtp.smtp_reply()).startswith(b"220 ")
    await smtp.send(f"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<{user}>\r\nDATA\r\n".encode())
    for expected in (b"250 ", b"250 ", b"250 ", b"354 "):
        assert (await smtp.smtp_reply()).startswith(expected)
    return smtp


def session_id(gw: Gateway, listener: str) -> str:
    """The running session's id (staging keys begin with it)."""
    (sid,) = [conn.session_id for conn in gw._sessions.values() if conn.listener == listener]
    return sid


def staging(store: Store, sid: str) -> tuple[list[Any], list[Any]]:
    """The session's open multipart uploads and its objects under ``staging/``."""
    s3, bucket, prefix = store.blobs.s3, store.blobs.bucket, f"staging/{sid}-"
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])
    objects = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return uploads, objects


# -- SMTP -----------------------------------------------------------------------------------


def test_data_that_finishes_within_the_deadline_is_delivered_then_421(start, store, user):
    async def scenario() -> None:
        async with start(20.0) as gw:
            smtp = await smtp_in_data(gw, user)
            await smtp.send(b"Subject: drained\r\n\r\nfirst half\r\n")
            sigterm()
            await eventually(lambda: gw.draining)
            # Not accepting: a new connection is refused.
            with pytest.raises(OSError):
                await Peer.open(gw.listening["smtp"])
            await smtp.send(b"second half\r\n.\r\n")
            assert (await smtp.smtp_reply()).startswith(b"250 2.0.0 ")
            # At the next command wait: the goodbye, then close.
            assert await smtp.smtp_reply() == SMTP_GOODBYE
            assert await smtp.closed()

    run(scenario())
    (stored,) = inbox(store, user)
    assert stored.endswith(b"Subject: drained\r\n\r\nfirst half\r\nsecond half\r\n")


def test_data_stalled_past_the_deadline_gets_421_and_nothing_is_half_stored(start, store, user):
    async def scenario() -> str:
        async with start(1.0) as gw:
            smtp = await smtp_in_data(gw, user)
            sid = session_id(gw, "smtp")
            await smtp.send(BIG_BODY)  # and no end of data: the client stalls
            await eventually(lambda: bool(staging(store, sid)[0]))  # the multipart upload began
            sigterm()
            assert await smtp.smtp_reply() == SMTP_GOODBYE
            assert await smtp.closed()
        return sid

    sid = run(scenario())
    assert inbox(store, user) == []  # not indexed: the client got no 250, it retries
    assert staging(store, sid) == ([], [])  # the upload aborted, no staging object


# -- IMAP and POP3 --------------------------------------------------------------------------


def test_idle_imap_idle_command_and_pop3_sessions_get_goodbyes_and_nothing_is_deleted(start, store, user):
    uid = deliver_to(store, user, message(1))

    async def scenario() -> None:
        async with start(20.0) as gw:
            waiting = await Peer.open(gw.listening["imap"])
            await waiting.send(f'a1 LOGIN "{user}" "{PASSWORD}"\r\n'.encode())
            assert (await waiting.until(b"a1 ")).startswith(b"a1 OK")
            idling = await Peer.open(gw.listening["imap"])
            await idling.send(f'b1 LOGIN "{user}" "{PASSWORD}"\r\nb2 SELECT INBOX\r\nb3 IDLE\r\n'.encode())
            assert (await idling.until(b"+ ")).startswith(b"+ idling")  # RFC 2177
            pop = await Peer.open(gw.listening["pop3"])
            await pop.send(f"USER {user}\r\nPASS {PASSWORD}\r\nDELE 1\r\n".encode())
            for _ in range(4):  # the greeting and three replies
                assert (await pop.line()).startswith(b"+OK")
            sigterm()
            assert await waiting.until(b"* BYE") == IMAP_GOODBYE
            assert await idling.until(b"* BYE") == IMAP_GOODBYE
            assert await pop.line() == POP3_GOODBYE
            for peer in (waiting, idling, pop):
                assert await peer.closed()

    run(scenario())
    # RFC 1939 §6: no QUIT, no UPDATE: the message marked deleted is still there ...
    assert inbox_uids(store, user) == [uid]
    # ... and the maildrop's lock was released.
    key = {name: {"S": value} for name, value in lock_key(user).items()}
    assert "Item" not in store.mailboxes.dynamodb.get_item(TableName=store.mailboxes.table, Key=key)
