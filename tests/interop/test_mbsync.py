"""mbsync (isync) syncs a seeded account to a local maildir and back over IMAPS: a flag
change and a deletion made locally arrive on the server (RFC 3501 with UIDPLUS, as
mbsync drives it: UID FETCH, UID STORE, EXPUNGE / UID EXPUNGE, APPEND with APPENDUID).

Needs the Debian package ``isync``; skipped when ``mbsync`` is not on PATH.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailcore.contracts import Append, ListMessages

from gateway.config import LISTENERS, GatewayConfig
from gateway.functions import FunctionClient, InProcessTransport
from gateway.imap.settings import ImapSettings
from gateway.server import Gateway

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (isync) is not installed"),
]
PASSWORD = "correct horse"


class Running:
    def __init__(self, gateway: Gateway, cert: Path) -> None:
        self.gateway = gateway
        self.cert = cert

    def address(self, listener: str) -> tuple[str, int]:
        return self.gateway.listening[listener]


@contextlib.contextmanager
def running_gateway(local_stack, tls_dir: Path, proxy_protocol: frozenset[str] = frozenset()) -> Iterator[Running]:
    """A gateway of the caller's own, every listener on a free port, in a thread;
    ``proxy_protocol``: the listeners that expect a PROXY protocol header."""
    config = GatewayConfig(ports={name: 0 for name in LISTENERS}, hostname="localhost",
                           mail_bucket=local_stack.resources["MailBucket"], proxy_protocol=proxy_protocol)
    functions = FunctionClient(InProcessTransport(local_stack.functions))
    gw = Gateway(config, functions, tls_dir=tls_dir)
    gw.services["imap"] = ImapSettings(auth_failure_delay=0.01, poll_interval=0.5)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(gw.start(), loop).result(timeout=30)
    yield Running(gw, tls_dir / "gateway-cert.pem")
    asyncio.run_coroutine_threadsafe(gw.stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def imap_server(local_stack, tmp_path_factory) -> Iterator[Running]:
    with running_gateway(local_stack, tmp_path_factory.mktemp("tls")) as server:
        yield server


def _append(transport: InProcessTransport, store, user: str, mailbox: str, raw: bytes, flags: list[str]) -> None:
    key = f"staging/mbsync-{secrets.token_hex(8)}"
    store.blobs.s3.put_object(Bucket=store.blobs.bucket, Key=key, Body=raw)
    assert transport.invoke("MailboxFunction", Append(user, mailbox, key, flags).to_event())["ok"]


def _message(n: int) -> bytes:
    return (f"From: sender@example.org\r\nTo: user@example.test\r\nSubject: mbsync {n}\r\n"
            f"Message-ID: <mbsync-{n}-{secrets.token_hex(4)}@example.org>\r\n\r\nBody {n}\r\n").encode()


def _config(path: Path, server: Running, user: str, maildir: Path) -> Path:
    host, port = server.address("imaps")
    config = path / "mbsyncrc"
    config.write_text(
        f"""IMAPAccount test
Host {host}
Port {port}
User {user}
Pass "{PASSWORD}"
SSLType IMAPS
CertificateFile {server.cert}

IMAPStore remote
Account test

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
"""
    )
    return config


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["mbsync", "-c", str(config), "-a"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _server_messages(transport: InProcessTransport, user: str, mailbox: str) -> list[dict]:
    result = transport.invoke("MailboxFunction", ListMessages(user, mailbox).to_event())
    assert result["ok"]
    return result["messages"]


def test_mbsync_round_trip(imap_server, local_stack, store, domain, tmp_path):
    transport = InProcessTransport(local_stack.functions)
    user = store.add_user(f"mbsync{secrets.token_hex(3)}@{domain}", PASSWORD)
    for n in range(4):
        _append(transport, store, user, "INBOX", _message(n), ["\\Seen"] if n == 0 else [])
    _append(transport, store, user, "Archive", _message(9), [])
    maildir = tmp_path / "Mail"
    maildir.mkdir()
    config = _config(tmp_path, imap_server, user, maildir)

    # WHEN mbsync pulls THEN the maildir holds every message, \Seen as the S flag
    _run(config)
    inbox = sorted((maildir / "INBOX").glob("*/*"))
    assert len(inbox) == 4
    assert sum(1 for p in inbox if p.name.endswith(",S")) == 1
    assert len(list((maildir / "Archive").glob("*/*"))) == 1
    assert (maildir / "Sent").is_dir() and (maildir / "Trash").is_dir()

    # WHEN a message is flagged and another deleted locally, and one is written locally
    by_subject = {p.read_bytes().split(b"Subject: ")[1].split(b"\n")[0].strip(): p for p in inbox}
    flagged = by_subject[b"mbsync 1"]
    flagged.rename(flagged.with_name(flagged.name.split(":2,")[0] + ":2,F"))
    by_subject[b"mbsync 2"].unlink()
    (maildir / "INBOX" / "new" / "local-1.eml:2,").write_bytes(_message(77))
    _run(config)

    # THEN the server has the flag, lost the deleted one, and got the local message
    messages = _server_messages(transport, user, "INBOX")
    assert len(messages) == 4
    flags = {m["uid"]: set(m["flags"]) for m in messages}
    assert "\\Flagged" in flags[2]
    assert 3 not in flags
    assert max(flags) == 5
    # and a second run changes nothing
    result = _run(config)
    assert len(_server_messages(transport, user, "INBOX")) == 4, result.stdout
